"""Decimal text of whole numpy arrays: integers, and floats exactly as Python prints them.

The line-protocol encoder must turn millions of numbers a second into text. Formatting one
number at a time (``str``, ``numpy.astype(str)``) costs 0.3 to 0.6 us each, which alone is
slower than the whole encoder is meant to be, so this module formats whole arrays with integer
arithmetic on uint64 and lays the characters out as a matrix of bytes, one row per number,
padded with NUL bytes that the encoder deletes when it joins the rows into a body. Digits are
made eight at a time: a uint64 below ``10**8`` becomes the word whose bytes are its digits
with a few multiply-shifts, with no table lookups (`_swar8`).

Floats come out as Python's ``repr`` would print them (the shortest text that reads back to
the same double), with ``influxdb-client``'s trailing ``.0`` removed (``20`` for ``20.0``;
line protocol reads a number without ``i`` as a float). For ``1e-4 <= |x| < 1e15`` the digits
are found exactly: the double is ``m * 2**e`` with an integer ``m``, so ``x * 10**k`` is the
integer ``m * 5**k`` (up to 100 bits) shifted right by ``-(e + k)`` bits; its quotient and
the bits shifted out (the exact remainder) decide the rounding and whether 15, 16 or 17
digits read back to ``x``. When a column's values share one decimal exponent and sign (a
sensor's readings usually do), the text is assembled in three 8-byte words per value with
constant shifts; otherwise each exponent is written as its own group of byte slices. Zero is
written directly, and the few numbers outside that range (scientific notation in Python's
``repr``) go through ``repr`` one by one.
"""

from __future__ import annotations

import sys

import numpy as np

__all__ = ["FLOAT_WIDTH", "INT_WIDTH", "digit_words", "float_text", "int_text"]

#: Columns of `int_text`: 19 digits of the largest int64 and a sign.
INT_WIDTH = 20
#: Columns of `float_text`: the longest ``repr`` of a double, ``-2.2250738585072014e-308``.
FLOAT_WIDTH = 24

_U = np.uint64
_LITTLE = sys.byteorder == "little"  # the word layout below assumes little-endian bytes
_P10 = np.array([10**i for i in range(20)], dtype=_U)
_P5 = np.array([5**i for i in range(28)], dtype=_U)
_F10 = np.array([10.0**i for i in range(-5, 17)])  # 1e-5 .. 1e16, exact decimal boundaries
_MASK52 = _U((1 << 52) - 1)
_COLS17 = np.arange(17)
_COLS20 = np.arange(20)
_ZERO, _DOT, _MINUS = ord("0"), ord("."), ord("-")
_FAST_MIN, _FAST_MAX = 1e-4, 1e15
_ASCII0 = _U(0x3030_3030_3030_3030)
_LOW7 = _U(0x7F7F_7F7F_7F7F_7F7F)
_HIGH1 = _U(0x8080_8080_8080_8080)
_ALL = (1 << 64) - 1


def _swar8(x: np.ndarray) -> np.ndarray:
    """uint64 values below ``10**8`` as eight digit bytes (0-9), the first in the lowest byte.

    The two 4-digit halves go to 32-bit lanes, each lane is split by 100 into 16-bit lanes,
    and those by 10 into bytes, every lane at once: ``(v * 10486) >> 20`` is ``v // 100`` for
    ``v < 10**4``, and ``(v * 103) >> 10`` is ``v // 10`` for ``v < 100``.
    """
    hi = x // _U(10_000)
    v = hi | ((x - hi * _U(10_000)) << _U(32))
    d = ((v * _U(10486)) >> _U(20)) & _U(0x7F_0000_007F)
    v = ((v - d * _U(100)) << _U(16)) | d
    d = ((v * _U(103)) >> _U(10)) & _U(0x000F_000F_000F_000F)
    digits: np.ndarray = ((v - d * _U(10)) << _U(8)) | d
    return digits


def _words(u: np.ndarray, count: int) -> list[np.ndarray]:
    """The last ``8 * count`` decimal digits of uint64 values: `_swar8` words, first first.

    Each word is its own array of ``n`` elements: a block's temporaries stay small enough
    to be reused from the heap rather than mapped (and page-faulted) afresh.
    """
    words = []
    rest = u
    for _ in range(count - 1):
        q = rest // _U(10**8)
        words.append(_swar8(rest - q * _U(10**8)))
        rest = q
    words.append(_swar8(rest % _U(10**8)))
    return words[::-1]


def _digits20(u: np.ndarray) -> np.ndarray:
    """(n, 20) ASCII digits of uint64 values, zero-padded on the left."""
    w = np.empty((u.size, 3), dtype="<u8")  # the digit bytes are in little-endian order
    for j, word in enumerate(_words(u, 3)):
        w[:, j] = word | _ASCII0
    return w.view(np.uint8)[:, 4:]


def _as_words(out: np.ndarray) -> np.ndarray | None:
    """A (n, 8 * k) uint8 matrix (or column slice of one) as (n, k) uint64, or None."""
    try:
        return out.view(_U)
    except ValueError:  # rows not contiguous
        return None


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


def digit_words(values: np.ndarray, digits: int, out: np.ndarray | None = None) -> np.ndarray:
    """(n, 3) uint64: the last ``digits`` (17 to 24) digits of int64 values >= 0, as text.

    Viewed as bytes (``.view(np.uint8)``), each row holds the digits left-aligned with
    leading zeros kept, NUL after: a fixed-width field that a caller can store as three
    words. Timestamps in nanoseconds since 2001-09-09 all have 19 digits. ``out``, when
    given, is written in place (a (n, 24) byte slice of a larger matrix viewed as uint64).

    Examples:
        >>> w = digit_words(np.array([1700000000000000001]), 19)
        >>> bytes(w.view(np.uint8)[0])
        b'1700000000000000001\\x00\\x00\\x00\\x00\\x00'
    """
    if not 17 <= digits <= 24:
        raise ValueError(f"digits must be in 17..24, got {digits}")
    if not _LITTLE:  # pragma: no cover - the supported platforms are little-endian
        raise NotImplementedError("digit words are laid out for little-endian machines")
    v = np.asarray(values, dtype=np.int64).view(_U)
    if out is None:
        out = np.empty((v.size, 3), dtype=_U)
    if not v.size:
        return out
    upper = v // _U(10**8)
    low = _swar8(v - upper * _U(10**8)) | _ASCII0
    first, last = int(upper.min()), int(upper.max())
    if last - first < max(64, v.size // 16):  # timestamps: runs share their leading digits
        table = _leading(np.arange(first, last + 1, dtype=_U), digits)
        at = (upper - _U(first)).astype(np.intp)
        head, mid = table[0][at], table[1][at]
    else:
        head, mid = _leading(upper, digits)
    b = 8 * (24 - digits)  # leading digits to drop, in bits
    out[:, 0] = head
    out[:, 1] = mid | (low << _U(64 - b)) if b else mid
    out[:, 2] = low >> _U(b)
    return out


def _leading(upper: np.ndarray, digits: int) -> tuple[np.ndarray, np.ndarray]:
    """The first word of `digit_words` and the part of its second that ``upper`` fills."""
    a, c = (w | _ASCII0 for w in _words(upper, 2))
    b = 8 * (24 - digits)
    if not b:
        return a, c
    return (a >> _U(b)) | (c << _U(64 - b)), c >> _U(b)


def _mul_shift(m: np.ndarray, f: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``m * f`` (53 x 47 bits) divided by ``2**s`` (1 <= s <= 56): quotient and remainder.

    The product needs up to 100 bits. In floating point the quotient (below ``10**17``) is
    known to within 12, and the low 64 bits of the product are exact in wrapping uint64
    arithmetic; those bits less the estimate times ``2**s`` are the remainder plus a small
    multiple of ``2**s``, which an arithmetic shift recovers.
    """
    scale = ((_U(1023) - s) << _U(52)).view(np.float64)  # 2**-s
    scale *= m
    scale *= f
    q = scale.astype(_U)
    r = m * f
    r -= q << s  # = remainder + (true q - estimate) * 2**s, modulo 2**64
    q += (r.view(np.int64) >> s.view(np.int64)).view(_U)
    r &= (_U(1) << s) - _U(1)
    return q, r


def _shortest(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shortest round-trip digits of positive doubles in [1e-4, 1e15).

    Returns ``(digits, exp10, ok)``: the digits scaled to 17 (an integer in ``[10**16,
    10**17)``, zeros after the last significant digit), the decimal exponent of the first
    digit, and False where no exact answer was found (those rows go through ``repr``).

    With ``x = m * 2**e`` and ``k = 16 - exp10``, ``x * 10**k = (q * 2**s + r) / 2**s`` exactly,
    where ``s = -(e + k)``. Rounding that to ``p`` digits (17, 16, 15) divides by ``10**(17-p)``;
    the decimal ``D`` reads back to ``x`` when ``|x - D * 10**-k'|`` is below half a unit in the
    last place of ``x``, which scaled by ``10**k * 2**s`` is ``5**k / 2`` (``5**k / 4`` below a
    power of two, where the gap to the next lower double is half as wide). The shortest ``p``
    that reads back wins. ``exp10`` is ``floor(e2 * log10(2))`` for the binary exponent ``e2``
    (as ``(e2 * 78913) >> 18``), plus one where ``x`` reaches the next power of ten.
    """
    bits = np.ascontiguousarray(a, dtype=np.float64).view(_U)
    frac = bits & _MASK52
    m = frac | _U(1 << 52)
    e2 = (bits >> _U(52)).astype(np.int64) - 1023
    est = (e2 * 78913) >> 18
    exp10 = est + (a >= _F10[est + 6])
    k = 16 - exp10
    f = _P5[k]
    s = (52 - e2 - k).astype(_U)
    q, r = _mul_shift(m, f, s)
    # |x - D| below the half gap, in units of 2**-s: off < lim is 2 * off < f (4 * off < f
    # below x at a power of two)
    lim_up = (f + _U(1)) >> _U(1)
    lim_down = np.where(frac == _U(0), (f + _U(3)) >> _U(2), lim_up)
    best, found = _nearest(q, r, s, 17, lim_up, lim_down)
    for p in (16, 15):
        d, ok = _nearest(q, r, s, p, lim_up, lim_down)
        best = np.where(ok, d * _U(10 ** (17 - p)), best)
        found |= ok
    return best, exp10, found


def _nearest(
    q: np.ndarray, r: np.ndarray, s: np.ndarray, p: int, lim_up: np.ndarray, lim_down: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``x * 10**k`` rounded to ``p`` digits (to nearest, ties to even), and whether it reads
    back to ``x``: its distance from ``x`` in units of ``2**-s`` is below the limit."""
    div = 10 ** (17 - p)
    if div == 1:
        d, num = q.copy(), r
    else:
        d = q // _U(div)
        num = d * _U(div)
        np.subtract(q, num, out=num)
        num <<= s
        num += r  # x above D rounded down, in units of 2**-s
    span = _U(div) << s
    t = d & _U(1)
    t += num
    up = t > (span >> _U(1))
    span -= num  # x below D rounded up
    ok = np.where(up, span < lim_up, num < lim_down)
    d += up
    np.subtract(d, _U(10 ** (p - 1)), out=t)
    ok &= t < _U(9 * 10 ** (p - 1))  # still p digits after rounding
    return d, ok


def _marks(w: np.ndarray) -> np.ndarray:
    """0x80 in each byte of a `_swar8` word that holds a non-zero digit."""
    marks = w + _LOW7
    marks &= _HIGH1
    return marks


def _smear(marks: np.ndarray) -> np.ndarray:
    """The 0x80 marks copied into every lower byte (in place): the significant digits."""
    marks |= marks >> _U(8)
    marks |= marks >> _U(16)
    marks |= marks >> _U(32)
    return marks


def _text_words(best: np.ndarray, p: int, negative: bool, out: np.ndarray) -> None:
    """Positional text of 17-digit ``best`` sharing exponent ``p``, into (n, 3) uint64 ``out``.

    Viewed as bytes: ``repr`` without a trailing ``.0``, left-aligned, NUL after. The digits
    are three words (the first digit, then two words of eight). Trailing zero digits become
    NUL by smearing a per-byte "non-zero" mark downwards; the point (or ``0.`` and leading
    zeros) goes in with constant byte shifts, since ``p`` is the same for every value.
    Operations work in place where they can: at a few thousand rows, every temporary
    that is not allocated is one less to pull through the cache.
    """
    top = best // _U(10**8)
    lead = top // _U(10**8)  # the first digit
    w2 = _swar8(best - top * _U(10**8))
    top -= lead * _U(10**8)
    w1 = _swar8(top)
    s2 = _marks(w2)
    s1 = _marks(w1)
    if p >= 9:  # digits before the point are written even when zero ("20", not "2")
        s2 |= _U(0x80 << (8 * (p - 9)))
    elif p >= 1:
        s1 |= _U(0x80 << (8 * (p - 1)))
    s1 |= (s2 != _U(0)).view(np.uint8).astype(_U) << _U(63)
    _smear(s1)
    _smear(s2)
    dot = None
    if p >= 0:  # the point is written when digit p + 1 is significant
        dot = (((s1 if p < 8 else s2) >> _U(8 * (p % 8) + 7)) & _U(1)) * _U(_DOT)
    s1 >>= _U(7)  # 0x01 per significant byte, times "0" turns digits into text
    s1 *= _U(_ZERO)
    w1 += s1
    s2 >>= _U(7)
    s2 *= _U(_ZERO)
    w2 += s2
    lead |= _U(_ZERO)
    lead |= w1 << _U(8)
    w1 >>= _U(56)
    w1 |= w2 << _U(8)
    w2 >>= _U(56)
    z = (lead, w1, w2)  # the 17 digits as 17 bytes
    words: list[np.ndarray] = list(z)
    if dot is not None:
        q = p + 1  # the point's byte
        for j in range(3):
            if q >= 8 * j + 8:  # the whole word lies before the point
                continue
            after = z[j] << _U(8)
            if j:
                after |= z[j - 1] >> _U(56)
            if q < 8 * j:  # the whole word lies after it: digits move up one byte
                words[j] = after
            else:
                r = 8 * (q - 8 * j)
                below, above = (1 << r) - 1, _ALL ^ ((1 << (r + 8)) - 1)
                after &= _U(above)
                after |= dot << _U(r)
                after |= z[j] & _U(below)
                words[j] = after
    else:
        b = 8 * (1 - p)  # "0." and -p - 1 zeros before the digits
        zeros = int.from_bytes(b"0." + b"0" * (-p - 1), "little")
        words = [
            (z[0] << _U(b)) | _U(zeros),
            (z[1] << _U(b)) | (z[0] >> _U(64 - b)),
            (z[2] << _U(b)) | (z[1] >> _U(64 - b)),
        ]
    if negative:
        words = [
            (words[0] << _U(8)) | _U(_MINUS),
            (words[1] << _U(8)) | (words[0] >> _U(56)),
            (words[2] << _U(8)) | (words[1] >> _U(56)),
        ]
    for j in range(3):
        out[:, j] = words[j]


def float_text(values: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(n, `FLOAT_WIDTH`) uint8: Python's ``repr`` of each double, without a trailing ``.0``.

    Left-aligned and NUL-padded, no NUL before the text ends (a sign is part of the text,
    not a column of its own). Non-finite values give ``nan``/``inf`` text; callers leave
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
    a = np.abs(x)
    neg = np.signbit(x)
    fast = (a >= _FAST_MIN) & (a < _FAST_MAX)
    everywhere = bool(fast.all())
    if everywhere:
        best, exp10, ok = _shortest(a)
        rows = np.arange(n)
        if _LITTLE and n and ok.all():
            p = int(exp10[0])
            negative = bool(neg[0])
            if (exp10 == p).all() and (neg == negative).all():  # one layout for all
                view = _as_words(out)
                if view is None:
                    view = np.empty((n, 3), dtype=_U)
                    _text_words(best, p, negative, view)
                    out[...] = view.view(np.uint8)
                else:
                    _text_words(best, p, negative, view)
                return out
    else:
        rows = np.flatnonzero(fast)
        best, exp10, ok = _shortest(a[rows])
    out[...] = 0
    slow = ~fast & (a != 0.0)
    zero = np.flatnonzero(a == 0.0)
    out[zero, 0] = np.where(neg[zero], _MINUS, _ZERO)
    out[zero, 1] = np.where(neg[zero], _ZERO, 0)
    if rows.size:
        if not ok.all():
            slow[rows[~ok]] = True
            rows, best, exp10 = rows[ok], best[ok], exp10[ok]
        z = _digits20(best)[:, 3:]
        nd = 17 - (z != _ZERO)[:, ::-1].argmax(axis=1)  # less the trailing zeros
        _layout(out, rows, neg[rows], z, nd, exp10)
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

    Each exponent and sign is a fixed set of slices, so rows are written a group at a time.
    """
    frac = z * (_COLS17 < nd[:, None])  # past the last significant digit: NUL
    for p in np.flatnonzero(np.bincount(exp10 + 4)) - 4:
        for negative in (False, True):
            picked = np.flatnonzero((exp10 == p) & (neg == negative))
            if not len(picked):
                continue
            sel: np.ndarray | slice = picked
            r: np.ndarray | slice = rows[picked]
            if len(picked) == len(rows) == len(out):
                sel = r = slice(None)
            b = int(negative)  # the text starts after the sign
            if negative:
                out[r, 0] = _MINUS
            if p >= 0:
                w = int(p) + 1
                out[r, b : b + w] = z[sel, :w]
                out[r, b + w] = np.where(nd[sel] > w, _DOT, 0)
                out[r, b + w + 1 : b + 18] = frac[sel, w:]
            else:
                lead = -int(p) - 1  # zeros between the point and the first digit
                out[r, b] = _ZERO
                out[r, b + 1] = _DOT
                out[r, b + 2 : b + 2 + lead] = _ZERO
                out[r, b + 2 + lead : b + 19 + lead] = frac[sel]
