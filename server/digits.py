"""Decimal text of whole numpy arrays: integers, and floats exactly as Python prints them.

The line-protocol encoder must turn millions of numbers a second into text. Formatting one
number at a time (``str``, ``numpy.astype(str)``) costs 0.3 to 0.6 us each, which alone is
slower than the whole encoder is meant to be, so this module formats whole arrays with integer
arithmetic on uint64 and lays the characters out as a matrix of bytes, one row per number,
padded with NUL bytes that the encoder deletes when it joins the rows into a body.

Floats come out as Python's ``repr`` would print them (the shortest text that reads back to
the same double), with ``influxdb-client``'s trailing ``.0`` removed (``20`` for ``20.0``;
line protocol reads a number without ``i`` as a float). For ``1e-4 <= |x| < 1e15`` the digits
are found exactly: the double is ``m * 2**e`` with an integer ``m``, so ``x * 10**k`` is the
integer ``m * 5**k`` (up to 100 bits, kept in two uint64 words) shifted right by ``-(e + k)``
bits; the bits shifted out give the exact remainder, which decides the rounding and whether
15, 16 or 17 digits read back to ``x``. Zero is written directly, and the few numbers outside
that range (scientific notation in Python's ``repr``) go through ``repr`` one by one.
"""

from __future__ import annotations

import numpy as np

__all__ = ["FLOAT_WIDTH", "INT_WIDTH", "float_text", "int_text"]

#: Columns of `int_text`: 19 digits of the largest int64 and a sign.
INT_WIDTH = 20
#: Columns of `float_text`: the longest ``repr`` of a double, ``-2.2250738585072014e-308``.
FLOAT_WIDTH = 24

_U = np.uint64
_DIGITS4 = np.array([list(f"{i:04d}".encode()) for i in range(10_000)], dtype=np.uint8)
_DIGITS4_U32 = _DIGITS4.view(np.uint32).reshape(-1)  # four ASCII digits per element
#: Trailing zeros of each 4-digit group (4 for 0000).
_TZ4 = np.array([4] + [len(str(i)) - len(str(i).rstrip("0")) for i in range(1, 10_000)])
_P10 = np.array([10**i for i in range(20)], dtype=_U)
_P5 = np.array([5**i for i in range(28)], dtype=_U)
_F10 = np.array([10.0**i for i in range(-5, 17)])  # 1e-5 .. 1e16, exact decimal boundaries
_MASK32 = _U(0xFFFF_FFFF)
_COLS17 = np.arange(17)
_COLS20 = np.arange(20)
_ZERO, _DOT, _MINUS = ord("0"), ord("."), ord("-")
_FAST_MIN, _FAST_MAX = 1e-4, 1e15


def _chunks(u: np.ndarray) -> np.ndarray:
    """(n, 5) the 20 decimal digits of uint64 values as 4-digit groups, most significant first."""
    chunks = np.empty((u.size, 5), dtype=np.intp)
    rest = u
    for j in range(4, 0, -1):
        q = rest // _U(10_000)
        chunks[:, j] = rest - q * _U(10_000)
        rest = q
    chunks[:, 0] = rest
    return chunks


def _digits20(u: np.ndarray) -> np.ndarray:
    """(n, 20) ASCII digits of uint64 values, zero-padded on the left."""
    return _DIGITS4_U32[_chunks(u)].view(np.uint8)


def int_text(values: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(n, `INT_WIDTH`) uint8: decimal text right-aligned, NUL-padded, ``-`` for negatives.

    ``out``, when given, is written in place (it may be a column slice of a larger matrix).

    Examples:
        >>> m = int_text(np.array([0, -42, 1700000000000000000]))
        >>> [bytes(r).replace(b"\\0", b"").decode() for r in m]
        ['0', '-42', '1700000000000000000']
    """
    v = np.asarray(values, dtype=np.int64)
    u = v.view(_U)
    neg = v < 0
    if neg.any():  # |v| as uint64, including -2**63, whose absolute value does not fit int64
        u = np.where(neg, ~u + _U(1), u)
    d = _digits20(u)
    first = INT_WIDTH - 1 - np.searchsorted(_P10[1:], u, side="right")  # first digit's column
    if out is None:
        out = np.empty((v.size, INT_WIDTH), dtype=np.uint8)
    np.multiply(d, _COLS20 >= first[:, None], out=out, casting="unsafe")
    rows = np.flatnonzero(neg)
    if rows.size:
        out[rows, first[rows] - 1] = _MINUS
    return out


def _mul_shift(m: np.ndarray, f: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``m * f`` (53 x 47 bits) divided by ``2**s`` (1 <= s <= 56): quotient and remainder.

    The product needs up to 100 bits, so it is formed in two uint64 words from 32-bit halves.
    """
    m0, m1 = m & _MASK32, m >> _U(32)
    f0, f1 = f & _MASK32, f >> _U(32)
    mid = m0 * f1 + m1 * f0
    low = m0 * f0
    lo = low + ((mid & _MASK32) << _U(32))
    carry = (lo < low).astype(_U)
    hi = m1 * f1 + (mid >> _U(32)) + carry
    q = (hi << (_U(64) - s)) | (lo >> s)
    r = lo & ((_U(1) << s) - _U(1))
    return q, r


def _fast_digits(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shortest round-trip digits of positive doubles in [1e-4, 1e15).

    Returns ``(chunks, ndigits, exp10, ok)``: the digits scaled to 17 as five 4-digit chunks
    (of 20 digits, the first three zero), the number of significant digits, the decimal
    exponent of the first digit, and False where no exact answer was found (those rows go
    through ``repr``).

    With ``x = m * 2**e`` and ``k = 16 - exp10``, ``x * 10**k = (q * 2**s + r) / 2**s`` exactly,
    where ``s = -(e + k)``. Rounding that to ``p`` digits (17, 16, 15) divides by ``10**(17-p)``;
    the decimal ``D`` reads back to ``x`` when ``|x - D * 10**-k'|`` is below half a unit in the
    last place of ``x``, which scaled by ``10**k * 2**s`` is ``5**k / 2`` (``5**k / 4`` below a
    power of two, where the gap to the next lower double is half as wide).
    """
    mant, ex = np.frexp(a)
    m = (mant * 9007199254740992.0).astype(_U)  # mantissa as a 53-bit integer (times 2**53)
    e = ex.astype(np.int64) - 53
    pow2 = m == _U(1 << 52)
    exp10 = np.searchsorted(_F10, a, side="right").astype(np.int64) - 6
    k = 16 - exp10
    f = _P5[k]
    s = (-(e + k)).astype(_U)
    q, r = _mul_shift(m, f, s)
    unit = _U(1) << s
    best = np.zeros(a.size, dtype=_U)
    found = np.zeros(a.size, dtype=bool)
    for p in (15, 16, 17):
        div = _U(10 ** (17 - p))
        d = q // div
        num = (q - d * div) * unit + r  # fraction of D below x, in units of 2**-s
        span = div * unit
        half = span >> _U(1)
        up = (num > half) | ((num == half) & ((d & _U(1)) == _U(1)))
        d = d + up
        off = np.where(up, span - num, num)
        ok = np.where(pow2 & ~up, off * _U(4) < f, off * _U(2) < f)
        ok &= (d >= _U(10 ** (p - 1))) & (d < _U(10**p)) & ~found
        best = np.where(ok, d * div, best)
        found |= ok
    chunks = _chunks(best)
    tz = _TZ4[chunks[:, 4]]
    for j in (3, 2, 1):
        tz = tz + np.where(tz == 4 * (4 - j), _TZ4[chunks[:, j]], 0)
    return chunks, 17 - tz, exp10, found


def float_text(values: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(n, `FLOAT_WIDTH`) uint8: Python's ``repr`` of each double, without a trailing ``.0``.

    Left-aligned and NUL-padded. Non-finite values give ``nan``/``inf`` text; callers leave
    them out (line protocol has no spelling for them). ``out``, when given, is written in
    place (it may be a column slice of a larger matrix).

    Examples:
        >>> m = float_text(np.array([20.5, -3.0, 0.1 + 0.2, 1e-05, 1e16, 0.0]))
        >>> [bytes(r).replace(b"\\0", b"").decode() for r in m]
        ['20.5', '-3', '0.30000000000000004', '1e-05', '1e+16', '0']
    """
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    if out is None:
        out = np.empty((n, FLOAT_WIDTH), dtype=np.uint8)
    out[...] = 0
    a = np.abs(x)
    neg = np.signbit(x)
    fast = (a >= _FAST_MIN) & (a < _FAST_MAX)
    rows = np.flatnonzero(fast)
    slow = ~fast & (a != 0.0)
    zero = np.flatnonzero(a == 0.0)
    out[zero, 0] = np.where(neg[zero], _MINUS, _ZERO)
    out[zero, 1] = np.where(neg[zero], _ZERO, 0)
    if rows.size:
        chunks, nd, exp10, ok = _fast_digits(a[rows])
        if not ok.all():
            slow[rows[~ok]] = True
            rows, chunks, nd, exp10 = rows[ok], chunks[ok], nd[ok], exp10[ok]
        _layout(out, rows, neg[rows], _DIGITS4_U32[chunks].view(np.uint8)[:, 3:], nd, exp10)
    for i in np.flatnonzero(slow):
        text = repr(float(x[i]))
        if text.endswith(".0"):
            text = text[:-2]
        b = text.encode()
        out[i, : len(b)] = np.frombuffer(b, dtype=np.uint8)
    return out


def _layout(
    out: np.ndarray,
    rows: np.ndarray,
    neg: np.ndarray,
    z: np.ndarray,
    nd: np.ndarray,
    exp10: np.ndarray,
) -> None:
    """Write the 17 ASCII digits ``z`` as positional decimals (``-4 <= exp10 <= 14``).

    Column 0 holds the sign (NUL when positive), so each exponent is a fixed set of slices.
    """
    frac = z * (_COLS17 < nd[:, None])  # past the last significant digit: NUL
    if neg.any():
        out[rows, 0] = np.where(neg, _MINUS, 0)
    for p in np.flatnonzero(np.bincount(exp10 + 4)) - 4:
        sel: np.ndarray | slice = np.flatnonzero(exp10 == p)
        r: np.ndarray | slice = rows[sel]
        if len(r) == len(rows) and len(rows) == len(out):
            sel = r = slice(None)
        if p >= 0:
            w = int(p) + 1
            out[r, 1 : 1 + w] = z[sel, :w]
            out[r, 1 + w] = np.where(nd[sel] > w, _DOT, 0)
            out[r, 2 + w : 2 + 17] = frac[sel, w:]
        else:
            lead = -int(p) - 1  # zeros between the point and the first digit
            out[r, 1] = _ZERO
            out[r, 2] = _DOT
            out[r, 3 : 3 + lead] = _ZERO
            out[r, 3 + lead : 3 + lead + 17] = frac[sel]
