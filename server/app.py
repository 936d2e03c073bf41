"""The central server as one object: store, ingest, series writer and HTTP API together.

`CentralServer` is an async context manager so its whole lifetime is one ``async with``: it
opens the SQLite store, starts the series writer (InfluxDB 1.x or 2.x when a URL is
configured, else the embedded SQLite series file), subscribes to the broker and serves the
API with uvicorn as a task on the same event loop (one thread owns all state). It binds the
listening socket itself before handing it to uvicorn, so port 0 works (``url`` names the
port actually bound) and a port already in use fails at once with a `ServerError` naming
host and port, instead of a uvicorn log line and ``sys.exit``. Start waits (briefly) for the
broker subscription, so what edges publish from then on is received. Exit stops the API,
then ingest, then flushes the writer and closes the store, within about a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

import uvicorn

from models.plant import PlantConfig
from server.alerts import AlertBook
from server.api import ApiState, create_app
from server.embedded import SeriesFile, series_path_for
from server.influx1 import Influx1Sink
from server.influx2 import Influx2Sink
from server.ingest import Ingest
from server.sink import Sink
from server.store import Store
from server.writer import SeriesWriter

__all__ = ["CentralServer", "ServerError", "make_sink"]

log = logging.getLogger("cellwatch.server.app")

_START_TIMEOUT_S = 5.0
_STOP_TIMEOUT_S = 1.5
_SUBSCRIBE_WAIT_S = 3.0


class ServerError(OSError):
    """The server cannot start; the message says why in one line."""


def _listen(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family = infos[0][0]
        sock = socket.create_server((host, port), family=family)
    except OSError as e:
        err = ServerError(f"cannot listen on {host}:{port}: {e.strerror or e}")
        err.errno = e.errno
        raise err from None
    sock.setblocking(False)
    return sock


async def _wait_started(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    """Poll uvicorn's ``started`` flag (it offers no event) until set, with a deadline."""
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not server.started:
        if task.done():
            exc = None if task.cancelled() else task.exception()
            raise ServerError(f"the HTTP server stopped while starting: {exc!r}")
        if time.monotonic() > deadline:
            raise ServerError(f"the HTTP server did not start within {_START_TIMEOUT_S} s")
        await asyncio.sleep(0.01)


def make_sink(cfg: PlantConfig) -> Sink:
    """The sink the configuration names: InfluxDB 1.x, 2.x, or the embedded series file."""
    influx = cfg.influxdb
    if influx.url is None:
        return SeriesFile(influx.series_path or series_path_for(cfg.server.db_path))
    if influx.version == 2:
        return Influx2Sink(influx)
    return Influx1Sink(influx)


class CentralServer:
    """Runs the central server for one plant configuration.

    ``client_id`` names the MQTT client (default: `server.ingest.default_client_id`, stable
    across restarts so the broker resumes the session); ``share_group`` and ``mqtt5`` are
    passed to `server.ingest.Ingest`, and default to the plant file's ``server`` section.
    """

    def __init__(
        self,
        cfg: PlantConfig,
        *,
        client_id: str | None = None,
        share_group: str | None = None,
        mqtt5: bool = False,
    ) -> None:
        self.cfg = cfg
        self._client_id = client_id
        self._share_group = share_group if share_group is not None else cfg.server.share_group
        self._mqtt5 = mqtt5 or cfg.server.mqtt5
        self._stack: AsyncExitStack | None = None
        self._uvicorn: uvicorn.Server | None = None
        self._serve: asyncio.Task[None] | None = None
        self._url: str | None = None
        self.store: Store | None = None
        self.alerts: AlertBook | None = None
        self.ingest: Ingest | None = None
        self.writer: SeriesWriter | None = None

    @property
    def url(self) -> str:
        """Base URL of the API, e.g. ``http://127.0.0.1:8080`` (with the port actually bound)."""
        if self._url is None:
            raise RuntimeError("the server is not running")
        return self._url

    def counters(self) -> dict[str, Any]:
        """Ingest and InfluxDB counters plus every alert (oldest first)."""
        if self.ingest is None or self.alerts is None:
            raise RuntimeError("the server is not running")
        out: dict[str, Any] = dict(self.ingest.counters())
        out["broker_connected"] = self.ingest.connected
        out["alerts"] = [
            {
                "id": a.id,
                "tag": str(a.key),
                "rule": a.rule,
                "status": a.status.value,
                "first_ts": a.first_ts,
                "last_ts": a.last_ts,
                "count": a.count,
                "message": a.message,
            }
            for a in reversed(self.alerts.select())
        ]
        w = self.writer
        out["series_sink"] = None if w is None else w.sink.name
        out["points_written"] = 0 if w is None else w.points_written
        out["write_errors"] = 0 if w is None else w.write_errors
        out["points_pending"] = 0 if w is None else w.pending
        out["points_refused"] = 0 if w is None else w.points_refused
        out["points_rejected"] = 0 if w is None else w.points_rejected
        return out

    async def wait_subscribed(self, timeout: float = 10.0) -> None:
        """Return once the broker subscription is in place (`TimeoutError` after ``timeout``)."""
        if self.ingest is None:
            raise RuntimeError("the server is not running")
        await self.ingest.wait_subscribed(timeout)

    async def __aenter__(self) -> CentralServer:
        cfg = self.cfg
        sock = _listen(cfg.server.host, cfg.server.port)
        stack = AsyncExitStack()
        try:
            stack.callback(sock.close)
            self.store = stack.enter_context(Store(cfg.server.db_path))
            self.alerts = AlertBook(self.store)
            influx = cfg.influxdb
            self.writer = await stack.enter_async_context(
                SeriesWriter(
                    make_sink(cfg),
                    batch_size=influx.batch_size,
                    flush_interval_s=influx.flush_interval_s,
                    max_pending=influx.max_pending,
                )
            )
            self.ingest = await stack.enter_async_context(
                Ingest(
                    cfg,
                    self.store,
                    self.alerts,
                    self.writer,
                    client_id=self._client_id,
                    share_group=self._share_group,
                    mqtt5=self._mqtt5,
                )
            )
            title = f"cellwatch · {cfg.site.name or cfg.site.id}"
            app = create_app(ApiState(self.alerts, self.ingest, self.writer, title))
            host, port = sock.getsockname()[:2]
            config = uvicorn.Config(
                app,
                host=host,
                port=port,
                log_level="warning",
                lifespan="off",
                log_config=None,
                access_log=False,
                timeout_graceful_shutdown=1,
            )
            server = self._uvicorn = uvicorn.Server(config)
            stack.push_async_callback(self._stop_api)
            task = self._serve = asyncio.create_task(
                server.serve(sockets=[sock]), name="cellwatch-api"
            )
            await _wait_started(server, task)
            try:
                # Envelopes published before our first subscription exists are not kept for
                # us, so a reachable broker is waited for; an unreachable one is not: paho
                # keeps trying and the API serves meanwhile.
                await self.ingest.wait_subscribed(_SUBSCRIBE_WAIT_S)
            except TimeoutError:
                log.warning(
                    "broker %s not reachable yet; serving the API and retrying", cfg.broker.url
                )
        except BaseException:
            await stack.aclose()
            self._clear()
            raise
        shown = f"[{host}]" if ":" in host else host
        self._url = f"http://{shown}:{port}"
        self._stack = stack
        log.info("cellwatch server for site %s at %s", cfg.site.id, self._url)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        stack, self._stack = self._stack, None
        try:
            if stack is not None:
                await stack.aclose()
        finally:
            self._clear()

    async def _stop_api(self) -> None:
        server, task = self._uvicorn, self._serve
        if server is None or task is None:
            return
        server.should_exit = True
        try:
            async with asyncio.timeout(_STOP_TIMEOUT_S):
                await asyncio.shield(task)
        except TimeoutError:
            server.force_exit = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            log.warning("the HTTP server did not stop within %.1f s; cancelled", _STOP_TIMEOUT_S)

    def _clear(self) -> None:
        self._url = None
        self._uvicorn = None
        self._serve = None
        self.store = None
        self.alerts = None
        self.ingest = None
        self.writer = None
