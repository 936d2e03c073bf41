"""Line protocol from frames: escaping per the InfluxDB spec, pinned field types, skipped rows.

influxdb-client's ``Point.to_line_protocol()`` is the reference encoder: for names both can
write faithfully, every line must be byte for byte what it writes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from influxdb_client import Point, WritePrecision

from server import lineprotocol
from server.frame import Frame, concat
from server.lineprotocol import encode, encode_frame
from server.schema import MEASUREMENTS, FieldType, SchemaError


def lines(frame: Frame) -> list[str]:
    """Lines split on newlines only (``str.splitlines`` also splits on \\x1e and others)."""
    return encode_frame(frame).body.decode().split("\n")[:-1]


def one(measurement: str = "telemetry", tags=None, fields=None, ts: int = 7) -> list[str]:
    tags = {"line": "l1"} if tags is None else tags
    fields = {"value": 1.5} if fields is None else fields
    return lines(
        Frame.from_columns(
            measurement,
            {k: [v] for k, v in tags.items()},
            {k: np.asarray([v], dtype=object) for k, v in fields.items()},
            [ts],
        )
    )


def test_plain_point_sorts_tags_and_fields() -> None:
    got = one("spc", {"station": "coater", "line": "l1"}, {"mean": 20.5, "count": 3})
    assert got == ["spc,line=l1,station=coater count=3i,mean=20.5 7"]


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("lane 3", r"lane\ 3"),
        ("a,b", r"a\,b"),
        ("k=v", r"k\=v"),
        ('say "hi"', r'say\ "hi"'),
        (r"C:\dir", r"C:\dir"),  # InfluxDB 1.x reads a backslash before a plain char literally
        ("Grüße", "Grüße"),
    ],
)
def test_tag_values_escape_commas_equals_and_spaces(value: str, escaped: str) -> None:
    assert one(tags={"line": value}) == [f"telemetry,line={escaped} value=1.5 7"]


def test_string_fields_escape_quotes_and_backslashes_only() -> None:
    got = one("detection", {}, {"message": 'he said "a\\b", x=1'})
    assert got == ['detection message="he said \\"a\\\\b\\", x=1" 7']


def test_integers_get_i_floats_do_not_and_booleans_are_words() -> None:
    got = one("cell", {}, {"lane": 3, "fce": 3.0, "capacity_ah": 1e20, "good": True})
    assert got == ["cell capacity_ah=1e+20,fce=3,good=true,lane=3i 7"]


def test_schema_types_win_over_input_types() -> None:
    """An integer field given 3.0 writes 3i; a float field given 4 writes 4 (a float)."""
    assert one("spc", {}, {"count": 3.0, "mean": 4}) == ["spc count=3i,mean=4 7"]


def test_values_contrary_to_the_schema_reject_the_row_with_a_reason() -> None:
    f = Frame.from_columns(
        "spc",
        {"line": ["a", "b", "c", "d"]},
        {
            "count": np.array([1, 2.5, "x", None], dtype=object),
            "mean": np.array([1.0, 2.0, 3.0, "text"], dtype=object),
        },
        [1, 2, 3, 4],
    )
    enc = encode_frame(f)
    assert enc.body == b"spc,line=a count=1i,mean=1 1\n"
    assert (enc.lines, enc.rejected, enc.skipped) == (1, 3, 0)
    assert "field 'count' is integer, got float 2.5" in enc.reasons
    assert "field 'count' is integer, got str 'x'" in enc.reasons
    assert "field 'mean' is float, got str 'text'" in enc.reasons


def test_a_whole_column_of_the_wrong_type_is_rejected() -> None:
    f = Frame.from_columns("telemetry", {}, {"value": np.array([True, False])}, [1, 2])
    enc = encode_frame(f)
    assert (enc.lines, enc.rejected) == (0, 2)


def test_non_finite_and_absent_fields_are_left_out_and_empty_rows_skipped() -> None:
    f = Frame.from_columns(
        "spc",
        {},
        {
            "mean": [math.nan, 2.5, math.inf, None, math.nan],
            "count": np.array([None, None, None, 4, None], dtype=object),
        },
        [1, 2, 3, 4, 5],
    )
    enc = encode_frame(f)
    assert enc.body.decode().splitlines() == ["spc mean=2.5 2", "spc count=4i 4"]
    assert (enc.lines, enc.skipped, enc.rejected) == (2, 3, 0)


@pytest.mark.parametrize("text", ["two\nlines", "cr\rhere", "nul\0"])
def test_strings_that_would_break_a_line_skip_the_row(text: str) -> None:
    f = Frame.from_columns(
        "detection", {}, {"message": np.array([text, "ok"], dtype=object)}, [1, 2]
    )
    enc = encode_frame(f)
    assert enc.body == b'detection message="ok" 2\n'
    assert (enc.lines, enc.skipped) == (1, 1)


def test_empty_tag_values_are_left_out() -> None:
    assert one(tags={"line": "", "station": "x"}) == ["telemetry,station=x value=1.5 7"]


@pytest.mark.parametrize(
    "value",
    [
        "ends\\",  # the backslash would escape the separator that follows
        "a\\,b",  # backslash before an escaped character cannot round-trip
        "two\nlines",
        "nul\0",
    ],
)
def test_names_influx_cannot_read_back_skip_the_row(value: str) -> None:
    f = Frame.from_columns("telemetry", {"line": [value, "ok"]}, {"value": [1.0, 2.0]}, [1, 2])
    enc = encode_frame(f)
    assert enc.body == b"telemetry,line=ok value=2 2\n"
    assert (enc.lines, enc.skipped) == (1, 1)


def test_undeclared_names_are_a_schema_error() -> None:
    with pytest.raises(SchemaError, match="no measurement 'bogus'"):
        one("bogus")
    with pytest.raises(SchemaError, match="has no field 'colour'"):
        one(fields={"colour": 1.0})
    with pytest.raises(SchemaError, match="has no tag 'cell'"):
        one(tags={"cell": "C1"})


def test_timestamps_are_integer_nanoseconds_and_blocks_split_large_frames() -> None:
    n = 20_000
    f = Frame.from_columns(
        "telemetry",
        {"line": ["l1"] * n},
        {"value": np.arange(n, dtype=float)},
        1_700_000_000_123_456_789 + np.arange(n),
    )
    enc = encode_frame(f)
    assert len(enc.blocks) > 1 and sum(b.lines for b in enc.blocks) == n == enc.lines
    text = enc.body.decode().splitlines()
    assert text[0] == "telemetry,line=l1 value=0 1700000000123456789"
    assert text[-1] == f"telemetry,line=l1 value={n - 1} {1_700_000_000_123_456_789 + n - 1}"


def test_concat_merges_frames_per_measurement() -> None:
    a = Frame.from_columns("telemetry", {"line": ["l1"]}, {"value": [1.0]}, [1])
    b = Frame.from_columns("spc", {"line": ["l1"]}, {"count": [2]}, [2])
    c = Frame.from_columns("telemetry", {"line": ["l2"]}, {"value": [3.0]}, [3])
    merged = concat([a, b, c])
    assert [(f.measurement, len(f)) for f in merged] == [("telemetry", 2), ("spc", 1)]
    assert encode(merged).body.decode().splitlines() == [
        "telemetry,line=l1 value=1 1",
        "telemetry,line=l2 value=3 3",
        "spc,line=l1 count=2i 2",
    ]


# -- against influxdb-client's Point -------------------------------------------------------

# Names both encoders write faithfully: Point turns a newline into a literal "\n" and pads a
# trailing backslash with a space, both of which change the name InfluxDB stores.
_safe_char = st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\t\\\0")
names = st.text(_safe_char, min_size=1, max_size=12)
tag_values = st.text(_safe_char, min_size=0, max_size=12)


def _field_value(kind: FieldType) -> st.SearchStrategy[object]:
    if kind is FieldType.FLOAT:
        return st.floats(allow_nan=True, allow_infinity=True) | st.none()
    if kind is FieldType.INTEGER:
        return st.integers(-(2**63), 2**63 - 1) | st.none()
    if kind is FieldType.BOOLEAN:
        return st.booleans() | st.none()
    return st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0\n\r"))


@st.composite
def frames(draw: st.DrawFn) -> tuple[Frame, list[dict[str, object]]]:
    m = MEASUREMENTS[draw(st.sampled_from(sorted(MEASUREMENTS)))]
    tag_keys = draw(st.lists(st.sampled_from(m.tags), unique=True, max_size=len(m.tags)))
    n = draw(st.integers(1, 30))
    series = draw(
        st.lists(st.fixed_dictionaries({k: tag_values for k in tag_keys}), min_size=1, max_size=4)
    )
    index = draw(st.lists(st.integers(0, len(series) - 1), min_size=n, max_size=n))
    fields = {
        k: draw(st.lists(_field_value(t), min_size=n, max_size=n))
        for k, t in m.fields
        if draw(st.booleans())
    }
    ts = draw(st.lists(st.integers(-(2**62), 2**62), min_size=n, max_size=n))
    frame = Frame(
        m.name,
        tuple(tuple(sorted(s.items())) for s in series),
        np.asarray(index),
        tuple((k, np.asarray(v, dtype=object)) for k, v in fields.items()),
        np.asarray(ts, dtype=np.int64),
    )
    rows = [
        {"tags": series[index[i]], "fields": {k: v[i] for k, v in fields.items()}, "ts": ts[i]}
        for i in range(n)
    ]
    return frame, rows


def point_line(measurement: str, row: dict) -> str:
    p = Point(measurement)
    for k, v in row["tags"].items():
        p.tag(k, v)
    for k, v in row["fields"].items():
        p.field(k, v)
    return p.time(row["ts"], WritePrecision.NS).to_line_protocol()


@settings(max_examples=400, deadline=None)
@given(frames())
def test_every_line_is_what_point_writes(case: tuple[Frame, list[dict]]) -> None:
    frame, rows = case
    expected = [point_line(frame.measurement, r) for r in rows]
    assert lines(frame) == [e for e in expected if e]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=300))
def test_float_columns_match_point_in_bulk(values: list[float]) -> None:
    f = Frame.from_columns(
        "telemetry",
        {"line": ["l1"] * len(values)},
        {"value": np.asarray(values)},
        np.arange(len(values)),
    )
    expected = [
        point_line("telemetry", {"tags": {"line": "l1"}, "fields": {"value": v}, "ts": i})
        for i, v in enumerate(values)
    ]
    assert lines(f) == expected


# -- the narrow layout of single-float telemetry ---------------------------------------------

_T0 = 1_700_000_000_000_000_000


def _telemetry(values: np.ndarray, equipment: list[str], ts: np.ndarray) -> Frame:
    n = len(values)
    tags = {"equipment": [equipment[i % len(equipment)] for i in range(n)], "line": ["l1"] * n}
    return Frame.from_columns("telemetry", tags, {"value": values}, ts)


def _general_lines(frame: Frame, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    with monkeypatch.context() as m:
        m.setattr(lineprotocol, "_fits_fast", lambda *a: False)
        return lines(frame)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=200),
    st.lists(st.text(_safe_char, min_size=1, max_size=6), min_size=1, max_size=5),
    st.integers(10**18, 2**63 - 1 - 200),
)
def test_single_float_telemetry_matches_point(
    values: list[float], equipment: list[str], t0: int
) -> None:
    """One float field in every row and 19-digit timestamps: the narrow layout."""
    ts = t0 + np.arange(len(values))
    f = _telemetry(np.asarray(values), equipment, ts)
    typed = lineprotocol.coerce(f)
    field = lineprotocol._Field(b"value=", typed.columns[0], 24)
    assert lineprotocol._fits_fast([field], np.ones(len(f), dtype=bool), f.ts_ns)
    expected = [
        point_line(
            "telemetry",
            {
                "tags": {"equipment": equipment[i % len(equipment)], "line": "l1"},
                "fields": {"value": v},
                "ts": int(ts[i]),
            },
        )
        for i, v in enumerate(values)
    ]
    assert lines(f) == [e for e in expected if e]


@pytest.mark.parametrize(
    "values",
    [
        lambda rng, n: rng.normal(3.7, 0.05, n),  # full precision: few NULs, replace
        lambda rng, n: rng.choice([0.5, 20.0, 1 / 3, -7.25e-4, 123456.789], n),  # translate
        lambda rng, n: np.concatenate(
            [rng.normal(3.7, 0.05, n // 2), rng.normal(-20, 30, n - n // 2)]
        ),
    ],
)
def test_narrow_layout_blocks_match_the_general_layout(
    values, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(3)
    block = lineprotocol._BLOCK_ROWS
    n = 3 * block + 17  # several blocks and a short last one
    equipment = [f"cab{i}" for i in range(64)]  # prefixes of different lengths
    f = _telemetry(values(rng, n), equipment, _T0 + np.arange(n) * 1000)
    enc = encode_frame(f)
    assert [b.lines for b in enc.blocks] == [block, block, block, 17]
    assert all(b.body.count(b"\n") == b.lines and b.body.endswith(b"\n") for b in enc.blocks)
    assert enc.body.decode().split("\n")[:-1] == _general_lines(f, monkeypatch)


@pytest.mark.parametrize(
    ("values", "ts"),
    [
        ([1.5, np.nan], _T0),  # a row without a value
        ([1.5, 2.5], 10**17),  # 18-digit timestamps
    ],
)
def test_other_shapes_take_the_general_layout(
    values: list[float], ts: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = _telemetry(np.asarray(values), ["cab1"], ts + np.arange(len(values)))
    typed = lineprotocol.coerce(f)
    field = lineprotocol._Field(b"value=", typed.columns[0], 24)
    keep = typed.columns[0].present
    assert not lineprotocol._fits_fast([field], keep, f.ts_ns)
    assert lines(f) == _general_lines(f, monkeypatch)
    assert len(lines(f)) == int(np.isfinite(values).sum())
