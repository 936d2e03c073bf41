"""Writer of line protocol to InfluxDB 1.x over its HTTP ``/write`` endpoint.

Ingest must never wait for InfluxDB, and an InfluxDB outage must not lose points, so the
writer buffers encoded lines and a background task sends them in batches of ``batch_size``,
at least every ``flush_interval_s``. A batch leaves the buffer only when InfluxDB has answered:
on a connection error or a 5xx it stays and is retried with exponential backoff (each failure
logged and counted); on a 400 InfluxDB has refused lines it will never accept (bad syntax, a
field type conflict), so its error text is logged, the refused lines are counted and the rest
of the batch counts as written (1.x writes the valid points of a partial write). The database
is created at start with ``CREATE DATABASE`` (a no-op when it exists) and again whenever a
write reports it missing. At exit the buffer gets one last, short attempt; what cannot be sent
then is logged with its size, not dropped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import deque
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

import httpx

from models.plant import InfluxConfig
from server.lineprotocol import Point, encode

__all__ = ["InfluxWriter"]

log = logging.getLogger("cellwatch.server.influx")

_DROPPED = re.compile(r"dropped=(\d+)")
_MAX_BACKOFF_S = 30.0
_EXIT_DEADLINE_S = 1.0


def _quote(identifier: str) -> str:
    """An InfluxQL double-quoted identifier."""
    return '"' + identifier.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _Retry(Exception):
    """The batch was not accepted for a reason that may pass; keep it and try again."""


class InfluxWriter:
    """Buffers points and writes them to InfluxDB 1.x; use as ``async with``.

    Counters: ``points_written`` (accepted by InfluxDB), ``write_errors`` (failed requests),
    ``rejected`` (lines InfluxDB refused), ``skipped`` (points with nothing writable, see
    `server.lineprotocol`) and ``pending`` (lines buffered now).
    """

    def __init__(self, cfg: InfluxConfig) -> None:
        if cfg.url is None:
            raise ValueError("InfluxWriter needs influxdb.url to be set")
        self.cfg = cfg
        self.points_written = 0
        self.write_errors = 0
        self.rejected = 0
        self.skipped = 0
        self._buffer: deque[str] = deque()
        self._client: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._send = asyncio.Lock()
        self._db_ready = False
        self._params: dict[str, str] = {"db": cfg.database, "precision": "ns"}
        if cfg.retention_policy:
            self._params["rp"] = cfg.retention_policy
        if cfg.username:
            self._params["u"] = cfg.username
        if cfg.password is not None:
            self._params["p"] = cfg.password.get_secret_value()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def counters(self) -> dict[str, Any]:
        return {
            "url": self.cfg.url, "database": self.cfg.database,
            "points_written": self.points_written, "write_errors": self.write_errors,
            "rejected": self.rejected, "skipped": self.skipped, "pending": self.pending,
        }

    async def __aenter__(self) -> InfluxWriter:
        self._client = httpx.AsyncClient(base_url=str(self.cfg.url), timeout=self.cfg.timeout_s)
        try:
            await self._create_database()
        except _Retry as e:
            log.warning("cannot create InfluxDB database %s yet (%s); will retry before "
                        "writing", self.cfg.database, e)
        self._task = asyncio.create_task(self._run(), name="cellwatch-influx-writer")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            if self._buffer:
                async with asyncio.timeout(_EXIT_DEADLINE_S):
                    await self.flush()
        except (TimeoutError, _Retry) as err:
            log.error("InfluxDB did not take the last %d points before exit: %s",
                      self.pending, err or "timed out")
        finally:
            if self._client is not None:
                await self._client.aclose()
                self._client = None

    def add(self, points: Iterable[Point]) -> None:
        """Queue points for writing (never blocks); wakes the writer when a batch is full."""
        enc = encode(points)
        if enc.skipped:
            self.skipped += enc.skipped
            log.debug("skipped %d points with nothing writable", enc.skipped)
        self.add_lines(enc.lines)

    def add_lines(self, lines: Sequence[str]) -> None:
        self._buffer.extend(lines)
        if len(self._buffer) >= self.cfg.batch_size:
            self._wake.set()

    async def flush(self) -> None:
        """Write everything buffered now; raises `_Retry`'s reason as an error if InfluxDB fails.

        The background task flushes by itself; this is for callers that must know the points
        are stored (tests, shutdown).
        """
        async with self._send:
            while self._buffer:
                n = min(len(self._buffer), self.cfg.batch_size)
                batch = [self._buffer[i] for i in range(n)]
                await self._write(batch)
                for _ in range(n):
                    self._buffer.popleft()

    async def _run(self) -> None:
        backoff = 0.0
        while True:
            if backoff:
                await asyncio.sleep(backoff)
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.cfg.flush_interval_s):
                        await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
                backoff = 0.0
            except _Retry as e:
                backoff = min(_MAX_BACKOFF_S, backoff * 2 if backoff else 0.5)
                log.warning("InfluxDB write failed (%s); %d points kept, retry in %.1f s",
                            e, self.pending, backoff)

    async def _create_database(self) -> None:
        if self._client is None:
            raise _Retry("writer is not started")
        q = f"CREATE DATABASE {_quote(self.cfg.database)}"
        params = {k: v for k, v in self._params.items() if k in ("u", "p")}
        try:
            r = await self._client.post("/query", params={**params, "q": q})
        except httpx.HTTPError as e:
            self.write_errors += 1
            raise _Retry(f"{type(e).__name__}: {e}") from None
        if r.status_code != 200:
            self.write_errors += 1
            raise _Retry(f"CREATE DATABASE answered {r.status_code}: {r.text.strip()}")
        self._db_ready = True
        log.info("InfluxDB database %s ready at %s", self.cfg.database, self.cfg.url)

    async def _write(self, batch: list[str]) -> None:
        """Send one batch; return when InfluxDB has answered for every line of it."""
        if self._client is None:
            raise _Retry("writer is not started")
        if not self._db_ready:
            await self._create_database()
        body = ("\n".join(batch) + "\n").encode()
        try:
            r = await self._client.post("/write", params=self._params, content=body)
        except httpx.HTTPError as e:
            self.write_errors += 1
            raise _Retry(f"{type(e).__name__}: {e}") from None
        if r.status_code == 204:
            self.points_written += len(batch)
            return
        text = r.text.strip()
        if r.status_code == 400:
            m = _DROPPED.search(text)
            dropped = min(len(batch), int(m.group(1))) if m else len(batch)
            self.rejected += dropped
            self.points_written += len(batch) - dropped
            log.error("InfluxDB refused %d of %d lines: %s", dropped, len(batch), text)
            return
        self.write_errors += 1
        if r.status_code == 404 and "database not found" in text:
            self._db_ready = False
        raise _Retry(f"HTTP {r.status_code}: {text}")
