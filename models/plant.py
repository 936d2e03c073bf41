"""The plant configuration schema: site, lines, stations, parameters, sources, broker, storage.

One pydantic v2 model tree validates a whole plant file. Unknown keys are rejected
(``extra="forbid"``) because a misspelt option that is silently ignored is worse than one that
stops the start. References between sections (a source naming a station or parameter) are
checked by `cross_check`, which reports every dangling reference with its key path. The YAML
front end with line numbers is `models.configfile`.

A parameter (``areal_weight``) belongs to a station; the equipment instances measuring it
(``lane03_A``) come from the sources, so one parameter entry covers all lanes or channels.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

__all__ = [
    "BrokerConfig",
    "DetectorConfig",
    "EdgeConfig",
    "InfluxConfig",
    "LineConfig",
    "MqttPayload",
    "MqttSource",
    "OpcUaNode",
    "OpcUaSource",
    "ParamConfig",
    "PlantConfig",
    "ServerConfig",
    "SiteConfig",
    "SourcesConfig",
    "StationConfig",
    "cross_check",
]

#: Identifiers that end up in MQTT topics and InfluxDB tags: no spaces, slashes or wildcards.
Slug = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]
Port = Annotated[int, Field(ge=0, le=65535)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SiteConfig(_Model):
    """The site a plant file describes; its id is the first level of every topic."""

    id: Slug
    name: str = ""


class EdgeConfig(_Model):
    """The gateway: its id (for deduplication), framing window and status cadence."""

    id: Slug = "edge1"
    window_s: float = Field(1.0, gt=0, le=3600)
    status_interval_s: float = Field(10.0, gt=0)
    max_pending: int = Field(100_000, ge=1)


def _check_url(v: str, schemes: tuple[str, ...]) -> str:
    parts = urlsplit(v)
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(f"must be a URL like {schemes[0]}://HOST:PORT")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ValueError(
            f"must be a URL like {schemes[0]}://HOST:PORT with a numeric port"
        ) from None
    return v


class BrokerConfig(_Model):
    """The MQTT broker gateways publish to and the server subscribes to."""

    url: str = "mqtt://127.0.0.1:1883"
    topic_prefix: str = "cellwatch/v1"
    username: str | None = None
    password: SecretStr | None = None
    keepalive_s: int = Field(30, ge=5, le=3600)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _check_url(v, ("mqtt",))


class InfluxConfig(_Model):
    """Where the server writes series; without a URL nothing goes to InfluxDB."""

    url: str | None = None
    database: str = "cellwatch"
    retention_policy: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    batch_size: int = Field(5000, ge=1)
    flush_interval_s: float = Field(1.0, gt=0)
    timeout_s: float = Field(10.0, gt=0)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return None if v is None else _check_url(v, ("http", "https"))


class ServerConfig(_Model):
    """The central server's HTTP address and its SQLite alert store."""

    host: str = "127.0.0.1"
    port: Port = 8080
    db_path: str = "cellwatch.sqlite"


class DetectorConfig(_Model):
    """The drift chart run on every series of a parameter (Phase I from a baseline, or known)."""

    kind: Literal["ewma"] = "ewma"
    lam: float = Field(0.2, gt=0, le=1)
    L: float = Field(3.0, gt=0)
    limits: Literal["exact", "asymptotic"] = "exact"
    baseline: int = Field(30, ge=2)
    center: float | None = None
    sigma: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _known_pair(self) -> DetectorConfig:
        if (self.center is None) != (self.sigma is None):
            raise ValueError("center and sigma must be given together or not at all")
        return self


class ParamConfig(_Model):
    """One measured parameter of a station, shared by every equipment instance measuring it."""

    id: Slug
    unit: str = ""
    target: float | None = None
    lsl: float | None = None
    usl: float | None = None
    detector: DetectorConfig | None = None

    @model_validator(mode="after")
    def _limits(self) -> ParamConfig:
        if self.lsl is not None and self.usl is not None and not self.lsl < self.usl:
            raise _Located("lsl", f"must be a number below usl ({self.usl})", self.lsl)
        if self.target is not None:
            if self.lsl is not None and self.target < self.lsl:
                raise _Located("target", f"must be at least lsl ({self.lsl})", self.target)
            if self.usl is not None and self.target > self.usl:
                raise _Located("target", f"must be at most usl ({self.usl})", self.target)
        return self


class StationConfig(_Model):
    """One machine of a line and the parameters it measures."""

    id: Slug
    name: str = ""
    params: list[ParamConfig] = Field(default_factory=list)

    @field_validator("params")
    @classmethod
    def _unique(cls, v: list[ParamConfig]) -> list[ParamConfig]:
        return _unique_ids(v, "params")


class LineConfig(_Model):
    """One production line; its area is the ISA-95 topic level above it."""

    id: Slug
    area: Slug
    name: str = ""
    stations: list[StationConfig] = Field(default_factory=list)

    @field_validator("stations")
    @classmethod
    def _unique(cls, v: list[StationConfig]) -> list[StationConfig]:
        return _unique_ids(v, "stations")


class OpcUaNode(_Model):
    """One monitored item: an address (node id or browse path) and the series it feeds."""

    node_id: str | None = None
    browse_path: str | None = None
    equipment: Slug
    param: Slug

    @model_validator(mode="after")
    def _one_address(self) -> OpcUaNode:
        if (self.node_id is None) == (self.browse_path is None):
            raise ValueError("exactly one of node_id and browse_path must be given")
        return self


class OpcUaSource(_Model):
    """One OPC UA server and the nodes subscribed on it, all of one station."""

    id: Slug
    endpoint: str
    namespace_uri: str | None = None
    line: Slug
    station: Slug
    publishing_interval_ms: float = Field(250.0, gt=0)
    timeout_s: float = Field(5.0, gt=0)
    nodes: list[OpcUaNode] = Field(min_length=1)

    @field_validator("endpoint")
    @classmethod
    def _url(cls, v: str) -> str:
        return _check_url(v, ("opc.tcp",))


class MqttPayload(_Model):
    """How to read samples out of a JSON payload: timestamp path and value paths."""

    timestamp: str = "ts"
    timestamp_unit: Literal["s", "ms"] = "s"
    values: dict[str, str] = Field(min_length=1)


_TEMPLATE_FIELD = re.compile(r"\{(\d+)\}")


class MqttSource(_Model):
    """One MQTT topic filter whose payloads are readings of one station."""

    id: Slug
    topic: str
    qos: Literal[0, 1, 2] = 1
    line: Slug
    station: Slug
    equipment: str
    payload: MqttPayload

    @field_validator("topic")
    @classmethod
    def _topic(cls, v: str) -> str:
        levels = v.split("/")
        if not v or any(("+" in lv and lv != "+") or "#" in lv for lv in levels):
            raise ValueError("must be an MQTT topic filter whose wildcards are whole '+' levels")
        return v

    @model_validator(mode="after")
    def _template(self) -> MqttSource:
        n = self.topic.split("/").count("+")
        used = [int(m) for m in _TEMPLATE_FIELD.findall(self.equipment)]
        bad = [i for i in used if not 1 <= i <= n]
        if bad:
            raise _Located(
                "equipment",
                f"may use {{1}}..{{{n}}} for the topic's {n} '+' levels",
                self.equipment,
            )
        return self


class SourcesConfig(_Model):
    """Every equipment source of the gateway."""

    opcua: list[OpcUaSource] = Field(default_factory=list)
    mqtt: list[MqttSource] = Field(default_factory=list)


class PlantConfig(_Model):
    """A whole plant file, validated; `cross_check` adds the checks across sections."""

    site: SiteConfig
    edge: EdgeConfig = EdgeConfig()
    broker: BrokerConfig = BrokerConfig()
    influxdb: InfluxConfig = InfluxConfig()
    server: ServerConfig = ServerConfig()
    lines: list[LineConfig] = Field(min_length=1)
    sources: SourcesConfig = SourcesConfig()

    @field_validator("lines")
    @classmethod
    def _unique(cls, v: list[LineConfig]) -> list[LineConfig]:
        return _unique_ids(v, "lines")

    def line(self, line_id: str) -> LineConfig:
        return next(ln for ln in self.lines if ln.id == line_id)

    def station(self, line_id: str, station_id: str) -> StationConfig:
        return next(s for s in self.line(line_id).stations if s.id == station_id)

    def param(self, line_id: str, station_id: str, param_id: str) -> ParamConfig | None:
        """The parameter entry, or None when the station does not declare it."""
        st = self.station(line_id, station_id)
        return next((p for p in st.params if p.id == param_id), None)


class _Located(ValueError):
    """A model-level error that belongs to one field; `configfile` moves it onto that field."""

    def __init__(self, field: str, message: str, given: Any) -> None:
        super().__init__(f"@{field}@{message}@{given!r}")


def _unique_ids(items: list[Any], what: str) -> list[Any]:
    seen: set[str] = set()
    for it in items:
        if it.id in seen:
            raise ValueError(f"ids must be unique within {what}; {it.id!r} appears twice")
        seen.add(it.id)
    return items


def cross_check(cfg: PlantConfig) -> list[tuple[tuple[str | int, ...], str, Any]]:
    """Every reference from a source to a line, station or parameter that does not exist.

    Returns ``(key path, what is allowed, what was given)`` triples, empty when all resolve.
    """
    out: list[tuple[tuple[str | int, ...], str, Any]] = []
    lines = {ln.id: ln for ln in cfg.lines}
    groups: list[tuple[str, list[Any]]] = [("opcua", cfg.sources.opcua), ("mqtt", cfg.sources.mqtt)]
    ids: set[str] = set()
    for kind, sources in groups:
        for i, src in enumerate(sources):
            base: tuple[str | int, ...] = ("sources", kind, i)
            if src.id in ids:
                out.append((base + ("id",), "must be unique among sources", src.id))
            ids.add(src.id)
            line = lines.get(src.line)
            if line is None:
                out.append(
                    (base + ("line",), f"must be one of the lines ({_names(lines)})", src.line)
                )
                continue
            stations = {s.id: s for s in line.stations}
            st = stations.get(src.station)
            if st is None:
                allowed = f"must be one of the stations of line {line.id} ({_names(stations)})"
                out.append((base + ("station",), allowed, src.station))
                continue
            params = {p.id for p in st.params}
            allowed = f"must be one of the params of station {line.id}/{st.id} ({_names(params)})"
            if kind == "opcua":
                for j, node in enumerate(src.nodes):
                    if node.param not in params:
                        out.append((base + ("nodes", j, "param"), allowed, node.param))
            else:
                for p in src.payload.values:
                    if p not in params:
                        out.append((base + ("payload", "values", p), allowed, p))
    return out


def _names(items: Any) -> str:
    return ", ".join(sorted(items)) or "none declared"
