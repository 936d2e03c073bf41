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
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic.dataclasses import dataclass

__all__ = [
    "BrokerConfig",
    "DetectorConfig",
    "EdgeConfig",
    "InfluxConfig",
    "ELEMENT_FIELD",
    "LineConfig",
    "MqttBroker",
    "MqttClientConfig",
    "MqttElements",
    "MqttPayload",
    "MqttSource",
    "MqttTls",
    "MultivariateConfig",
    "OpcUaNode",
    "OpcUaSecurity",
    "OpcUaSource",
    "OutboxConfig",
    "ParamConfig",
    "PlantConfig",
    "ServerConfig",
    "SiteConfig",
    "SourcesConfig",
    "SparkplugId",
    "SparkplugSource",
    "StationConfig",
    "cross_check",
    "is_identifier",
]

#: Identifiers that end up in MQTT topics and InfluxDB tags: no spaces, slashes or wildcards;
#: what an identifier of the plant file may be (ids, equipment, params): also what an
#: equipment name built from a template at run time must be, checked by `is_identifier`.
_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
Slug = Annotated[str, Field(pattern=_ID_PATTERN, max_length=64)]
_IDENTIFIER = re.compile(_ID_PATTERN)


def is_identifier(name: str) -> bool:
    """Whether ``name`` may name equipment (the plant file's identifiers, at most 64 long).

    Examples:
        >>> is_identifier("cab01-ch02"), is_identifier("cab 01"), is_identifier("x" * 65)
        (True, False, False)
    """
    return len(name) <= 64 and _IDENTIFIER.match(name) is not None


Port = Annotated[int, Field(ge=0, le=65535)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SiteConfig(_Model):
    """The site a plant file describes; its id is the first level of every topic."""

    id: Slug
    name: str = ""


class OutboxConfig(_Model):
    """Where envelopes wait until the broker acknowledges them (see `edge.outbox`).

    ``memory`` loses what waits when the agent stops; ``sqlite`` keeps it in ``path`` across
    restarts and ``kill -9``. When ``max_bytes`` (or ``edge.max_pending`` envelopes) is
    reached, ``drop`` decides which envelope goes; every drop is counted and logged. ``sync``
    ``full`` also survives a power cut, at an fsync per envelope.
    """

    kind: Literal["memory", "sqlite"] = "memory"
    path: str | None = Field(None, min_length=1)
    max_bytes: int = Field(256 * 2**20, ge=4096)
    drop: Literal["oldest", "newest"] = "oldest"
    sync: Literal["normal", "full"] = "normal"

    @model_validator(mode="after")
    def _path_for_sqlite(self) -> OutboxConfig:
        if self.kind == "sqlite" and self.path is None:
            raise _Located("path", "must name the outbox file when kind is sqlite", None)
        return self


class EdgeConfig(_Model):
    """The gateway: its id (for deduplication), framing window and status cadence."""

    id: Slug = "edge1"
    window_s: float = Field(1.0, gt=0, le=3600)
    status_interval_s: float = Field(10.0, gt=0)
    max_pending: int = Field(100_000, ge=1)
    outbox: OutboxConfig = OutboxConfig()
    metrics_host: str = "127.0.0.1"
    metrics_port: Port | None = None


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
    # 1: the 1.x /write endpoint; 2: /api/v2/write through influxdb-client (2.x, 3.x).
    version: Literal[1, 2] = 1
    token: SecretStr | None = None
    org: str | None = None
    bucket: str | None = None
    gzip: bool = False
    max_pending: int = Field(200_000, ge=1)
    series_path: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return None if v is None else _check_url(v, ("http", "https"))


class ServerConfig(_Model):
    """The central server's HTTP address, its SQLite alert store and how it subscribes.

    ``share_group`` subscribes to the edge topics as an MQTT 5 shared subscription
    (``$share/GROUP/...``), so that several servers of one group split the load; it needs
    ``mqtt5: true``.
    """

    host: str = "127.0.0.1"
    port: Port = 8080
    db_path: str = "cellwatch.sqlite"
    mqtt5: bool = False
    share_group: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$", max_length=64)

    @model_validator(mode="after")
    def _share_needs_v5(self) -> Self:
        if self.share_group is not None and not self.mqtt5:
            raise _Located(
                "share_group",
                "is an MQTT 5 shared subscription: set mqtt5: true",
                self.share_group,
            )
        return self


#: Rules of a Shewhart individuals chart, as named by `models.runrules.RunRules.RULES`.
RunRule = Literal[
    "we1",
    "we2",
    "we3",
    "we4",
    "nelson1",
    "nelson2",
    "nelson3",
    "nelson4",
    "nelson5",
    "nelson6",
    "nelson7",
    "nelson8",
]

#: The keys each detector kind takes besides ``kind``; any other key given is an error.
DETECTOR_KEYS: dict[str, tuple[str, ...]] = {
    "ewma": ("lam", "L", "limits", "baseline", "center", "sigma"),
    "cusum": ("k", "h", "head_start", "baseline", "center", "sigma"),
    "shewhart": ("L", "rules", "max_gap_s", "baseline", "center", "sigma"),
    "stuck": ("n", "tolerance"),
}


class DetectorConfig(_Model):
    """The chart run on every series of a parameter (Phase I from a baseline, or known).

    One flat model for every ``kind`` so that an error names the key as the file spells it;
    a key that belongs to another kind (``lam`` on a ``cusum``) is refused, not ignored.
    """

    kind: Literal["ewma", "cusum", "shewhart", "stuck"] = "ewma"
    lam: float = Field(0.2, gt=0, le=1, allow_inf_nan=False)
    L: float = Field(3.0, gt=0, allow_inf_nan=False)
    limits: Literal["exact", "asymptotic"] = "exact"
    k: float = Field(0.5, ge=0, allow_inf_nan=False)
    h: float = Field(5.0, gt=0, allow_inf_nan=False)
    head_start: float = Field(0.0, ge=0, allow_inf_nan=False)
    rules: tuple[RunRule, ...] = ()
    max_gap_s: float | None = Field(None, gt=0, allow_inf_nan=False)
    n: int = Field(10, ge=1)
    tolerance: float = Field(0.0, ge=0, allow_inf_nan=False)
    baseline: int = Field(30, ge=2)
    center: float | None = Field(None, allow_inf_nan=False)
    sigma: float | None = Field(None, gt=0, allow_inf_nan=False)

    @field_validator("rules", mode="before")
    @classmethod
    def _one_rule(cls, v: Any) -> Any:
        return (v,) if isinstance(v, str) else v

    @model_validator(mode="after")
    def _known_pair(self) -> DetectorConfig:
        allowed = DETECTOR_KEYS[self.kind]
        for name in type(self).model_fields:
            if name != "kind" and name in self.model_fields_set and name not in allowed:
                raise _Located(
                    name,
                    f"is not a key of a {self.kind} detector (its keys: {', '.join(allowed)})",
                    getattr(self, name),
                )
        if (self.center is None) != (self.sigma is None):
            raise ValueError("center and sigma must be given together or not at all")
        if self.head_start >= self.h:
            raise _Located("head_start", f"must be below h ({self.h})", self.head_start)
        if len(set(self.rules)) != len(self.rules):
            raise _Located("rules", "must name each rule once", list(self.rules))
        if self.max_gap_s is not None and not self.rules:
            raise _Located("max_gap_s", "applies to run rules only; give rules too", self.max_gap_s)
        return self

    @property
    def needs_baseline(self) -> bool:
        """True when Phase I must learn centre and sigma from the first samples."""
        return self.kind != "stuck" and self.center is None


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


class MultivariateConfig(_Model):
    """A station-level multivariate detector (Hotelling T2 or PCA T2/SPE) run on the gateway.

    ``model`` is the artifact written by ``cellwatch fit`` (its path without ``.npz``/``.json``);
    ``variables`` maps each of the artifact's variable names to ``equipment/param`` of this
    station (a name already in that form needs no entry). Samples of different series are put
    on one row when their times fall in the same ``align_s`` slot; a row with a missing or
    bad-quality variable is skipped and counted.
    """

    model: str
    variables: dict[str, str] = Field(default_factory=dict)
    align_s: float = Field(0.5, gt=0, le=3600, allow_inf_nan=False)
    top: int = Field(3, ge=1, le=20)

    @field_validator("variables")
    @classmethod
    def _series(cls, v: dict[str, str]) -> dict[str, str]:
        for name, series in v.items():
            equipment, _, param = series.partition("/")
            if not equipment or not param or "/" in param:
                raise ValueError(f"variables.{name} must be 'equipment/param', got {series!r}")
        return v


class StationConfig(_Model):
    """One machine of a line and the parameters it measures."""

    id: Slug
    name: str = ""
    params: list[ParamConfig] = Field(default_factory=list)
    detector: DetectorConfig | None = None
    multivariate: MultivariateConfig | None = None

    @field_validator("params")
    @classmethod
    def _unique(cls, v: list[ParamConfig]) -> list[ParamConfig]:
        return _unique_ids(v, "params")

    def detector_of(self, param: ParamConfig) -> DetectorConfig | None:
        """The param's own detector; the station's when the param gives none (``detector:
        null`` in a param opts it out of the station's)."""
        return param.detector if "detector" in param.model_fields_set else self.detector


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


@dataclass(frozen=True, slots=True, kw_only=True, config=ConfigDict(extra="forbid"))
class OpcUaNode:
    """One monitored item: an address (node id or browse path) and the series it feeds.

    ``sampling_interval_ms``, ``queue_size``, ``deadband`` and ``stale_after_s`` override the
    source's values for this node; left out, the source's apply.

    A node whose value is an array across equipment (a cycler's channels, a gauge's lanes)
    names ``elements`` instead of ``equipment``: element k (from 1) is a reading of the
    equipment the template gives for it (``{k}``, ``{k:02}`` pads to two digits), e.g.
    ``cab01-ch{k:02}``. One notification then carries many values, which is how a server keeps
    up with tens of thousands of values a second.

    A slotted dataclass rather than a model: a gateway's plant file can list 10,000 nodes, and
    a model instance with its own dict and set of given fields costs about 460 bytes more each
    (4-6 MB of the agent's peak at 10k tags).
    """

    node_id: str | None = None
    browse_path: str | None = None
    equipment: Slug | None = None
    elements: str | None = Field(None, min_length=1, max_length=64)
    param: Slug
    sampling_interval_ms: float | None = Field(None, ge=0)
    queue_size: int | None = Field(None, ge=1, le=100_000)
    deadband: float | None = Field(None, ge=0)
    stale_after_s: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_address(self) -> OpcUaNode:
        if (self.node_id is None) == (self.browse_path is None):
            raise ValueError("exactly one of node_id and browse_path must be given")
        if (self.equipment is None) == (self.elements is None):
            raise ValueError("exactly one of equipment and elements must be given")
        if self.elements is not None:
            if [m.group(1) for m in ELEMENT_FIELD.finditer(self.elements)] != ["k"]:
                raise _Located(
                    "elements",
                    "must hold {k} (or {k:02}) once and no other field",
                    self.elements,
                )
            try:
                names = {self.elements.format(k=k) for k in (1, 2)}
            except (ValueError, KeyError, IndexError) as e:
                raise _Located("elements", f"is not a valid template: {e}", self.elements) from None
            if len(names) != 2:
                raise _Located("elements", "must tell the elements apart", self.elements)
        return self


#: Security policies offered for OPC UA connections (spelt as in the OPC UA policy URIs).
OpcUaPolicy = Literal["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"]


class OpcUaSecurity(_Model):
    """Message security of an OPC UA connection and the files it needs.

    The client certificate and key are generated once, on the first secured connect, and kept
    at their paths; a server only has to trust them once. The server's certificate must be in
    ``trust_dir`` (or be issued by a CA there); an unknown one is refused and copied next to it
    into ``rejected/`` so that an operator can trust it by moving the file.
    """

    policy: OpcUaPolicy = "None"
    mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    certificate: str = Field("pki/own/cert.der", min_length=1)
    private_key: str = Field("pki/own/private/key.pem", min_length=1)
    trust_dir: str = Field("pki/trusted", min_length=1)
    application_uri: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _policy_and_mode(self) -> OpcUaSecurity:
        if (self.policy == "None") != (self.mode == "None"):
            allowed = (
                "must be None when policy is None"
                if self.policy == "None"
                else f"must be Sign or SignAndEncrypt with policy {self.policy}"
            )
            raise _Located("mode", allowed, self.mode)
        return self


class OpcUaSource(_Model):
    """One OPC UA server and the nodes subscribed on it, all of one station.

    The subscription, watchdog, backfill and security options are described with the keys in
    ``config/plant.example.yaml``; `edge.opcua_source` says how they act.
    """

    id: Slug
    endpoint: str
    namespace_uri: str | None = None
    line: Slug
    station: Slug
    publishing_interval_ms: float = Field(250.0, gt=0)
    timeout_s: float = Field(5.0, gt=0)
    nodes: list[OpcUaNode] = Field(min_length=1)
    sampling_interval_ms: float = Field(0.0, ge=0)
    queue_size: int = Field(1000, ge=1, le=100_000)
    deadband: float = Field(0.0, ge=0)
    keepalive_count: int = Field(10, ge=1, le=10_000)
    stale_after_s: float | None = Field(None, gt=0)
    batch_size: int = Field(1000, ge=1, le=100_000)
    retry_max_s: float = Field(2.0, gt=0, le=300)
    backfill: bool = True
    backfill_max_s: float = Field(3600.0, gt=0)
    clock_skew_warn_s: float = Field(2.0, gt=0)
    username: str | None = Field(None, min_length=1)
    password: SecretStr | None = None
    security: OpcUaSecurity = OpcUaSecurity()

    @field_validator("endpoint")
    @classmethod
    def _url(cls, v: str) -> str:
        return _check_url(v, ("opc.tcp",))

    @model_validator(mode="after")
    def _user_for_password(self) -> OpcUaSource:
        if self.password is not None and self.username is None:
            raise _Located("password", "needs a username beside it", self.password)
        return self


class MqttTls(_Model):
    """TLS of an ``mqtts://`` broker: which CAs to trust, and our certificate if it asks."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify_hostname: bool = True

    @model_validator(mode="after")
    def _key_needs_cert(self) -> MqttTls:
        if self.key_file is not None and self.cert_file is None:
            raise _Located("key_file", "needs cert_file (the key's certificate)", self.key_file)
        return self


class MqttBroker(_Model):
    """A broker a source subscribes on when it is not the plant's ``broker`` section."""

    url: str
    username: str | None = None
    password: SecretStr | None = None
    keepalive_s: int = Field(30, ge=5, le=3600)
    tls: MqttTls | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _check_url(v, ("mqtt", "mqtts"))

    @model_validator(mode="after")
    def _tls_needs_mqtts(self) -> MqttBroker:
        if self.tls is not None and urlsplit(self.url).scheme != "mqtts":
            raise _Located("tls", "needs an mqtts:// url (TLS is off on mqtt://)", "a tls section")
        return self


class MqttClientConfig(_Model):
    """How a source's MQTT client connects: broker, protocol version and session.

    A persistent session (the default) keeps the subscription and the QoS 1 and 2 messages
    published while the source is away on the broker, under a stable ``client_id``, and hands
    them over when it comes back (up to the broker's queue limit, e.g. Mosquitto's
    ``max_queued_messages``).

    ``receive_maximum`` (MQTT 5 only) is how many QoS 1 and 2 messages the broker may have in
    flight to this client before it waits for acknowledgements. Brokers default to a small
    window (Mosquitto: 20, its ``max_inflight_messages``); at thousands of messages a second
    that window, not the gateway, limits the rate, so a high-rate source raises it (1000).
    Under MQTT 3.1.1 only the broker's own setting applies.
    """

    broker: MqttBroker | None = None
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    client_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.:-]+$", max_length=128)
    persistent_session: bool = True
    session_expiry_s: int = Field(86_400, ge=0, le=4_294_967_295)
    receive_maximum: int | None = Field(None, ge=1, le=65_535)
    stale_after_s: float | None = Field(None, gt=0, allow_inf_nan=False)

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_number(cls, v: Any) -> Any:
        # YAML reads ``protocol: 5`` as a number; the version is the same either way.
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @model_validator(mode="after")
    def _receive_maximum_needs_v5(self) -> Self:
        if self.receive_maximum is not None and self.protocol != "5":
            raise _Located(
                "receive_maximum",
                "is an MQTT 5 setting: set protocol: 5 (under 3.1.1 the broker's "
                "max_inflight_messages applies)",
                self.receive_maximum,
            )
        return self


_TEMPLATE_FIELD = re.compile(r"\{(\d+)\}")
#: A placeholder of an element's equipment: ``{k}``, ``{k:02}``, ``{2}`` or ``{side}``.
ELEMENT_FIELD = re.compile(r"\{([^{}:]+)(?::([^{}]*))?\}")


class MqttElements(_Model):
    """An array across equipment rather than over time, e.g. the lane averages of a gauge scan.

    Element k (from 1) is a reading of ``param`` at the payload's timestamp, of the equipment
    ``equipment`` names: ``{k}`` is the element number (``{k:02}`` pads it to two digits),
    ``{1}``.. the topic's ``+`` levels, any other ``{name}`` a text or number field of the
    payload (``lane{k:02}_{side}`` gives ``lane03_A``).
    """

    param: Slug
    path: str
    equipment: str

    @field_validator("equipment")
    @classmethod
    def _fields(cls, v: str) -> str:
        if not ELEMENT_FIELD.search(v):
            raise ValueError("must contain {k} (or {k:02}) so that each element names its own")
        for name, spec in ELEMENT_FIELD.findall(v):
            if name == "k":
                try:
                    format(1, spec)
                except ValueError:
                    why = f"{{k:{spec}}} is not an integer format like {{k:02}}"
                    raise ValueError(why) from None
        return v


class MqttPayload(_Model):
    """How to read samples out of a JSON payload: timestamp path, value paths, element arrays.

    ``records`` names an array of sample objects, each read like a payload of its own.
    """

    timestamp: str = "ts"
    timestamp_unit: Literal["s", "ms"] = "s"
    values: dict[str, str] = Field(default_factory=dict)
    elements: list[MqttElements] = Field(default_factory=list)
    records: str | None = None

    @model_validator(mode="after")
    def _something(self) -> MqttPayload:
        if not self.values and not self.elements:
            raise _Located("values", "must name at least one parameter (or give elements)", {})
        if self.records is not None and self.elements:
            raise _Located(
                "elements",
                "cannot be read from records; give one or the other",
                [e.param for e in self.elements],
            )
        return self


class MqttSource(MqttClientConfig):
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
        for e in self.payload.elements:
            levels = [int(f) for f, _ in ELEMENT_FIELD.findall(e.equipment) if f.isdigit()]
            if any(not 1 <= i <= n for i in levels):
                where = f"elements[{self.payload.elements.index(e)}].equipment"
                raise _Located(
                    f"payload.{where}",
                    f"may use {{1}}..{{{n}}} for the topic's {n} '+' levels",
                    e.equipment,
                )
        return self

    def param_refs(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Every parameter this source feeds, with its key path below the source."""
        refs: list[tuple[tuple[str | int, ...], str]] = [
            (("payload", "values", p), p) for p in self.payload.values
        ]
        refs += [
            (("payload", "elements", i, "param"), e.param)
            for i, e in enumerate(self.payload.elements)
        ]
        return refs


SparkplugId = Annotated[str, Field(pattern=r"^[^/+#]+$", max_length=128)]


class SparkplugSource(MqttClientConfig):
    """A Sparkplug B group read as a host application: the births name the metrics that data
    messages carry by alias, and ``metrics`` maps metric names to parameters of one station."""

    id: Slug
    group: SparkplugId
    nodes: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    devices: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    qos: Literal[0, 1, 2] = 1
    line: Slug
    station: Slug
    equipment: str = "{device}"
    metrics: dict[str, Slug] = Field(min_length=1)
    rebirth_timeout_s: float = Field(10.0, gt=0, allow_inf_nan=False)
    # A host connects clean: the births it would need are QoS 0, never queued for it.
    persistent_session: bool = False

    @field_validator("equipment")
    @classmethod
    def _equipment(cls, v: str) -> str:
        bad = [f for f, _ in ELEMENT_FIELD.findall(v) if f not in ("node", "device")]
        if bad or not v:
            raise ValueError("may use {node} and {device} (the ids in the topic) and text")
        return v

    def param_refs(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Every parameter this source feeds, with its key path below the source."""
        return [(("metrics", name), p) for name, p in self.metrics.items()]


class SourcesConfig(_Model):
    """Every equipment source of the gateway."""

    opcua: list[OpcUaSource] = Field(default_factory=list)
    mqtt: list[MqttSource] = Field(default_factory=list)
    sparkplug: list[SparkplugSource] = Field(default_factory=list)


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
    groups.append(("sparkplug", cfg.sources.sparkplug))
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
                for loc, p in src.param_refs():
                    if p not in params:
                        out.append((base + loc, allowed, p))
    return out


def _names(items: Any) -> str:
    return ", ".join(sorted(items)) or "none declared"
