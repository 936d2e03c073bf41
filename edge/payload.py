"""Reading MQTT JSON payloads into samples, as a plant file's ``payload`` section describes.

A payload is a JSON object holding either one sample (a scalar timestamp and scalar values) or
a batch (a timestamp array and value arrays of the same length). Field paths use dots for
nesting. This module is pure: it returns the samples it could read and one reason per thing
it refused, so the source can count and log rejections. A broken element rejects only its own
sample; a broken timestamp array or a value array of the wrong length rejects what depends on
it, and nothing here ever raises on bad input.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from models.plant import MqttPayload

__all__ = ["Parsed", "PayloadReader", "Sample"]

_MISSING = object()


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of one parameter at one time (seconds since the Unix epoch)."""

    param: str
    ts: float
    value: float


@dataclass(frozen=True, slots=True)
class Parsed:
    """What one payload gave: the samples read and a reason for every rejection."""

    samples: tuple[Sample, ...]
    rejections: tuple[str, ...]


def _field(obj: dict[str, Any], path: str) -> Any:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def _number(x: Any) -> float | None:
    """A finite float, or None for anything else (bools, strings, null, NaN, inf)."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    try:
        f = float(x)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


class PayloadReader:
    """Turns payload bytes into `Sample`s following one `MqttPayload` description.

    Examples:
        >>> spec = MqttPayload(timestamp="ts", timestamp_unit="ms", values={"voltage": "m.v"})
        >>> r = PayloadReader(spec).read(b'{"ts": [1000, 2000], "m": {"v": [3.7, "x"]}}')
        >>> [(s.ts, s.value) for s in r.samples], r.rejections
        ([(1.0, 3.7)], ("voltage[1]: not a finite number: 'x'",))
    """

    def __init__(self, spec: MqttPayload) -> None:
        self.spec = spec
        self._scale = 1e-3 if spec.timestamp_unit == "ms" else 1.0

    def read(self, data: bytes) -> Parsed:
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, huge ints, deep nesting
            return Parsed((), (f"not JSON: {e}",))
        if not isinstance(obj, dict):
            return Parsed((), (f"payload must be a JSON object, got {type(obj).__name__}",))
        ts_path = self.spec.timestamp
        ts = _field(obj, ts_path)
        if ts is _MISSING:
            return Parsed((), (f"missing timestamp field {ts_path!r}",))
        if isinstance(ts, list):
            return self._batch(obj, ts)
        return self._single(obj, ts)

    def _single(self, obj: dict[str, Any], ts_raw: Any) -> Parsed:
        ts = _number(ts_raw)
        if ts is None:
            why = f"timestamp {self.spec.timestamp!r}: not a finite number: {ts_raw!r}"
            return Parsed((), (why,))
        ts *= self._scale
        samples: list[Sample] = []
        rejections: list[str] = []
        for param, path in self.spec.values.items():
            raw = _field(obj, path)
            if raw is _MISSING:
                rejections.append(f"{param}: missing field {path!r}")
                continue
            if isinstance(raw, list):
                rejections.append(f"{param}: field {path!r} is an array but the timestamp is not")
                continue
            v = _number(raw)
            if v is None:
                rejections.append(f"{param}: not a finite number: {raw!r}")
                continue
            samples.append(Sample(param, ts, v))
        return Parsed(tuple(samples), tuple(rejections))

    def _batch(self, obj: dict[str, Any], ts_raw: list[Any]) -> Parsed:
        n = len(ts_raw)
        times: list[float | None] = []
        rejections: list[str] = []
        for i, t in enumerate(ts_raw):
            f = _number(t)
            if f is None:
                rejections.append(f"timestamp[{i}]: not a finite number: {t!r}")
            times.append(None if f is None else f * self._scale)
        samples: list[Sample] = []
        for param, path in self.spec.values.items():
            raw = _field(obj, path)
            if raw is _MISSING:
                rejections.append(f"{param}: missing field {path!r}")
                continue
            if not isinstance(raw, list):
                rejections.append(f"{param}: field {path!r} is not an array but the timestamp is")
                continue
            if len(raw) != n:
                rejections.append(f"{param}: {len(raw)} values for {n} timestamps")
                continue
            for i, (t, x) in enumerate(zip(times, raw, strict=True)):
                if t is None:
                    continue  # already rejected with its timestamp
                v = _number(x)
                if v is None:
                    rejections.append(f"{param}[{i}]: not a finite number: {x!r}")
                    continue
                samples.append(Sample(param, t, v))
        return Parsed(tuple(samples), tuple(rejections))
