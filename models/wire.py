"""JSON wire format of envelopes and the MQTT topic namespace.

The only module that turns messages into bytes and back. Decoding is strict: anything that is
not a well-formed envelope of a known schema raises `WireError` with the reason, so a consumer
can count and log the rejection instead of crashing or silently dropping it. Non-finite floats
(NaN, inf) are written as ``null`` because JSON has no spelling for them.

Topics follow ISA-95: ``{prefix}/{site}/{area}/{line}/{station}/{kind}``, and status reports of
a gateway go to ``{prefix}/{site}/_edge/{edge_id}/status``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from models.messages import (
    SCHEMA_VERSION,
    Detection,
    EdgeStatus,
    Envelope,
    Kind,
    Payload,
    Quality,
    Reading,
    SeriesKey,
    SourceStatus,
    Stats,
)

__all__ = ["WireError", "decode", "encode", "status_topic", "topic"]


class WireError(ValueError):
    """A payload that is not a valid envelope; the message says why."""


def topic(prefix: str, site: str, area: str, line: str, station: str, kind: Kind) -> str:
    """MQTT topic of a station's messages of one kind.

    Examples:
        >>> topic("cellwatch/v1", "plant1", "electrode", "line1", "coater", Kind.DETECTION)
        'cellwatch/v1/plant1/electrode/line1/coater/detection'
    """
    return f"{prefix}/{site}/{area}/{line}/{station}/{kind.value}"


def status_topic(prefix: str, site: str, edge_id: str) -> str:
    """MQTT topic of a gateway's status reports."""
    return f"{prefix}/{site}/_edge/{edge_id}/status"


def _num(x: float | None) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return float(x)


def _key(k: SeriesKey) -> list[str]:
    return [k.line, k.station, k.equipment, k.param]


def _item(kind: Kind, item: Any) -> Any:
    if kind is Kind.TELEMETRY:
        r: Reading = item
        out = [_key(r.key), r.ts, _num(r.value), r.quality.value, r.received_ts]
        # Added later, written only when set, so most items keep their five elements.
        if r.backfilled:
            out += [r.server_ts, 1]
        elif r.server_ts is not None:
            out.append(r.server_ts)
        return out
    if kind is Kind.STATS:
        s: Stats = item
        return {
            "key": _key(s.key),
            "ts_start": s.ts_start,
            "ts_end": s.ts_end,
            "count": s.count,
            "mean": _num(s.mean),
            "min": _num(s.minimum),
            "max": _num(s.maximum),
            "bad": s.bad,
            "statistic": _num(s.statistic),
            "lcl": _num(s.lcl),
            "ucl": _num(s.ucl),
        }
    if kind is Kind.DETECTION:
        d: Detection = item
        return {
            "key": _key(d.key),
            "ts": d.ts,
            "rule": d.rule,
            "value": _num(d.value),
            "limit": _num(d.limit),
            "direction": d.direction,
            "center": _num(d.center),
            "sigma": _num(d.sigma),
            "message": d.message,
        }
    e: EdgeStatus = item
    return {
        "ts": e.ts,
        "uptime_s": e.uptime_s,
        "published": e.published,
        "pending": e.pending,
        "dropped": e.dropped,
        "detections": e.detections,
        "outbox_bytes": e.outbox_bytes,
        "lag_s": e.lag_s,
        "sources": [
            {
                "source": s.source,
                "state": s.state,
                "readings": s.readings,
                "rejected": s.rejected,
                "bad_quality": s.bad_quality,
                "last_error": s.last_error,
                "reconnects": s.reconnects,
                "stale": s.stale,
                "backfilled": s.backfilled,
                "rate_per_s": s.rate_per_s,
                "lag_s": s.lag_s,
                "clock_skew_s": s.clock_skew_s,
            }
            for s in e.sources
        ],
    }


def encode(env: Envelope) -> bytes:
    """Serialise an envelope to compact UTF-8 JSON.

    Examples:
        >>> k = SeriesKey("l1", "coater", "lane03_A", "areal_weight")
        >>> env = Envelope("gw1", 7, Kind.TELEMETRY, 1.0, (Reading(k, 1.0, 20.5),))
        >>> decode(encode(env)) == env
        True
    """
    body = {
        "schema": env.schema,
        "edge_id": env.edge_id,
        "seq": env.seq,
        "kind": env.kind.value,
        "sent_ts": env.sent_ts,
        "items": [_item(env.kind, i) for i in env.items],
    }
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


def _f(x: Any, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        raise WireError(f"{what} must be a finite number, got {x!r}")
    return float(x)


def _fn(x: Any, what: str) -> float:
    """A number, or null meaning not-a-number."""
    return math.nan if x is None else _f(x, what)


def _fo(x: Any, what: str) -> float | None:
    return None if x is None else _f(x, what)


def _s(x: Any, what: str) -> str:
    if not isinstance(x, str):
        raise WireError(f"{what} must be a string, got {x!r}")
    return x


def _i(x: Any, what: str) -> int:
    if isinstance(x, bool) or not isinstance(x, int):
        raise WireError(f"{what} must be an integer, got {x!r}")
    return int(x)


def _list(x: Any, what: str) -> list[Any]:
    if not isinstance(x, list):
        raise WireError(f"{what} must be a list, got {x!r}")
    return x


def _dkey(x: Any) -> SeriesKey:
    if not isinstance(x, list) or len(x) != 4 or not all(isinstance(p, str) for p in x):
        raise WireError(f"key must be [line, station, equipment, param] strings, got {x!r}")
    return SeriesKey(*x)


def _dreading(x: Any) -> Reading:
    if not isinstance(x, list) or not 5 <= len(x) <= 7:
        raise WireError(
            "a telemetry item must be a 5-element list [key, ts, value, quality, received_ts] "
            f"(6 or 7 with server_ts and backfilled), got {x!r}"
        )
    key, ts, value, quality, received, *more = x
    try:
        q = Quality(quality)
    except ValueError:
        raise WireError(f"quality must be good, uncertain or bad, got {quality!r}") from None
    server_ts = _fo(more[0], "server_ts") if more else None
    backfilled = False
    if len(more) == 2:
        if more[1] not in (0, 1) or isinstance(more[1], float):
            raise WireError(f"backfilled must be 0 or 1, got {more[1]!r}")
        backfilled = bool(more[1])
    return Reading(
        _dkey(key), _f(ts, "ts"), _fn(value, "value"), q, _fo(received, "received_ts"),
        server_ts, backfilled,
    )


def _obj(x: Any, what: str) -> dict[str, Any]:
    if not isinstance(x, dict):
        raise WireError(f"{what} must be an object, got {x!r}")
    return x


def _dstats(x: Any) -> Stats:
    o = _obj(x, "a stats item")
    try:
        return Stats(
            _dkey(o["key"]),
            _f(o["ts_start"], "ts_start"),
            _f(o["ts_end"], "ts_end"),
            _i(o["count"], "count"),
            _fn(o["mean"], "mean"),
            _fn(o["min"], "min"),
            _fn(o["max"], "max"),
            _i(o.get("bad", 0), "bad"),
            _fo(o.get("statistic"), "statistic"),
            _fo(o.get("lcl"), "lcl"),
            _fo(o.get("ucl"), "ucl"),
        )
    except KeyError as e:
        raise WireError(f"stats item lacks {e.args[0]!r}") from None


def _ddetection(x: Any) -> Detection:
    o = _obj(x, "a detection item")
    try:
        return Detection(
            _dkey(o["key"]),
            _f(o["ts"], "ts"),
            _s(o["rule"], "rule"),
            _fn(o["value"], "value"),
            _fn(o["limit"], "limit"),
            _i(o["direction"], "direction"),
            _fn(o["center"], "center"),
            _fn(o["sigma"], "sigma"),
            _s(o.get("message", ""), "message"),
        )
    except KeyError as e:
        raise WireError(f"detection item lacks {e.args[0]!r}") from None


def _dstatus(x: Any) -> EdgeStatus:
    o = _obj(x, "a status item")
    try:
        sources = tuple(
            SourceStatus(
                _s(s["source"], "source"),
                _s(s["state"], "state"),
                _i(s["readings"], "readings"),
                _i(s["rejected"], "rejected"),
                _i(s["bad_quality"], "bad_quality"),
                _s(s["last_error"], "last_error"),
                # Added later: an older edge's report simply lacks them.
                _i(s.get("reconnects", 0), "reconnects"),
                _i(s.get("stale", 0), "stale"),
                _i(s.get("backfilled", 0), "backfilled"),
                _f(s.get("rate_per_s", 0.0), "rate_per_s"),
                _fo(s.get("lag_s"), "lag_s"),
                _fo(s.get("clock_skew_s"), "clock_skew_s"),
            )
            for s in (_obj(s, "a source status") for s in _list(o["sources"], "sources"))
        )
        return EdgeStatus(
            _f(o["ts"], "ts"),
            _f(o["uptime_s"], "uptime_s"),
            sources,
            _i(o["published"], "published"),
            _i(o["pending"], "pending"),
            _i(o["dropped"], "dropped"),
            _i(o["detections"], "detections"),
            _i(o.get("outbox_bytes", 0), "outbox_bytes"),
            _fo(o.get("lag_s"), "lag_s"),
        )
    except KeyError as e:
        raise WireError(f"status item lacks {e.args[0]!r}") from None


_DECODERS: dict[Kind, Callable[[Any], Payload]] = {
    Kind.TELEMETRY: _dreading,
    Kind.STATS: _dstats,
    Kind.DETECTION: _ddetection,
    Kind.STATUS: _dstatus,
}


def _no_constant(name: str) -> Any:
    """NaN and Infinity are not JSON; ``encode`` writes them as null."""
    raise ValueError(f"{name} is not allowed")


def decode(data: bytes | str) -> Envelope:
    """Parse an envelope; raises `WireError` naming what is wrong."""
    try:
        body = json.loads(data, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, huge ints, deep nesting
        raise WireError(f"not JSON: {e}") from None
    o = _obj(body, "an envelope")
    schema = o.get("schema")
    if schema != SCHEMA_VERSION:
        raise WireError(f"schema must be {SCHEMA_VERSION}, got {schema!r}")
    try:
        kind = Kind(str(o.get("kind")))
    except ValueError:
        allowed = ", ".join(k.value for k in Kind)
        raise WireError(f"kind must be one of {allowed}, got {o.get('kind')!r}") from None
    items = o.get("items")
    if not isinstance(items, list):
        raise WireError(f"items must be a list, got {items!r}")
    return Envelope(
        edge_id=_s(o.get("edge_id"), "edge_id"),
        seq=_i(o.get("seq"), "seq"),
        kind=kind,
        sent_ts=_f(o.get("sent_ts"), "sent_ts"),
        items=tuple(_DECODERS[kind](i) for i in items),
        schema=SCHEMA_VERSION,
    )
