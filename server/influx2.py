"""The InfluxDB 2.x/3.x sink: line protocol to ``/api/v2/write`` through influxdb-client.

influxdb-client speaks the 2.x write API (token, org, bucket, gzip) that InfluxDB 2.x and 3.x
answer, and other servers too (VictoriaMetrics, InfluxDB 1.8+). Its synchronous write API is
used with its own retries off, so that `server.writer` owns batching and backoff for every
sink alike; the blocking call runs in a worker thread to keep the event loop free. The body
is the encoder's bytes, passed through unchanged. Errors map as in `server.influx1`: 400
refused lines (with InfluxDB's message), 413 too large, everything else retried, honouring
``Retry-After``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.write_api import SYNCHRONOUS, WriteApi
from urllib3.exceptions import HTTPError as Urllib3Error

from models.plant import InfluxConfig
from server.sink import Batch, SinkRefused, SinkRetry, SinkTooLarge, retry_after_s

__all__ = ["Influx2Sink", "bucket_of"]

log = logging.getLogger("cellwatch.server.influx2")
#: Nanosecond precision. influxdb_client annotates ``write_precision`` as WritePrecision, yet
#: the values it takes are that class's plain string constants ("ns").
_NS = cast(WritePrecision, WritePrecision.NS)


def bucket_of(cfg: InfluxConfig) -> str:
    """The bucket: configured, else ``database`` or ``database/retention_policy``.

    The second form is the 1.x mapping InfluxDB 2.x and 1.8+ understand.
    """
    if cfg.bucket:
        return cfg.bucket
    if cfg.retention_policy:
        return f"{cfg.database}/{cfg.retention_policy}"
    return cfg.database


class Influx2Sink:
    """Writes batches through ``/api/v2/write``; ``async with`` opens the client."""

    wants_lines = True

    def __init__(self, cfg: InfluxConfig) -> None:
        if cfg.url is None:
            raise ValueError("Influx2Sink needs influxdb.url to be set")
        self.cfg = cfg
        self.bucket = bucket_of(cfg)
        self.org = cfg.org or "-"
        self.name = f"influxdb2 {cfg.url} bucket={self.bucket}"
        self._client: InfluxDBClient | None = None
        self._api: WriteApi | None = None

    async def __aenter__(self) -> Influx2Sink:
        token = self.cfg.token.get_secret_value() if self.cfg.token is not None else ""
        self._client = InfluxDBClient(
            url=str(self.cfg.url),
            token=token,
            org=self.org,
            enable_gzip=self.cfg.gzip,
            timeout=int(self.cfg.timeout_s * 1000),
            retries=False,
        )
        self._api = self._client.write_api(write_options=SYNCHRONOUS)
        return self

    async def __aexit__(self, *exc: object) -> None:
        client, self._client, self._api = self._client, None, None
        if client is not None:
            await asyncio.to_thread(client.close)

    def _write(self, body: bytes) -> None:
        if self._api is None:
            raise SinkRetry("the InfluxDB 2.x sink is not open")
        self._api.write(bucket=self.bucket, org=self.org, record=body, write_precision=_NS)

    async def write(self, batch: Batch) -> None:
        try:
            await asyncio.to_thread(self._write, batch.body)
        except InfluxDBError as e:
            status = getattr(e, "status", None)
            if status is None and e.response is not None:
                status = getattr(e.response, "status", None)
            raw = e.message or status
            message = (raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)).strip()
            if status == 400:
                raise SinkRefused(message) from None
            if status == 413:
                raise SinkTooLarge(message) from None
            if status in (401, 403):
                log.error(
                    "InfluxDB refused the token (HTTP %s: %s); points are kept", status, message
                )
            raise SinkRetry(f"HTTP {status}: {message}", retry_after_s(e.retry_after)) from None
        except (Urllib3Error, OSError) as e:
            raise SinkRetry(f"{type(e).__name__}: {e}") from None
