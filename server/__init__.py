"""The central cellwatch server: ingest from the broker, alerts, InfluxDB, HTTP API, dashboard.

Start it with `CentralServer` (an async context manager over a `models.plant.PlantConfig`);
the modules below it are usable on their own and each holds one part: `store` (SQLite),
`alerts` (the alert lifecycle), `lineprotocol` and `schema` (what InfluxDB receives), `influx`
(the writer), `ingest` (the MQTT subscriber) and `api` (HTTP and the dashboard).
"""

from server.app import CentralServer, ServerError

__all__ = ["CentralServer", "ServerError"]
