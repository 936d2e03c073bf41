"""Reading MQTT JSON payloads into samples, as a plant file's ``payload`` section describes.

A payload is a JSON object holding one of these shapes, the ones equipment actually sends:

* one sample: a scalar timestamp and scalar values, ``{"ts": 1.7e9, "v": 3.71}``;
* a batch: a timestamp array and value arrays of the same length, ``{"ts": [..], "v": [..]}``;
* records (``records: data``): an array of sample objects, ``{"data": [{"ts":..,"v":..}, ..]}``,
  each read as one of the shapes above;
* a scan across equipment (``elements``): one timestamp and arrays with one element per lane,
  channel or profile point, like the beta gauge's ``{"ts":.., "side":"A", "lane_aw":[..]}``;
  element k becomes a reading of the equipment its template names (``lane{k:02}_{side}``).

Field paths use dots for nesting. This module is pure: it returns the samples it could read and
one reason per thing it refused, so the source can count and log rejections. A broken element
rejects only its own sample; a broken timestamp array or a value array of the wrong length
rejects what depends on it, and nothing here ever raises on bad input.

`PayloadReader.read_columns` reads a clean batch (every timestamp and value a finite number,
every array as long as the timestamps) straight into numpy arrays, which is what lets a gateway
take hundreds of thousands of values a second; anything else goes the sample-by-sample way of
`PayloadReader.read`, which names each rejection.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from models.plant import ELEMENT_FIELD, MqttElements, MqttPayload, is_identifier

__all__ = ["Columns", "Parsed", "PayloadReader", "Sample"]

_MISSING = object()
#: JSON number types; bool is a subclass of int but not a number here.
_NUMBERS = frozenset({int, float})


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of one parameter at one time (seconds since the Unix epoch).

    ``equipment`` is set by element arrays; None means the equipment the topic names.
    """

    param: str
    ts: float
    value: float
    equipment: str | None = None


@dataclass(frozen=True, slots=True)
class Parsed:
    """What one payload gave: the samples read and a reason for every rejection."""

    samples: tuple[Sample, ...]
    rejections: tuple[str, ...]


@dataclass(frozen=True, slots=True, eq=False)
class Columns:
    """A clean batch read whole: ``values[p]`` are the samples of ``params[p]`` at ``ts``
    (seconds), shaped ``(len(params), len(ts))``."""

    ts: npt.NDArray[np.float64]
    params: tuple[str, ...]
    values: npt.NDArray[np.float64]


def _floats(x: Any) -> npt.NDArray[np.float64] | None:
    """``x`` as a float array when it is a non-empty list of finite JSON numbers, else None."""
    if not isinstance(x, list) or not x or not _NUMBERS.issuperset(map(type, x)):
        return None
    try:
        a = np.array(x, dtype=np.float64)
    except OverflowError:
        return None
    return a if np.isfinite(a).all() else None


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

    def read(self, data: bytes, levels: Sequence[str] = ()) -> Parsed:
        """The samples of one payload; ``levels`` are the topic's ``+`` levels, for element
        equipment templates that use ``{1}``.."""
        got = self._load(data)
        return got if isinstance(got, Parsed) else self._parse(got, levels)

    def read_columns(self, data: bytes, levels: Sequence[str] = ()) -> Columns | Parsed:
        """A clean batch payload as `Columns`; any other payload as `read` gives it.

        Examples:
            >>> spec = MqttPayload(timestamp="ts", values={"v": "v", "i": "i"})
            >>> data = b'{"ts": [1, 2], "v": [3.7, 3.8], "i": [1, 1]}'
            >>> c = PayloadReader(spec).read_columns(data)
            >>> c.params, c.values.tolist()
            (('v', 'i'), [[3.7, 3.8], [1.0, 1.0]])
        """
        got = self._load(data)
        if isinstance(got, Parsed):
            return got
        spec = self.spec
        if spec.records is None and not spec.elements:
            cols = self._columns(got)
            if cols is not None:
                return cols
        return self._parse(got, levels)

    def _load(self, data: bytes) -> dict[str, Any] | Parsed:
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, huge ints, deep nesting
            return Parsed((), (f"not JSON: {e}",))
        if not isinstance(obj, dict):
            return Parsed((), (f"payload must be a JSON object, got {type(obj).__name__}",))
        return obj

    def _parse(self, obj: dict[str, Any], levels: Sequence[str]) -> Parsed:
        if self.spec.records is not None:
            return self._records(obj, self.spec.records)
        return self._object(obj, levels)

    def _columns(self, obj: dict[str, Any]) -> Columns | None:
        """The batch in arrays, or None when anything in it needs the per-sample path."""
        ts = _floats(_field(obj, self.spec.timestamp))
        if ts is None:
            return None
        raw = [_field(obj, path) for path in self.spec.values.values()]
        n = ts.shape[0]
        for x in raw:
            if not isinstance(x, list) or len(x) != n or not _NUMBERS.issuperset(map(type, x)):
                return None
        try:
            values = np.array(raw, dtype=np.float64).reshape(len(raw), n)
        except OverflowError:
            return None
        if not np.isfinite(values).all():
            return None
        if self._scale != 1.0:
            ts = ts * self._scale
        return Columns(ts, tuple(self.spec.values), values)

    def _object(self, obj: dict[str, Any], levels: Sequence[str]) -> Parsed:
        ts_path = self.spec.timestamp
        ts = _field(obj, ts_path)
        if ts is _MISSING:
            return Parsed((), (f"missing timestamp field {ts_path!r}",))
        if isinstance(ts, list):
            parsed = self._batch(obj, ts)
            if self.spec.elements:
                why = f"elements need one timestamp, but {ts_path!r} is an array"
                return Parsed(parsed.samples, (*parsed.rejections, why))
            return parsed
        parsed = self._single(obj, ts)
        t = _number(ts)
        if not self.spec.elements or t is None:  # a bad timestamp is rejected by _single
            return parsed
        samples, rejections = list(parsed.samples), list(parsed.rejections)
        for e in self.spec.elements:
            self._elements(obj, e, t * self._scale, levels, samples, rejections)
        return Parsed(tuple(samples), tuple(rejections))

    def _records(self, obj: dict[str, Any], path: str) -> Parsed:
        records = _field(obj, path)
        if not isinstance(records, list):
            got = "missing" if records is _MISSING else f"a {type(records).__name__}"
            return Parsed((), (f"records {path!r} must be an array of objects, got {got}",))
        samples: list[Sample] = []
        rejections: list[str] = []
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                rejections.append(f"{path}[{i}]: not an object: {rec!r}"[:200])
                continue
            parsed = self._object(rec, ())
            samples.extend(parsed.samples)
            rejections.extend(f"{path}[{i}]: {r}" for r in parsed.rejections)
        return Parsed(tuple(samples), tuple(rejections))

    def _elements(
        self,
        obj: dict[str, Any],
        e: MqttElements,
        ts: float,
        levels: Sequence[str],
        samples: list[Sample],
        rejections: list[str],
    ) -> None:
        raw = _field(obj, e.path)
        if raw is _MISSING:
            rejections.append(f"{e.param}: missing field {e.path!r}")
            return
        if not isinstance(raw, list):
            rejections.append(f"{e.param}: field {e.path!r} must be an array of elements")
            return
        try:
            name = _element_template(e.equipment, obj, levels)
            name.format(k=1)
        except ValueError as exc:
            rejections.append(f"{e.param}: equipment {e.equipment!r}: {exc}")
            return
        for k, x in enumerate(raw, 1):
            v = _number(x)
            if v is None:
                rejections.append(f"{e.param}[{k - 1}]: not a finite number: {x!r}")
                continue
            equipment = name.format(k=k)
            if not is_identifier(equipment):
                rejections.append(f"{e.param}[{k - 1}]: equipment {equipment!r} is not an id")
                continue
            samples.append(Sample(e.param, ts, v, equipment))

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


def _element_template(template: str, obj: dict[str, Any], levels: Sequence[str]) -> str:
    """``template`` as a format string of ``k`` alone: the payload fields and topic levels are
    filled in once per payload. ValueError names a field that is missing or not text."""

    def escape(text: str) -> str:
        return text.replace("{", "{{").replace("}", "}}")

    out: list[str] = []
    pos = 0
    for m in ELEMENT_FIELD.finditer(template):
        out.append(escape(template[pos : m.start()]))
        pos = m.end()
        name, spec = m.group(1), m.group(2) or ""
        if name == "k":
            out.append(f"{{k:{spec}}}")
            continue
        if name.isdigit():
            i = int(name)
            if not 1 <= i <= len(levels):
                raise ValueError(f"the topic has no '+' level {i}")
            value: Any = levels[i - 1]
        else:
            value = _field(obj, name)
            if value is _MISSING:
                raise ValueError(f"missing field {name!r}")
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise ValueError(f"field {name!r} must be text or a number, got {value!r}")
        try:
            out.append(escape(format(value, spec)))
        except ValueError as exc:
            raise ValueError(f"{{{name}:{spec}}}: {exc}") from None
    out.append(escape(template[pos:]))
    return "".join(out)
