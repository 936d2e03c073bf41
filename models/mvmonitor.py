"""Streaming multivariate monitoring of one station: T2, SPE and isolation scores per sample, with
the variables behind every alarm.

A station's variables (dryer zones, web speed, NMP exhaust; or a formation channel's voltage,
temperature and capacity) often drift together before any one of them leaves its own limits.
`MvMonitor` scores chunks shaped ``(time, variables)`` against a fitted `models.mvmodel.MvModel`
with numpy alone, so it runs on a gateway; fitting lives on the server (``server.mvfit``).

Per row it returns the plotted statistics, a signal bit per statistic, and for each alarm the
contribution of every variable to the statistic that fired:

* SPE: the squared residual of each variable (summed over its lagged copies); the contributions
  add up to SPE, all >= 0. A large share says *this variable broke the usual correlation*.
* T2: ``z_j * (S^-1 z)_j`` for Hotelling, ``z_j * sum_i t_i p_ji / lambda_i`` for PCA (the
  "complete decomposition"); they add up to T2 but may be negative. A large positive share says
  *this variable is far out along the usual directions of variation*.

When a statistic is EWMA-smoothed, its per-variable contributions are smoothed with it, so they
still add up to the plotted value and name the variables that accumulated the excess.

Missing data: a row where any variable is NaN or infinite (a dropped reading, a bad-quality
value the caller turned into NaN) is skipped: its statistics are NaN, it moves no state, it is
not part of any lag window, and it is counted in ``skipped``; ``missing`` counts, per variable,
the values that caused it. A dynamic model needs ``lags`` usable rows before its first score;
those rows are counted in ``warmup``. Chunking does not change results beyond floating-point
rounding of the matrix products.

References: MacGregor & Kourti (1995), Control Eng. Practice 3(3) (T2, SPE, contributions);
Westerhuis, Gurden & Smilde (2000), Chemometrics Intell. Lab. Syst. 51 (T2 contributions);
Ku, Storer & Georgakis (1995), Chemometrics Intell. Lab. Syst. 30 (dynamic PCA).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.detector import FloatArray, as_chunk
from models.mvmodel import MvModel

__all__ = ["Contribution", "MvAlarm", "MvMonitor", "MvResult"]

IntArray = npt.NDArray[np.int64]
#: Per-variable contributions of the selected scored rows, shaped (rows, variables).
Parts = Callable[[npt.NDArray[np.intp]], FloatArray]


@dataclass(frozen=True, slots=True)
class MvResult:
    """Scores of one chunk. Per-row arrays are ``(time,)``; contributions ``(time, variables)``.

    ``t2``, ``spe`` and ``iso`` are the plotted statistics (EWMA-smoothed where the model says
    so), NaN on skipped and warm-up rows and for a statistic the model does not have. ``signal``
    has bit 0 (`MvMonitor.T2`) for T2, bit 1 (`MvMonitor.SPE`) for SPE and bit 2
    (`MvMonitor.ISO`) for the isolation score. ``t2_contrib``/``spe_contrib`` hold each
    variable's contribution on rows where that statistic signalled, 0 elsewhere. ``skipped``
    counts rows with a missing value, ``warmup`` rows that only filled the lag window, and
    ``missing`` (``(variables,)``) the non-finite values per variable.
    """

    t2: FloatArray
    spe: FloatArray
    iso: FloatArray
    signal: npt.NDArray[np.uint8]
    t2_contrib: FloatArray
    spe_contrib: FloatArray
    skipped: int
    warmup: int
    missing: IntArray


@dataclass(frozen=True, slots=True)
class Contribution:
    """One variable's part in an alarm: its contribution and share of the statistic."""

    variable: str
    unit: str
    value: float
    share: float


@dataclass(frozen=True, slots=True)
class MvAlarm:
    """An alarm row (index within the chunk), the statistics that fired and the top variables
    for each (empty for a statistic that did not fire; the isolation score has none)."""

    row: int
    statistics: tuple[str, ...]
    t2_top: tuple[Contribution, ...]
    spe_top: tuple[Contribution, ...]


class MvMonitor:
    """Phase II scoring of ``(time, variables)`` chunks against a fitted `MvModel`.

    Examples:
        >>> import numpy as np
        >>> from models.mvmodel import MvModel
        >>> model = MvModel(  # x and y move together; the model plane is x = y
        ...     kind="pca", variables=("x", "y"), units=("V", "V"), lags=0,
        ...     mean=np.zeros(2), scale=np.ones(2),
        ...     loadings=np.array([[1.0], [1.0]]) / np.sqrt(2.0), eigenvalues=np.array([2.0]),
        ...     precision=np.zeros((0, 0)), t2_limit=9.0, spe_limit=1.0, t2_lam=1.0,
        ...     spe_lam=1.0, t2_center=np.array([0.5, 0.5]), spe_center=np.array([0.0, 0.0]))
        >>> mon = MvMonitor(model)
        >>> res = mon.update([[1.0, 1.0], [1.0, -1.0], [np.nan, 0.0]])
        >>> res.spe.round(3).tolist(), res.signal.tolist(), res.skipped
        ([0.0, 2.0, nan], [0, 2, 0], 1)
        >>> [(a.row, a.statistics, [c.variable for c in a.spe_top]) for a in mon.alarms(res)]
        [(1, ('SPE',), ['x', 'y'])]
    """

    T2 = 1
    SPE = 2
    ISO = 4

    def __init__(self, model: MvModel) -> None:
        self.model = model
        self._p = len(model.variables)
        self._history: FloatArray = np.empty((0, self._p))
        self._t2_state: FloatArray = model.t2_center.copy()
        self._spe_state: FloatArray = model.spe_center.copy()
        self._inv_ev: FloatArray = 1.0 / model.eigenvalues if model.kind == "pca" else np.empty(0)

    def reset(self) -> None:
        """Forget the lag window and the EWMA states; keep the model."""
        self._history = np.empty((0, self._p))
        self._t2_state = self.model.t2_center.copy()
        self._spe_state = self.model.spe_center.copy()

    def update(self, chunk: npt.ArrayLike) -> MvResult:
        """Score a chunk shaped ``(time, variables)`` in the model's variable order."""
        m = self.model
        p = self._p
        x = as_chunk(chunk, "chunk", p)
        t = x.shape[0]
        ok = np.isfinite(x)
        good = ok.all(axis=1)
        missing = (t - ok.sum(axis=0)).astype(np.int64)
        rows = np.flatnonzero(good)
        usable = x[rows]
        lags = m.lags
        h0 = self._history.shape[0]
        first = min(usable.shape[0], max(0, lags - h0))
        scored = rows[first:]
        if lags:
            hist = np.concatenate([self._history, usable], axis=0)
            n = hist.shape[0]
            start = h0 + first
            lagged = np.concatenate([hist[start - j : n - j] for j in range(lags + 1)], axis=1)
            self._history = hist[-lags:].copy()
        else:
            lagged = usable
        z = (lagged - m.mean) / m.scale

        t2 = np.full(t, np.nan)
        spe = np.full(t, np.nan)
        iso = np.full(t, np.nan)
        signal = np.zeros(t, dtype=np.uint8)
        t2_contrib = np.zeros((t, p))
        spe_contrib = np.zeros((t, p))
        if scored.size:
            self._score(z, scored, t2, spe, t2_contrib, spe_contrib, signal)
            if m.iforest is not None:
                iso[scored] = m.iforest.score(z)
                signal[scored] |= np.where(iso[scored] > m.iso_limit, self.ISO, 0).astype(np.uint8)
        return MvResult(
            t2=t2,
            spe=spe,
            iso=iso,
            signal=signal,
            t2_contrib=t2_contrib,
            spe_contrib=spe_contrib,
            skipped=int(t - rows.size),
            warmup=int(first),
            missing=missing,
        )

    def _score(
        self,
        z: FloatArray,
        scored: npt.NDArray[np.intp],
        t2: FloatArray,
        spe: FloatArray,
        t2_contrib: FloatArray,
        spe_contrib: FloatArray,
        signal: npt.NDArray[np.uint8],
    ) -> None:
        m = self.model
        if m.kind == "pca":
            scores = z @ m.loadings
            weighted = scores * self._inv_ev
            raw_t2 = np.einsum("ij,ij->i", scores, weighted)
            resid = z - scores @ m.loadings.T
            raw_spe = np.einsum("ij,ij->i", resid, resid)

            def t2_parts(sel: npt.NDArray[np.intp]) -> FloatArray:
                return self._fold(z[sel] * (weighted[sel] @ m.loadings.T))

            def spe_parts(sel: npt.NDArray[np.intp]) -> FloatArray:
                r = resid[sel]
                return self._fold(r * r)

            self._spe_state = self._statistic(
                raw_spe,
                spe_parts,
                m.spe_lam,
                self._spe_state,
                m.spe_limit,
                self.SPE,
                scored,
                spe,
                spe_contrib,
                signal,
            )
        else:
            w = z @ m.precision
            raw_t2 = np.einsum("ij,ij->i", z, w)

            def t2_parts(sel: npt.NDArray[np.intp]) -> FloatArray:
                return self._fold(z[sel] * w[sel])

        self._t2_state = self._statistic(
            raw_t2,
            t2_parts,
            m.t2_lam,
            self._t2_state,
            m.t2_limit,
            self.T2,
            scored,
            t2,
            t2_contrib,
            signal,
        )

    def _statistic(
        self,
        raw: FloatArray,
        parts: Parts,
        lam: float,
        state: FloatArray,
        limit: float,
        bit: int,
        scored: npt.NDArray[np.intp],
        out: FloatArray,
        contrib: FloatArray,
        signal: npt.NDArray[np.uint8],
    ) -> FloatArray:
        """Plot ``raw`` (or its EWMA), signal above ``limit``, fill contributions of alarms.

        Returns the EWMA state after the chunk (``state`` itself when not smoothed).
        """
        if lam >= 1.0:
            out[scored] = raw
            hit = np.flatnonzero(raw > limit)
            if hit.size:
                contrib[scored[hit]] = parts(hit)
        else:
            every = parts(np.arange(raw.shape[0]))
            smooth = np.empty_like(every)
            z = state
            keep = 1.0 - lam
            np.multiply(every, lam, out=every)
            for i in range(every.shape[0]):
                row = smooth[i]
                np.multiply(z, keep, out=row)
                np.add(row, every[i], out=row)
                z = row
            state = z.copy()
            total = smooth.sum(axis=1)
            out[scored] = total
            hit = np.flatnonzero(total > limit)
            contrib[scored[hit]] = smooth[hit]
        signal[scored] |= np.where(out[scored] > limit, bit, 0).astype(np.uint8)
        return state

    def _fold(self, c: FloatArray) -> FloatArray:
        """Per lagged column -> per variable: add each variable's lagged copies."""
        if self.model.lags == 0:
            return c
        folded: FloatArray = c.reshape(c.shape[0], self.model.lags + 1, self._p).sum(axis=1)
        return folded

    def top(self, contributions: npt.ArrayLike, k: int = 3) -> tuple[Contribution, ...]:
        """The ``k`` largest contributions of one row, largest first, with their shares.

        Shares are of the row's total (the statistic); T2 contributions can be negative, so
        shares need not lie in [0, 1].
        """
        c = np.asarray(contributions, dtype=np.float64).ravel()
        if c.shape != (self._p,):
            raise ValueError(f"contributions must have {self._p} values, got {c.shape}")
        total = float(c.sum())
        order = np.argsort(-c, kind="stable")[: max(0, k)]
        m = self.model
        return tuple(
            Contribution(
                variable=m.variables[j],
                unit=m.units[j],
                value=float(c[j]),
                share=float(c[j] / total) if total else 0.0,
            )
            for j in order
        )

    def alarms(self, result: MvResult, k: int = 3) -> list[MvAlarm]:
        """Every signalling row of ``result`` with the statistics that fired and top variables."""
        out: list[MvAlarm] = []
        for i in np.flatnonzero(result.signal):
            bits = int(result.signal[i])
            names = tuple(
                name
                for name, bit in (("T2", self.T2), ("SPE", self.SPE), ("ISO", self.ISO))
                if bits & bit
            )
            out.append(
                MvAlarm(
                    row=int(i),
                    statistics=names,
                    t2_top=self.top(result.t2_contrib[i], k) if bits & self.T2 else (),
                    spe_top=self.top(result.spe_contrib[i], k) if bits & self.SPE else (),
                )
            )
        return out
