"""Writer of line protocol to InfluxDB 1.x over its HTTP ``/write`` endpoint.

Ingest must never wait for InfluxDB, and an InfluxDB outage must not lose points, so the
writer buffers encoded lines and a background task sends them in batches of ``batch_size``,
at least every ``flush_interval_s``. A batch leaves the buffer only when InfluxDB has answered:
on a connection error or a 5xx it stays and is retried with exponential backoff (each failure
logged and counted); on a 400 InfluxDB has refused lines it will never accept (bad syntax, a
field type conflict): those are isolated, counted and logged with InfluxDB's error text, and
the rest of the batch is written. The database
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

__all__ = ["InfluxWriteError", "InfluxWriter"]

log = logging.getLogger("cellwatch.server.influx")

_DROPPED = re.compile(r"dropped=(\d+)")
_EXIT_DEADLINE_S = 1.0


def _quote(identifier: str) -> str:
    """An InfluxQL double-quoted identifier."""
    return '"' + identifier.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _refused(error: str) -> int:
    """How many lines a 400 answer says it refused, when it says so.

    A partial write of InfluxDB 1.x lists unparsable lines ("unable to parse ...") or counts
    refused points in ``dropped=N``; any other 400 gives no count (0 here).
    """
    if "partial write" not in error:
        return 0
    m = _DROPPED.search(error)
    return (int(m.group(1)) if m else 0) + error.count("unable to parse")


class InfluxWriteError(Exception):
    """InfluxDB did not take a batch for a reason that may pass; the batch is kept for retry."""


class InfluxWriter:
    """Buffers points and writes them to InfluxDB 1.x; use as ``async with``.

    Failed writes are retried after ``retry_min_s``, doubling up to ``retry_max_s``.
    Counters: ``points_written`` (accepted by InfluxDB), ``write_errors`` (failed requests),
    ``rejected`` (lines InfluxDB refused), ``skipped`` (points with nothing writable, see
    `server.lineprotocol`) and ``pending`` (lines buffered now).
    """

    def __init__(
        self, cfg: InfluxConfig, *, retry_min_s: float = 0.5, retry_max_s: float = 30.0
    ) -> None:
        if cfg.url is None:
            raise ValueError("InfluxWriter needs influxdb.url to be set")
        self.cfg = cfg
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
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
        except InfluxWriteError as e:
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
        except (TimeoutError, InfluxWriteError) as err:
            log.error("InfluxDB did not take the last %d points before exit: %s",
                      self.pending, str(err) or "timed out")
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
        """Write everything buffered now; raises `InfluxWriteError` (points kept) on failure.

        The background task flushes by itself; this is for callers that must know the points
        are stored (tests, shutdown).
        """
        async with self._send:
            while self._buffer:
                await self._write(min(len(self._buffer), self.cfg.batch_size))

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
            except Exception as e:
                # InfluxWriteError is the expected case; anything else is a fault of ours, logged
                # with its traceback, and the writer keeps going rather than dying silently.
                backoff = min(self.retry_max_s, backoff * 2 if backoff else self.retry_min_s)
                log.warning("InfluxDB write failed (%s); %d points kept, retry in %.1f s",
                            e, self.pending, backoff,
                            exc_info=not isinstance(e, InfluxWriteError))

    async def _create_database(self) -> None:
        if self._client is None:
            raise InfluxWriteError("writer is not started")
        q = f"CREATE DATABASE {_quote(self.cfg.database)}"
        params = {k: v for k, v in self._params.items() if k in ("u", "p")}
        try:
            r = await self._client.post("/query", params={**params, "q": q})
        except httpx.HTTPError as e:
            self.write_errors += 1
            raise InfluxWriteError(f"{type(e).__name__}: {e}") from None
        if r.status_code != 200:
            self.write_errors += 1
            raise InfluxWriteError(f"CREATE DATABASE answered {r.status_code}: {r.text.strip()}")
        self._db_ready = True
        log.info("InfluxDB database %s ready at %s", self.cfg.database, self.cfg.url)

    async def _write(self, n: int) -> None:
        """Send the first ``n`` buffered lines; each leaves the buffer once InfluxDB answered.

        A 400 that names every line as refused settles the batch. Otherwise the refused lines
        are not identifiable from the answer (InfluxDB 1.x reports one kind of error per
        request), so the batch is split in halves and each is sent again until every refused
        line is isolated; rewriting a point InfluxDB already took is harmless, as a point with
        the same series and time replaces the old one.
        """
        if self._client is None:
            raise InfluxWriteError("writer is not started")
        if not self._db_ready:
            await self._create_database()
        batch = [self._buffer[i] for i in range(n)]
        body = ("\n".join(batch) + "\n").encode()
        try:
            r = await self._client.post("/write", params=self._params, content=body)
        except httpx.HTTPError as e:
            self.write_errors += 1
            raise InfluxWriteError(f"{type(e).__name__}: {e}") from None
        text = r.text.strip()
        if r.status_code == 204 or (r.status_code == 400 and (n == 1 or _refused(text) >= n)):
            refused = 0 if r.status_code == 204 else n
            for _ in range(n):
                self._buffer.popleft()
            self.points_written += n - refused
            self.rejected += refused
            if refused:
                log.error("InfluxDB refused %d lines: %s; first: %.200s", refused, text, batch[0])
            return
        if r.status_code == 400:
            await self._write(n // 2)
            await self._write(n - n // 2)
            return
        self.write_errors += 1
        if r.status_code == 404 and "database not found" in text:
            self._db_ready = False
        raise InfluxWriteError(f"HTTP {r.status_code}: {text}")
