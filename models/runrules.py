"""Western Electric and Nelson run rules for individual observations, vectorized over tags.

A Shewhart chart with 3-sigma limits alone misses patterns that are unlikely in a stable process
although no single point is extreme: two of three points near a limit, a long run on one side of
the centre, a steady trend, a sawtooth from two alternating feeders. The run rules name those
patterns, so a detection can say which one a lane shows. Centre and sigma are frozen by ``fit``
(Phase I, sigma from the mean moving range as on the I-MR chart) and every sample is judged on
its standardized value ``z = (x - center) / sigma``.

Rule windows count *usable* samples of a tag: a NaN sample is skipped and the window continues
with the next good one, so a dropped reading neither fires nor hides a pattern. A line stop is
different: when ``times`` are given and more than ``max_gap_s`` seconds passed since a tag's
previous usable sample, that tag's windows restart, because a run that spans a stop says nothing
about the process. The last samples of each window are carried between chunks, so chunking
never changes which rules fire.

References: Western Electric, *Statistical Quality Control Handbook* (1956); Nelson (1984),
Journal of Quality Technology 16(4); Montgomery, *Introduction to Statistical Quality Control*,
8th ed., section 5.3.6; Champ & Woodall (1987), Technometrics 29(4).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from models.detector import FloatArray, NotFittedError, as_chunk
from models.params import check_choice, check_float, check_int
from models.phase1 import (
    known_center_sigma,
    require_samples,
    require_spread,
    robust_sigma,
    tag_names,
)

__all__ = ["RunRules", "RunRulesResult"]


IntArray = npt.NDArray[np.int32]
CountArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# How each rule reads, as (kind, points in the pattern, threshold in sigma, hits needed).
#   "beyond": at least `hits` of the last `points` beyond `threshold` on one side.
#   "side":   `points` in a row strictly on one side of the centre.
#   "trend":  `points` in a row steadily increasing, or steadily decreasing.
#   "alternate": `points` in a row alternating up and down.
#   "within": `points` in a row with |z| <= threshold.
#   "outside": `points` in a row with |z| > threshold (either side).
_SPECS: dict[str, tuple[str, int, float, int]] = {
    "we1": ("beyond", 1, 3.0, 1),
    "we2": ("beyond", 3, 2.0, 2),
    "we3": ("beyond", 5, 1.0, 4),
    "we4": ("side", 8, 0.0, 8),
    "nelson1": ("beyond", 1, 3.0, 1),
    "nelson2": ("side", 9, 0.0, 9),
    "nelson3": ("trend", 6, 0.0, 6),
    "nelson4": ("alternate", 14, 0.0, 14),
    "nelson5": ("beyond", 3, 2.0, 2),
    "nelson6": ("beyond", 5, 1.0, 4),
    "nelson7": ("within", 15, 1.0, 15),
    "nelson8": ("outside", 8, 1.0, 8),
}
_SIDED = ("beyond", "side")


@dataclass(frozen=True, slots=True)
class RunRulesResult:
    """What one ``update`` produced; arrays are shaped like the chunk ``(time, tags)``.

    ``z`` is the standardized sample (NaN where skipped). ``fired`` has bit ``i`` set where rule
    ``RunRules.RULES[i]`` fired on that sample. ``signal`` is the side of the violation (+1
    above, -1 below the centre) for the one-sided rules, +1 where only rules without a side
    (nelson3, nelson4, nelson7, nelson8) fired, 0 where none did. ``skipped`` counts, per tag,
    the samples that could not be judged.
    """

    z: FloatArray
    fired: npt.NDArray[np.uint16]
    signal: npt.NDArray[np.int8]
    skipped: CountArray


class RunRules:
    """Western Electric rules 1-4 and Nelson rules 1-8 on individual observations.

    A rule fires on the sample that completes its pattern and on every later sample that
    continues it (a run of 10 on one side fires ``we4`` on its 8th, 9th and 10th points), and
    only on samples that belong to the pattern: "two of three beyond 2 sigma" fires on a point
    that is itself beyond 2 sigma. Windows start empty ("zero state"): "two of three" can fire
    on the second sample. Boundaries: "beyond a" is ``|z| > a``, "within 1 sigma" is
    ``|z| <= 1``, "same side" is strictly above or below the centre, and trends and
    alternations need strict steps (a repeated value breaks them).

    Parameters:
        rules: the rule names to evaluate (one name or a collection), any of
            ``RunRules.RULES``. Bit ``i`` of ``fired`` always means ``RULES[i]``, whichever
            rules are enabled, so a stored bitmask reads the same under any configuration.
        min_baseline: fewest usable baseline samples per tag that ``fit`` accepts.
        max_gap_s: when ``update`` gets ``times`` and a tag's usable samples are more than this
            many seconds apart, the tag's windows restart (rules must not span a line stop);
            ``None`` never restarts.

    Examples:
        >>> rng = np.random.default_rng(7)
        >>> det = RunRules().fit(rng.normal(50.0, 2.0, size=(100, 2)))
        >>> x = rng.normal(50.0, 2.0, size=(30, 2))
        >>> x[10:20, 1] = det.center_[1] + 0.5 * det.sigma_[1]  # ten points just above centre
        >>> res = det.update(x)
        >>> int(np.flatnonzero(res.signal[:, 1])[0])
        17
        >>> det.names(int(res.fired[17, 1]))
        ['we4']

    References: Western Electric (1956); Nelson (1984); Montgomery, *Introduction to
    Statistical Quality Control*, 8th ed., section 5.3.6; Champ & Woodall (1987).
    """

    #: Every rule this detector knows, in bit order of ``RunRulesResult.fired``.
    RULES: tuple[str, ...] = tuple(_SPECS)

    def __init__(
        self,
        rules: Iterable[str] = ("we1", "we2", "we3", "we4"),
        min_baseline: int = 20,
        max_gap_s: float | None = None,
    ) -> None:
        names = _rule_names(rules)
        self.rules = rules
        self.min_baseline = check_int("RunRules", "min_baseline", min_baseline, 2)
        self.max_gap_s = (
            None
            if max_gap_s is None
            else check_float("RunRules", "max_gap_s", max_gap_s, 0.0, low_open=True)
        )
        self._enabled = tuple(dict.fromkeys(names))
        # Samples carried between chunks: the longest pattern minus the sample being judged
        # (at least one, which keeps the bookkeeping free of empty arrays).
        self._h = max(1, max(_SPECS[r][1] for r in self._enabled) - 1)
        sided = sum(1 << self.RULES.index(r) for r in self._enabled if _SPECS[r][0] in _SIDED)
        self._sided = np.uint16(sided)
        self._unsided = any(_SPECS[r][0] not in _SIDED for r in self._enabled)
        self._fitted = False

    # -- Phase I -----------------------------------------------------------------------------

    def fit(self, baseline: npt.ArrayLike, tags: list[str] | None = None) -> RunRules:
        """Learn ``center_`` (mean) and ``sigma_`` (mean moving range / d2) per tag."""
        x = as_chunk(baseline, "baseline")
        names = tag_names(tags, x.shape[1])
        require_samples(x, "RunRules", self.min_baseline, names)
        center = np.nanmean(x, axis=0)
        sigma = robust_sigma(x, "mr")
        require_spread(sigma, "RunRules", names)
        self.center_: FloatArray = center
        self.sigma_: FloatArray = sigma
        self.n_tags_ = int(x.shape[1])
        self._fitted = True
        self.reset()
        return self

    def fit_known(self, center: npt.ArrayLike, sigma: npt.ArrayLike) -> RunRules:
        """Use a centre and sigma known from earlier studies instead of a baseline."""
        c, s = known_center_sigma(center, sigma)
        self.center_ = c
        self.sigma_ = s
        self.n_tags_ = int(c.size)
        self._fitted = True
        self.reset()
        return self

    def reset(self) -> None:
        """Forget Phase II state (every window starts empty); keep the fit."""
        if self._fitted:
            self._hist: FloatArray = np.full((self._h, self.n_tags_), np.nan)
            self._t: FloatArray = np.full(self.n_tags_, np.nan)

    # -- Phase II ----------------------------------------------------------------------------

    def update(self, chunk: npt.ArrayLike, times: npt.ArrayLike | None = None) -> RunRulesResult:
        """Judge a ``(time, tags)`` chunk, continuing the windows of the previous chunk.

        ``times`` (epoch seconds, shaped like the chunk or ``(time,)`` for all tags) are only
        used with ``max_gap_s``; a sample whose time is not finite is then skipped.
        """
        if not self._fitted:
            raise NotFittedError(
                "This RunRules is not fitted yet; call fit(baseline) before update."
            )
        x = as_chunk(chunk, "chunk", self.n_tags_)
        t_len, n_tags = x.shape
        h = self._h
        hist = self._hist
        z = np.empty(x.shape)
        fired = np.empty(x.shape, dtype=np.uint16)
        signal = np.empty(x.shape, dtype=np.int8)
        skipped = np.zeros(n_tags, dtype=np.int64)
        plain = _Plain(self._enabled, hist, t_len)
        ok: BoolArray | None = None
        restart: BoolArray | None = None
        # Tags whose chunk is all usable and free of restarts need no compaction (the plain
        # path); the others ("rough") are redone on the compacted path.
        if self.max_gap_s is None:
            rough = plain.run(
                z, fired, signal, self._sided, self._unsided, self.center_, self.sigma_, x
            )
        else:
            with np.errstate(over="ignore", invalid="ignore"):
                np.subtract(x, self.center_, out=z)
                np.divide(z, self.sigma_, out=z)  # an overflow is skipped like a NaN
            ok = np.isfinite(z)
            if times is None:
                # Without times the gap to the next chunk is unknown: do not guess one.
                self._t = np.where(ok.any(axis=0), np.nan, self._t)
            else:
                tt = _times(times, x.shape)
                ok &= np.isfinite(tt)
                restart = self._restarts(tt, ok, self.max_gap_s)
            rough = np.logical_not(ok.all(axis=0))
            if restart is not None:
                rough |= restart.any(axis=0)
            if not rough.all():
                plain.run(z, fired, signal, self._sided, self._unsided, self.center_, self.sigma_)
        cols = np.flatnonzero(rough)
        if cols.size < n_tags:
            self._hist = z[t_len - h :].copy() if t_len >= h else np.concatenate([hist[t_len:], z])
        if cols.size:
            whole = cols.size == n_tags
            zs = z if whole else z[:, cols]
            oks = np.isfinite(zs) if ok is None else (ok if whole else ok[:, cols])
            if restart is None:
                starts = np.zeros(zs.shape, dtype=np.bool_)
            else:
                starts = restart if whole else restart[:, cols]
            zs = np.where(oks, zs, np.nan)
            fired_s, hist_s = _compacted_rules(
                self._enabled, zs, oks, starts, hist if whole else hist[:, cols]
            )
            signal_s = self._signal(zs, fired_s)
            if whole:
                z, fired, signal, self._hist = zs, fired_s, signal_s, hist_s
            else:
                z[:, cols] = zs
                fired[:, cols] = fired_s
                signal[:, cols] = signal_s
                self._hist[:, cols] = hist_s
            skipped[cols] = np.sum(~oks, axis=0)
        return RunRulesResult(z, fired, signal, skipped)

    def _signal(self, z: FloatArray, fired: npt.NDArray[np.uint16]) -> npt.NDArray[np.int8]:
        """+1/-1 by the side of a one-sided rule that fired, else +1 where any rule fired."""
        side = (z > 0.0).view(np.int8) - (z < 0.0).view(np.int8)
        out: npt.NDArray[np.int8] = np.where(
            (fired & self._sided) != 0, side, (fired != 0).view(np.int8)
        )
        return out

    def names(self, bits: int | np.integer[Any]) -> list[str]:
        """The names of the rules whose bits are set in one ``fired`` value.

        Examples:
            >>> RunRules().names(0b1001)
            ['we1', 'we4']
        """
        b = int(bits)
        return [name for i, name in enumerate(self.RULES) if b >> i & 1]

    def _restarts(self, tt: FloatArray, ok: BoolArray, max_gap_s: float) -> BoolArray:
        """Where a tag's usable sample comes more than ``max_gap_s`` after its previous one."""
        t_len, n_tags = tt.shape
        rows = np.arange(t_len)[:, None]
        latest = np.maximum.accumulate(np.where(ok, rows, -1), axis=0)
        before = np.concatenate([np.full((1, n_tags), -1), latest])[:-1]
        prev = np.where(before >= 0, np.take_along_axis(tt, np.maximum(before, 0), axis=0), self._t)
        if t_len:
            newest = np.take_along_axis(tt, np.maximum(latest[-1:], 0), axis=0)[0]
            self._t = np.where(latest[-1] >= 0, newest, self._t)
        with np.errstate(over="ignore", invalid="ignore"):
            out: BoolArray = ok & (tt - prev > max_gap_s)
        return out


def _rule_names(rules: Any) -> tuple[str, ...]:
    """Validate ``rules``: one name or a non-empty collection of names from ``RULES``."""
    if isinstance(rules, str) or not isinstance(rules, Iterable):
        return (check_choice("RunRules", "rules", rules, tuple(_SPECS)),)
    names = tuple(check_choice("RunRules", "rules", r, tuple(_SPECS)) for r in rules)
    check_int("RunRules", "number of rules", len(names), 1)
    return names


def _times(times: npt.ArrayLike, shape: tuple[int, ...]) -> FloatArray:
    tt = np.asarray(times, dtype=np.float64)
    if tt.ndim == 1 and tt.shape[0] == shape[0]:
        tt = np.broadcast_to(tt[:, None], shape)
    if tt.shape != shape:
        raise ValueError(f"times must be shaped like the chunk {shape}, got {tt.shape}")
    return tt


def _compacted_rules(
    enabled: tuple[str, ...], z: FloatArray, ok: BoolArray, restart: BoolArray, hist: FloatArray
) -> tuple[npt.NDArray[np.uint16], FloatArray]:
    """Rule bits for tags with skipped samples or restarts, and the history to carry.

    Each tag's usable samples are compacted behind its carried history, so windows count
    usable samples only: position p of column j is the p-th usable value of tag j.
    """
    h = hist.shape[0]
    t_len, n_tags = z.shape
    n_pos = h + t_len
    zc = np.full((n_pos, n_tags), np.nan)
    zc[:h] = hist
    starts = np.zeros((n_pos, n_tags), dtype=np.bool_)
    dense = bool(ok.all())
    if dense:
        zc[h:] = z
        starts[h:] = restart
    else:
        rank = np.cumsum(ok, axis=0, dtype=np.int32) - 1
        r, c = np.nonzero(ok)
        zc[h + rank[r, c], c] = z[r, c]
        starts[h + rank[r, c], c] = restart[r, c]
    pos = np.arange(n_pos, dtype=np.int32)[:, None]
    # seg[p]: where the window segment holding p begins (the oldest carried sample, or the
    # latest restart); dist[p] = p - seg[p] is how many earlier samples p's windows see.
    seg0 = (h - np.sum(np.isfinite(hist), axis=0)).astype(np.int32)
    if starts.any():
        seg = np.maximum.accumulate(np.where(starts, pos, seg0[None, :]), axis=0)
    else:
        seg = np.broadcast_to(seg0[None, :], starts.shape)
    dist = pos - seg

    fired_c = np.zeros((n_pos, n_tags), dtype=np.uint16)
    for name in enabled:
        hit = _evaluate(name, zc, pos, dist)
        np.bitwise_or(fired_c, np.uint16(1 << RunRules.RULES.index(name)), out=fired_c, where=hit)
    if dense:
        fired = fired_c[h:]
    else:
        src = h + np.maximum(rank, 0)
        fired = np.where(ok, np.take_along_axis(fired_c, src, axis=0), np.uint16(0))
    fired = fired.astype(np.uint16)

    # Carry the last h positions of each tag's current segment.
    last = h + np.sum(ok, axis=0) - 1
    keep = last[None, :] - np.arange(h - 1, -1, -1)[:, None]
    seg_last = np.take_along_axis(seg, last[None, :], axis=0)
    new_hist: FloatArray = np.where(keep >= seg_last, np.take_along_axis(zc, keep, axis=0), np.nan)
    return fired, new_hist


#: Samples (rows x tags) judged per block of the plain path: small enough that a block's
#: values and indicators stay in the core's cache while every rule reads them.
_BLOCK = 1 << 16


class _Plain:
    """The rule pass for tags whose chunk has no skipped sample and no restart.

    Without skips and restarts the compacted positions are the time rows behind the carried
    history, and the history is NaN before its segment starts, so every window is a plain
    slice of the extended rows ``hist ++ z``: a NaN fails every indicator, which does the work
    of the segment bookkeeping. Zone indicators and steps are computed once per row and shared
    by the rules. Rows are processed in cache-sized blocks; the indicator buffers hold one
    block behind the ``h`` rows before it, which roll forward from block to block. Columns
    that turn out to need the compacted path are computed here too and overwritten by the
    caller.
    """

    def __init__(self, enabled: tuple[str, ...], hist: FloatArray, t_len: int) -> None:
        self.hist = hist
        self.h = h = hist.shape[0]
        self.step = max(1, _BLOCK // max(hist.shape[1], 1))
        self.shape = (h + min(self.step, t_len), hist.shape[1])
        self.rules = [(_SPECS[name], RunRules.RULES.index(name)) for name in enabled]
        self.thresholds = sorted({0.0, *(a for (kind, _, a, _), _ in self.rules)})
        kinds = {kind for (kind, _, _, _), _ in self.rules}
        self.flags: dict[tuple[str, float], BoolArray] = {}
        for a in self.thresholds:
            self._hist_rows(("gt", a), np.greater(hist, a))
            self._hist_rows(("lt", a), np.less(hist, -a))
        for (kind, _, a, _), _ in self.rules:
            gt, lt = self.flags["gt", a][:h], self.flags["lt", a][:h]
            if kind == "within":
                self._hist_rows(("in", a), ~(gt | lt) & np.isfinite(hist))
            elif kind == "outside":
                self._hist_rows(("out", a), gt | lt)
        self.d: FloatArray | None = None
        if kinds & {"trend", "alternate"}:
            self.d = np.empty(self.shape)
            self.d[0] = np.nan
            with np.errstate(over="ignore", invalid="ignore"):
                np.subtract(hist[1:], hist[:-1], out=self.d[1:h])
            self._hist_rows(("up", 0.0), self.d[:h] > 0.0)
            self._hist_rows(("down", 0.0), self.d[:h] < 0.0)
            alt = np.zeros(hist.shape, dtype=np.bool_)
            with np.errstate(over="ignore", invalid="ignore"):
                np.less(self.d[1:h] * self.d[: h - 1], 0.0, out=alt[1:])
            self._hist_rows(("alt", 0.0), alt)
        self.high = any(bit >= 8 for _, bit in self.rules)

    def _hist_rows(self, key: tuple[str, float], rows: BoolArray) -> None:
        out = np.empty(self.shape, dtype=np.bool_)
        out[: self.h] = rows
        self.flags[key] = out

    def run(
        self,
        z: FloatArray,
        fired: npt.NDArray[np.uint16],
        signal: npt.NDArray[np.int8],
        sided: np.uint16,
        unsided: bool,
        center: FloatArray,
        sigma: FloatArray,
        x: FloatArray | None = None,
    ) -> BoolArray:
        """Fill ``fired`` and ``signal`` (and ``z`` from ``x`` when given), block by block.

        Returns which tags have a non-finite ``z`` computed here (none when ``x`` is None).
        """
        h = self.h
        t_len, n_tags = z.shape
        step = self.step
        total = np.zeros(n_tags)
        flags = self.flags
        d = self.d
        acc = np.empty((min(step, t_len), n_tags), dtype=np.uint8)
        tmp = np.empty_like(acc)
        acc_hi = np.empty_like(acc) if self.high else acc
        with np.errstate(over="ignore", invalid="ignore"):
            for r0 in range(0, t_len, step):
                r1 = min(t_len, r0 + step)
                rows = r1 - r0
                lo, hi = h, h + rows  # the block's rows in the buffers
                zb = z[r0:r1]
                if x is not None:
                    np.subtract(x[r0:r1], center, out=zb)
                    np.divide(zb, sigma, out=zb)  # an overflow is skipped like a NaN
                    total += np.add.reduce(zb, axis=0)  # a NaN or inf poisons the sum
                for a in self.thresholds:
                    np.greater(zb, a, out=flags["gt", a][lo:hi])
                    np.less(zb, -a, out=flags["lt", a][lo:hi])
                if d is not None:
                    if r0 == 0:
                        np.subtract(z[0], self.hist[h - 1], out=d[h])
                        np.subtract(z[1:r1], z[: r1 - 1], out=d[h + 1 : hi])
                    else:
                        np.subtract(zb, z[r0 - 1 : r1 - 1], out=d[lo:hi])
                    np.greater(d[lo:hi], 0.0, out=flags["up", 0.0][lo:hi])
                    np.less(d[lo:hi], 0.0, out=flags["down", 0.0][lo:hi])
                    if ("alt", 0.0) in flags:
                        prod = d[lo:hi] * d[lo - 1 : hi - 1]
                        np.less(prod, 0.0, out=flags["alt", 0.0][lo:hi])
                for key in flags:
                    if key[0] == "in":
                        a = key[1]
                        dst = flags[key][lo:hi]
                        np.bitwise_or(flags["gt", a][lo:hi], flags["lt", a][lo:hi], out=dst)
                        np.logical_not(dst, out=dst)
                    elif key[0] == "out":
                        a = key[1]
                        dst = flags[key][lo:hi]
                        np.bitwise_or(flags["gt", a][lo:hi], flags["lt", a][lo:hi], out=dst)
                a_lo, a_hi, t8 = acc[:rows], acc_hi[:rows], tmp[:rows]
                a_lo[...] = 0
                if self.high:
                    a_hi[...] = 0
                for (kind, points, a, hits), bit in self.rules:
                    hit = self._hit(kind, points, a, hits, lo, hi)
                    target = a_hi if bit >= 8 else a_lo
                    np.multiply(hit.view(np.uint8), np.uint8(1 << (bit % 8)), out=t8)
                    np.add(target, t8, out=target)
                fb = fired[r0:r1]
                if self.high:
                    np.copyto(fb, a_hi)
                    np.multiply(fb, np.uint16(256), out=fb)
                    np.add(fb, a_lo, out=fb)
                else:
                    np.copyto(fb, a_lo)
                sb = signal[r0:r1]
                np.subtract(
                    flags["gt", 0.0][lo:hi].view(np.int8),
                    flags["lt", 0.0][lo:hi].view(np.int8),
                    out=sb,
                )
                nz = np.not_equal(fb, 0)
                if unsided:
                    sh = np.not_equal(fb & sided, 0)
                    np.multiply(sb, sh.view(np.int8), out=sb)
                    np.add(sb, (nz & ~sh).view(np.int8), out=sb)
                else:
                    np.multiply(sb, nz.view(np.int8), out=sb)
                if r1 < t_len:
                    for f in flags.values():
                        f[:h] = f[rows : rows + h]
                    if d is not None:
                        d[:h] = d[rows : rows + h]
        out: BoolArray = ~np.isfinite(total)
        return out

    def _hit(self, kind: str, points: int, a: float, hits: int, lo: int, hi: int) -> BoolArray:
        """Where one rule fires on the extended rows ``lo:hi``."""
        flags = self.flags
        if kind == "beyond":
            return _k_of_m(flags["gt", a], points, hits, lo, hi) | _k_of_m(
                flags["lt", a], points, hits, lo, hi
            )
        if kind == "side":
            return _all_of(flags["gt", a], points, lo, hi) | _all_of(flags["lt", a], points, lo, hi)
        if kind == "trend":
            return _all_of(flags["up", 0.0], points - 1, lo, hi) | _all_of(
                flags["down", 0.0], points - 1, lo, hi
            )
        if kind == "alternate":
            return _all_of(flags["alt", 0.0], points - 2, lo, hi)
        if kind == "within":
            return _all_of(flags["in", a], points, lo, hi)
        return _all_of(flags["out", a], points, lo, hi)


def _all_of(flag: BoolArray, n: int, lo: int, hi: int) -> BoolArray:
    """Rows ``lo:hi`` where ``flag`` holds on the row and the ``n - 1`` rows before it.

    Windows double (``w`` rows, then ``2w``) and two overlapping power-of-two windows cover
    the rest, so a run of ``n`` costs about ``log2(n) + 1`` passes instead of ``n``.
    """
    a = flag[lo - (n - 1) : hi]
    w = 1
    while 2 * w <= n:
        a = a[w:] & a[:-w]
        w *= 2
    if w < n:
        a = a[n - w :] & a[: -(n - w)]
    return a


def _k_of_m(flag: BoolArray, points: int, hits: int, lo: int, hi: int) -> BoolArray:
    """Rows ``lo:hi`` where ``flag`` holds and on at least ``hits`` of the last ``points``."""
    cur = flag[lo:hi]
    if hits <= 1:
        return cur
    count = cur.view(np.int8).copy()
    for k in range(1, points):
        count += flag[lo - k : hi - k].view(np.int8)
    out: BoolArray = cur & (count >= hits)
    return out


def _run_at_least(flag: BoolArray, pos: IntArray, dist: IntArray, n: int) -> BoolArray:
    """Whether ``flag`` holds for the last ``n`` positions, all within the segment."""
    last_false = np.maximum.accumulate(np.where(flag, np.int32(-1), pos), axis=0)
    out: BoolArray = (pos - last_false >= n) & (dist >= n - 1)
    return out


def _count(flag: BoolArray, dist: IntArray, width: int) -> npt.NDArray[np.int8]:
    """How many of the last ``width`` positions (within the segment) have ``flag``."""
    out = flag.astype(np.int8)
    for k in range(1, width):
        out[k:] += flag[:-k] & (dist[k:] >= k)
    return out


def _steps(zc: FloatArray, dist: IntArray) -> FloatArray:
    """``z[p] - z[p-1]``, NaN where ``p`` opens its segment."""
    d = np.full_like(zc, np.nan)
    d[1:] = np.where(dist[1:] >= 1, zc[1:] - zc[:-1], np.nan)
    return d


def _evaluate(name: str, zc: FloatArray, pos: IntArray, dist: IntArray) -> BoolArray:
    """Where rule ``name`` fires, over compacted positions."""
    kind, points, a, hits = _SPECS[name]
    out: BoolArray
    if kind == "beyond":
        up, down = zc > a, zc < -a
        out = (up & (_count(up, dist, points) >= hits)) | (
            down & (_count(down, dist, points) >= hits)
        )
    elif kind == "side":
        out = _run_at_least(zc > 0.0, pos, dist, points) | _run_at_least(
            zc < 0.0, pos, dist, points
        )
    elif kind == "trend":
        d = _steps(zc, dist)
        out = _run_at_least(d > 0.0, pos, dist, points - 1) | _run_at_least(
            d < 0.0, pos, dist, points - 1
        )
    elif kind == "alternate":
        d = _steps(zc, dist)
        alt = np.zeros(zc.shape, dtype=np.bool_)
        alt[1:] = d[1:] * d[:-1] < 0.0
        out = _run_at_least(alt, pos, dist, points - 2)
    elif kind == "within":
        out = _run_at_least(np.abs(zc) <= a, pos, dist, points)
    else:
        out = _run_at_least(np.abs(zc) > a, pos, dist, points)
    return out
