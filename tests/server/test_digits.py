"""Bulk number formatting: every double exactly as Python prints it, every int64 exactly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from server.digits import FLOAT_WIDTH, INT_WIDTH, digit_words, float_text, int_text


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


def test_the_digit_splitting_constants_are_exact() -> None:
    """`_swar8` divides 4-digit lanes by 100 and 2-digit lanes by 10 with multiply-shifts."""
    v = np.arange(10_000)
    assert ((v * 10486) >> 20 == v // 100).all()
    v = np.arange(100)
    assert ((v * 103) >> 10 == v // 10).all()


@pytest.mark.parametrize("p", range(-4, 15))
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_one_exponent_and_sign_per_column_prints_as_repr(p: int, sign: float) -> None:
    """A column whose values share exponent and sign is laid out in whole 8-byte words."""
    rng = np.random.default_rng(p + 100)
    lo = 10.0**p
    x = np.concatenate(
        [
            rng.uniform(lo, 10 * lo, 3000),
            np.round(rng.uniform(lo, 10 * lo, 1000), 3 - p),  # short decimals
            np.floor(rng.uniform(lo, 10 * lo, 500)),  # whole numbers where p >= 0
            [lo, np.nextafter(10 * lo, 0), 2 * lo, 5 * lo, 9.5 * lo],
        ]
    )
    x = sign * x[(x >= max(lo, 1e-4)) & (x < 10 * lo)]
    assert texts(float_text(x)) == [reference(v) for v in x]


def test_powers_of_two_print_as_repr() -> None:
    """Below a power of two the next lower double is half as far: the asymmetric case."""
    x = 2.0 ** np.arange(-14, 50)
    for column in (x, -x, x[x >= 1][:4], x[(x >= 16) & (x < 100)]):
        assert texts(float_text(column)) == [reference(v) for v in column]
        for v in column:
            assert texts(float_text(np.array([v]))) == [reference(v)]


@settings(max_examples=200)
@given(hnp.arrays(np.float64, st.integers(1, 100), elements=finite))
def test_texts_are_left_aligned_with_nul_only_after_them(x: np.ndarray) -> None:
    for row in float_text(x):
        text = bytes(row).rstrip(b"\0")
        assert text and b"\0" not in text


@settings(max_examples=200)
@given(hnp.arrays(np.int64, st.integers(1, 100), elements=st.integers(0, 2**63 - 1)))
def test_digit_words_keep_the_last_digits_with_leading_zeros(v: np.ndarray) -> None:
    for digits in (19, 24):
        got = [bytes(r)[:digits].decode() for r in digit_words(v, digits).view(np.uint8)]
        assert got == [str(int(i)).zfill(digits)[-digits:] for i in v]
    m = np.full((len(v), 30), 7, dtype=np.uint8)
    digit_words(v, 19, out=m[:, 3:27].view(np.uint64))
    assert [bytes(r[3:22]).decode() for r in m] == [str(int(i)).zfill(19)[-19:] for i in v]
    assert (m[:, :3] == 7).all() and (m[:, 27:] == 7).all()
