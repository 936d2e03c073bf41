"""Line protocol encoding: escaping per the InfluxDB spec, field types, omitted values."""

from __future__ import annotations

import math

import pytest

from server.lineprotocol import Encoded, Point, encode, encode_point


def line(measurement: str = "m", tags=(), fields=(("v", 1.0),), ts: int = 7) -> str | None:
    return encode_point(Point(measurement, tuple(tags), tuple(fields), ts))


def test_plain_point() -> None:
    assert line("telemetry", [("param", "x"), ("line", "l1")], [("value", 20.5)]) == (
        "telemetry,line=l1,param=x value=20.5 7"
    )


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("lane 3", r"lane\ 3"),
        ("a,b", r"a\,b"),
        ("k=v", r"k\=v"),
        ('say "hi"', r'say\ "hi"'),
        (r"C:\dir", r"C:\dir"),  # InfluxDB 1.x reads a backslash before a plain char literally
    ],
)
def test_tag_values_escape_commas_equals_and_spaces(value: str, escaped: str) -> None:
    assert line(tags=[("t", value)]) == f"m,t={escaped} v=1.0 7"


def test_tag_keys_and_field_keys_escape_too() -> None:
    assert line(tags=[("my tag", "x")], fields=[("a=b,c d", 1.0)]) == (
        r"m,my\ tag=x a\=b\,c\ d=1.0 7"
    )


def test_measurement_escapes_commas_and_spaces_but_not_equals() -> None:
    assert line("my meas,x=y") == r"my\ meas\,x=y v=1.0 7"


def test_string_fields_escape_quotes_and_backslashes_only() -> None:
    got = line(fields=[("msg", 'he said "a\\b", x=1')])
    assert got == 'm msg="he said \\"a\\\\b\\", x=1" 7'


def test_integers_get_i_and_floats_do_not() -> None:
    got = line(fields=[("n", 3), ("x", 3.0), ("neg", -2), ("big", 1e20), ("ok", True)])
    assert got == "m n=3i,x=3.0,neg=-2i,big=1e+20,ok=true 7"


def test_non_finite_and_none_fields_are_omitted() -> None:
    got = line(fields=[("a", math.nan), ("b", 2.5), ("c", math.inf), ("d", None)])
    assert got == "m b=2.5 7"


def test_point_without_fields_is_skipped_and_counted() -> None:
    ok = Point("m", (), (("v", 1.0),), 1)
    nan = Point("m", (), (("v", math.nan),), 2)
    nothing = Point("m", (), (), 3)
    assert encode([nan, ok, nothing]) == Encoded(("m v=1.0 1",), 2)


def test_empty_tag_values_are_left_out() -> None:
    assert line(tags=[("a", ""), ("b", "x")]) == "m,b=x v=1.0 7"


def test_tags_are_sorted_by_key() -> None:
    assert line(tags=[("z", "1"), ("a", "2")]) == "m,a=2,z=1 v=1.0 7"


@pytest.mark.parametrize(
    "tags",
    [
        [("t", "ends\\")],  # the backslash would escape the separator that follows
        [("t", "a\\,b")],  # backslash before an escaped character cannot round-trip
        [("t", "two\nlines")],
        [("bad\\", "x")],
    ],
)
def test_names_influx_cannot_read_back_skip_the_point(tags) -> None:
    assert line(tags=tags) is None
    assert encode([Point("m", tuple(tags), (("v", 1.0),), 1)]).skipped == 1


def test_comment_like_measurement_is_skipped() -> None:
    assert line("#m") is None


def test_timestamps_are_integer_nanoseconds() -> None:
    assert line(ts=1_700_000_000_123_456_789).endswith(" 1700000000123456789")
