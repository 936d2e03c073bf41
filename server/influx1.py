"""The InfluxDB 1.x sink: line protocol to ``/write`` with database and retention policy.

One POST per batch through httpx, with HTTP basic authentication (so the password is not in
a URL that a proxy might log), optionally gzip-compressed, timestamps in nanoseconds. The
answer becomes what `server.writer` acts on: 204 stored; 400 refused lines (InfluxDB stores
the valid lines of the request and names one error); 413 too large; 429, 5xx, timeouts and
connection errors retry, with ``Retry-After`` when the server sends one; 401/403 retry too
(credentials can be fixed while the points wait) but are logged as errors.

``CREATE DATABASE`` is tried once at start and again when a write answers "database not
found", but it is never a precondition: a user without the right gets 401/403 for it, which
is logged as a note, and writes go ahead (the database may exist already, made by an admin).
"""

from __future__ import annotations

import gzip
import logging

import httpx

from models.plant import InfluxConfig
from server.sink import Batch, SinkRefused, SinkRetry, SinkTooLarge, retry_after_s

__all__ = ["Influx1Sink"]

log = logging.getLogger("cellwatch.server.influx1")


def _quote(identifier: str) -> str:
    """An InfluxQL double-quoted identifier."""
    return '"' + identifier.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Influx1Sink:
    """Writes batches to InfluxDB 1.x; ``async with`` opens the HTTP client."""

    wants_lines = True

    def __init__(self, cfg: InfluxConfig) -> None:
        if cfg.url is None:
            raise ValueError("Influx1Sink needs influxdb.url to be set")
        self.cfg = cfg
        self.name = f"influxdb1 {cfg.url} db={cfg.database}"
        self._params = {"db": cfg.database, "precision": "ns"}
        if cfg.retention_policy:
            self._params["rp"] = cfg.retention_policy
        self._auth: tuple[str, str] | None = None
        if cfg.username:
            pw = cfg.password.get_secret_value() if cfg.password is not None else ""
            self._auth = (cfg.username, pw)
        self._headers = {"Content-Type": "text/plain; charset=utf-8"}
        if cfg.gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._client: httpx.AsyncClient | None = None
        self._create_tried = False

    async def __aenter__(self) -> Influx1Sink:
        self._client = httpx.AsyncClient(
            base_url=str(self.cfg.url), timeout=self.cfg.timeout_s, auth=self._auth
        )
        await self.create_database()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def create_database(self) -> bool:
        """Try ``CREATE DATABASE`` (a no-op when it exists); True when it worked.

        Failing is not an error: the writes say whether the database is there.
        """
        self._create_tried = True
        if self._client is None:
            return False
        q = f"CREATE DATABASE {_quote(self.cfg.database)}"
        try:
            r = await self._client.post("/query", params={"q": q})
        except httpx.HTTPError as e:
            log.info(
                "InfluxDB at %s not reachable to create database %s yet (%s); writes will retry",
                self.cfg.url,
                self.cfg.database,
                type(e).__name__,
            )
            return False
        if r.status_code in (401, 403):
            log.info(
                "InfluxDB user %r may not create database %s (HTTP %d); writing to it as it is",
                self.cfg.username,
                self.cfg.database,
                r.status_code,
            )
            return False
        if r.status_code != 200 or '"error"' in r.text:
            log.info(
                "CREATE DATABASE %s answered %d: %s",
                self.cfg.database,
                r.status_code,
                r.text.strip()[:200],
            )
            return False
        log.info("InfluxDB database %s ready at %s", self.cfg.database, self.cfg.url)
        return True

    async def write(self, batch: Batch) -> None:
        if self._client is None:
            raise SinkRetry("the InfluxDB 1.x sink is not open")
        body = gzip.compress(batch.body, compresslevel=1) if self.cfg.gzip else batch.body
        try:
            r = await self._client.post(
                "/write", params=self._params, content=body, headers=self._headers
            )
        except httpx.HTTPError as e:
            raise SinkRetry(f"{type(e).__name__}: {e}") from None
        if r.status_code == 204:
            return
        text = r.text.strip()
        if r.status_code == 400:
            raise SinkRefused(text)
        if r.status_code == 413:
            raise SinkTooLarge(text or "request entity too large")
        if r.status_code == 404 and "database not found" in text:
            if await self.create_database():
                raise SinkRetry(f"database {self.cfg.database} was missing; created it", 0.0)
            raise SinkRetry(f"HTTP 404: {text}")
        if r.status_code in (401, 403):
            log.error(
                "InfluxDB refused the credentials (HTTP %d: %s); points are kept",
                r.status_code,
                text,
            )
        after = retry_after_s(r.headers.get("Retry-After"))
        raise SinkRetry(f"HTTP {r.status_code}: {text}", after)
