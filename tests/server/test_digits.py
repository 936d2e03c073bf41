"""Bulk number formatting: every double exactly as Python prints it, every int64 exactly."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from server.digits import FLOAT_WIDTH, INT_WIDTH, float_text, int_text


def texts(matrix: np.ndarray) -> list[str]:
    return [bytes(row).replace(b"\0", b"").decode() for row in matrix]


def reference(x: float) -> str:
    """Python's repr without influxdb-client's trimmed trailing ``.0``."""
    s = repr(float(x))
    return s[:-2] if s.endswith(".0") else s


finite = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=300)
@given(hnp.arrays(np.float64, st.integers(1, 200), elements=finite))
def test_any_finite_double_prints_as_repr(x: np.ndarray) -> None:
    assert texts(float_text(x)) == [reference(v) for v in x]


@settings(max_examples=200)
@given(
    st.lists(
        st.integers(-(10**15), 10**15).map(lambda i: i / 10 ** (abs(i) % 7)),
        min_size=1,
        max_size=100,
    )
)
def test_short_decimals_keep_their_short_form(values: list[float]) -> None:
    x = np.asarray(values)
    assert texts(float_text(x)) == [reference(v) for v in values]


def test_edges_of_the_exact_range_and_rounding_cases() -> None:
    x = np.array(
        [
            1e-4,
            np.nextafter(1e-4, 0),
            1e15,
            np.nextafter(1e15, 0),
            9.999999999999998,
            0.30000000000000004,
            5e-324,
            2.0**52,
            2.0**-10,
            0.0,
            -0.0,
            1.7976931348623157e308,
            123456789012345.6,
            0.1,
            1 / 3,
            2 / 3,
            100.0,
            -2.5,
        ]
    )
    assert texts(float_text(x)) == [reference(v) for v in x]


def test_random_noise_a_million_values_match() -> None:
    """Sensor-like values need 16-17 digits, the path the benchmark measures."""
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.normal(20.0, 0.1, 50_000), rng.normal(0.0, 1e-3, 50_000)])
    got = texts(float_text(x))
    assert got == [reference(v) for v in x]


def test_widths_hold_the_longest_texts() -> None:
    worst = np.array([-2.2250738585072014e-308, -9.223372036854775e18])
    assert max(len(t) for t in texts(float_text(worst))) <= FLOAT_WIDTH
    assert len(texts(int_text(np.array([-(2**63)])))[0]) == INT_WIDTH


@settings(max_examples=200)
@given(hnp.arrays(np.int64, st.integers(1, 200)))
def test_any_int64_prints_as_str(v: np.ndarray) -> None:
    assert texts(int_text(v)) == [str(int(i)) for i in v]


def test_writes_into_a_column_slice_of_a_larger_matrix() -> None:
    m = np.full((3, 60), ord("x"), dtype=np.uint8)
    float_text(np.array([1.5, -2.0, 0.25]), out=m[:, 5 : 5 + FLOAT_WIDTH])
    int_text(np.array([7, -8, 9]), out=m[:, 30 : 30 + INT_WIDTH])
    rows = [bytes(r).replace(b"\0", b"").decode() for r in m]
    assert rows[0] == "x" * 5 + "1.5" + "x" * 1 + "7" + "x" * 10
    assert rows[1] == "x" * 5 + "-2" + "x" * 1 + "-8" + "x" * 10
