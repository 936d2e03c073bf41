"""The central cellwatch server: ingest from the broker, alerts, series storage, HTTP API.

Start it with `CentralServer` (an async context manager over a `models.plant.PlantConfig`);
the modules below it are usable on their own and each holds one part: `store` (SQLite alerts
and deduplication memory), `alerts` (the alert lifecycle), `schema` and `frame` (what the
series are), `coerce`, `digits` and `lineprotocol` (how they become InfluxDB line protocol),
`writer` (batching and retries in front of a `sink`: `influx1`, `influx2` or the embedded
SQLite file `embedded`), `ingest` (the MQTT subscriber), `reports` (yield, energy and alert
queries) and `api` (HTTP and the dashboard).
"""

from server.app import CentralServer, ServerError

__all__ = ["CentralServer", "ServerError"]
