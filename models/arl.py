"""Average run lengths (ARL) of Shewhart, EWMA and CUSUM designs: the chart design tool.

A chart's limits are a trade between false alarms (in-control ARL0, the mean number of samples
until a signal when nothing changed) and detection delay (ARL1 after a sustained mean shift).
Choosing ``L``, ``lam``, ``k`` or ``h`` by feel gives charts that either cry wolf every shift or
sleep through a drifting coater, so this module computes the ARL of a design exactly where the
literature has an exact method, simulates it where it has not, and solves for the limit that
gives a wanted ARL0:

* Shewhart individuals with L-sigma limits and any subset of the Western Electric zone rules
  (and two Nelson run rules): the exact finite Markov chain of Champ & Woodall (1987), whose
  states remember just enough recent history for the enabled rules.
* EWMA with fixed asymptotic limits and the one-sided CUSUMs: the Markov-chain approximation of
  Brook & Evans (1972) / Lucas & Saccucci (1990), computed at two resolutions and Richardson
  extrapolated (the discretization error falls like 1/N^2), so tables are reproduced to their
  printed precision. Two-sided CUSUMs combine as 1/ARL = 1/ARL+ + 1/ARL- (Lucas & Crosier).
* Anything else (notably EWMA with the exact time-varying limits that `models.ewma.Ewma` uses by
  default) by a seeded Monte-Carlo simulation, vectorized over runs, that reports its standard
  error and how many runs were censored by the step budget.

All ARLs are zero-state (the chart starts fresh when the shift is already present) and shifts
are in units of the process sigma. The Shewhart chain and the simulation need only numpy, so
they run on a gateway; the EWMA/CUSUM chains and the solvers import scipy (present on server and
test installs, not on gateways) inside the functions that need it.

References: Montgomery, *Introduction to Statistical Quality Control*, 8th ed., sections 6.2.4
(run rules), 9.1.3 (CUSUM ARL) and 9.2.2 (EWMA design); Champ & Woodall (1987), Technometrics
29:393-399; Brook & Evans (1972), Biometrika 59:539-548; Lucas & Crosier (1982), Technometrics
24:199-205; Lucas & Saccucci (1990), Technometrics 32:1-12; Western Electric (1956); Nelson (1984),
Journal of Quality Technology 16:237-239.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import cast

import numpy as np
import numpy.typing as npt

from models.params import ParameterError, check_choice, check_float, check_int
from models.runrules import RunRules

__all__ = [
    "RULES",
    "has_chain",
    "ArlResult",
    "CusumDesign",
    "Design",
    "EwmaDesign",
    "ShewhartDesign",
    "arl",
    "markov_arl",
    "simulate_arl",
    "solve_design",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: Rule names a Shewhart design accepts: every rule `models.runrules.RunRules` knows. Zones are
#: thirds of the limit distance (1, 2, 3 sigma for L = 3). The zone rules (we1-we4, nelson1,
#: nelson2, nelson5-nelson7) have an exact Markov chain; nelson3 (6 in a row trending),
#: nelson4 (14 alternating) and nelson8 (8 in a row beyond 1 sigma on either side) depend on
#: the values' order or mix both sides, so their ARLs are simulated with `RunRules` (L = 3).
RULES: tuple[str, ...] = RunRules.RULES

#: Nelson rules that are the same test as a Western Electric rule.
_ALIASES = {"nelson1": "we1", "nelson5": "we2", "nelson6": "we3"}

# Zone categories of one standardized point, with z = L / 3:
# 0: x < -3z, 1: (-3z, -2z), 2: (-2z, -z), 3: (-z, 0), 4: (0, z), 5: (z, 2z), 6: (2z, 3z),
# 7: x > 3z. Each rule is one or two "k of the last m points fall in a set of zones" clauses
# (one per side), which is how Champ & Woodall write every zone rule.
_CLAUSES: dict[str, tuple[tuple[int, int, frozenset[int]], ...]] = {
    "we1": ((1, 1, frozenset({7})), (1, 1, frozenset({0}))),
    "we2": ((2, 3, frozenset({6, 7})), (2, 3, frozenset({0, 1}))),
    "we3": ((4, 5, frozenset({5, 6, 7})), (4, 5, frozenset({0, 1, 2}))),
    "we4": ((8, 8, frozenset({4, 5, 6, 7})), (8, 8, frozenset({0, 1, 2, 3}))),
    "nelson2": ((9, 9, frozenset({4, 5, 6, 7})), (9, 9, frozenset({0, 1, 2, 3}))),
    "nelson7": ((15, 15, frozenset({3, 4})),),
}
_N_ZONES = 8

_SHEWHART = "zero-state, L-sigma limits, zones at L/3 steps"
_EWMA_ASYMPTOTIC = "zero-state, fixed asymptotic limits"
_EWMA_EXACT = "zero-state, exact time-varying limits"
_CUSUM_MARKOV = "zero-state, no head start, 1/ARL = 1/ARL+ + 1/ARL-"
_CUSUM_SIMULATED = "zero-state, no head start, two-sided scheme run directly"


@dataclass(frozen=True, slots=True)
class ShewhartDesign:
    """Individuals chart with limits at ``+/- L`` sigma and the named zone/run rules.

    Parameters:
        L: limit distance in sigma, > 0; the rule zones sit at L/3 and 2L/3.
        rules: names from `RULES`, at least one; ``("we1",)`` is the plain Shewhart chart.

    Examples:
        >>> d = ShewhartDesign(rules=("we1", "we2", "we3", "we4"))
        >>> round(markov_arl(d).arl, 2)
        91.75

    References: Montgomery (8th ed.) section 6.2.4; Western Electric (1956); Nelson (1984);
    Champ & Woodall (1987).
    """

    L: float = 3.0
    rules: tuple[str, ...] = ("we1",)

    def __post_init__(self) -> None:
        check_float("ShewhartDesign", "L", self.L, 0.0, low_open=True)
        if isinstance(self.rules, str) or not self.rules:
            raise ParameterError(
                "The 'rules' parameter of ShewhartDesign must be a non-empty tuple of rule "
                f"names. Got {self.rules!r} instead."
            )
        for r in self.rules:
            check_choice("ShewhartDesign", "rules", r, RULES)


@dataclass(frozen=True, slots=True)
class EwmaDesign:
    """EWMA chart ``z_t = lam x_t + (1 - lam) z_{t-1}`` with limits ``+/- L sigma_z``.

    Parameters:
        lam: smoothing weight in (0, 1]; 1 is the Shewhart individuals chart.
        L: limit width in units of the statistic's (asymptotic) standard deviation, > 0.
        limits: ``"asymptotic"`` (the tables' convention, exact Markov chain) or ``"exact"``
            (time-varying, as `models.ewma.Ewma` does by default; simulated).

    Examples:
        >>> round(markov_arl(EwmaDesign(lam=0.2, L=2.962), shift=1.0).arl, 2)
        10.54

    References: Montgomery (8th ed.) section 9.2.2, Table 9.11; Lucas & Saccucci (1990).
    """

    lam: float = 0.2
    L: float = 3.0
    limits: str = "asymptotic"

    def __post_init__(self) -> None:
        check_float("EwmaDesign", "lam", self.lam, 0.0, 1.0, low_open=True)
        check_float("EwmaDesign", "L", self.L, 0.0, low_open=True)
        check_choice("EwmaDesign", "limits", self.limits, ("asymptotic", "exact"))


@dataclass(frozen=True, slots=True)
class CusumDesign:
    """Two-sided tabular CUSUM with reference value ``k`` and decision interval ``h`` (sigma).

    Parameters:
        k: reference value (allowance), >= 0; half the shift to detect fastest.
        h: decision interval, > 0.

    Examples:
        >>> round(markov_arl(CusumDesign(k=0.5, h=4.0), shift=1.0).arl, 2)
        8.38

    References: Montgomery (8th ed.) section 9.1.3, Table 9.3; Lucas & Crosier (1982);
    Brook & Evans (1972).
    """

    k: float = 0.5
    h: float = 5.0

    def __post_init__(self) -> None:
        check_float("CusumDesign", "k", self.k, 0.0)
        check_float("CusumDesign", "h", self.h, 0.0, low_open=True)


Design = ShewhartDesign | EwmaDesign | CusumDesign


@dataclass(frozen=True, slots=True)
class ArlResult:
    """An ARL and how it was obtained.

    Fields:
        arl: the zero-state average run length (a lower bound if ``censored`` > 0).
        se: Monte-Carlo standard error ``sd / sqrt(runs)``; 0 for the Markov chains.
        method: ``"markov"`` or ``"simulation"``.
        convention: what the number means (start state, limits, two-sided combination).
        numerical_error: Markov chains only: the distance between the extrapolated value and
            the finer chain, a conservative size of the discretization error (0 when the chain
            is exact).
        states: Markov states of the finer chain (0 for simulation).
        runs: simulated runs (0 for Markov chains).
        censored: runs that had not signalled when the step budget ran out; they count with
            the budget as their run length, so ``arl`` is then a lower bound.

    Examples:
        >>> res = markov_arl(ShewhartDesign(), shift=0.0)
        >>> round(res.arl, 2), res.se, res.method
        (370.4, 0.0, 'markov')

    References: Champ & Woodall (1987); Brook & Evans (1972).
    """

    arl: float
    se: float
    method: str
    convention: str
    numerical_error: float = 0.0
    states: int = 0
    runs: int = 0
    censored: int = 0


# -- exact methods -----------------------------------------------------------------------------


def markov_arl(design: Design, shift: float = 0.0, *, states: int = 151) -> ArlResult:
    """Zero-state ARL of ``design`` under a mean ``shift`` (sigma units) by a Markov chain.

    ``states`` is the resolution of the coarser EWMA/CUSUM chain; a second chain with about
    twice as many states is solved and the two are Richardson extrapolated. Shewhart charts use
    the exact finite chain and ignore ``states``. Raises `ParameterError` for EWMA with exact
    (time-varying) limits, which have no time-homogeneous chain: simulate those.

    Examples:
        >>> round(markov_arl(CusumDesign(k=0.5, h=5.0)).arl)
        465
    """
    shift = check_float("markov_arl", "shift", shift)
    states = check_int("markov_arl", "states", states, 11, 4001)
    with _one_blas_thread():
        return _markov_arl(design, shift, states)


def _markov_arl(design: Design, shift: float, states: int) -> ArlResult:
    if isinstance(design, ShewhartDesign):
        if not has_chain(design):
            raise ParameterError(
                "The 'rules' parameter of markov_arl's ShewhartDesign must be zone rules with a "
                f"Markov chain ({', '.join(_CLAUSES)} or their Nelson aliases); simulate the "
                f"others. Got {design.rules!r} instead."
            )
        value, n = _shewhart_chain_arl(design.L, _rule_key(design.rules), shift)
        return ArlResult(value, 0.0, "markov", _SHEWHART, 0.0, n)
    if isinstance(design, EwmaDesign):
        if design.limits != "asymptotic":
            raise ParameterError(
                "The 'limits' parameter of markov_arl's EwmaDesign must be 'asymptotic' (exact "
                "time-varying limits have no homogeneous Markov chain; use simulate_arl). "
                f"Got {design.limits!r} instead."
            )
        h = design.L * math.sqrt(design.lam / (2.0 - design.lam))
        # Keep several states per standard deviation of the one-step kernel (lam) for small lam.
        n1 = min(max(states, math.ceil(16.0 * h / design.lam)), 1501) | 1
        n2 = 2 * n1 - 1
        lam = design.lam
        a1 = _ewma_chain(lam, h, shift, n1)
        a2 = _ewma_chain(lam, h, shift, n2)
        value = _richardson(a1, a2, n1, n2)
        return ArlResult(value, 0.0, "markov", _EWMA_ASYMPTOTIC, abs(value - a2), n2)
    if isinstance(design, CusumDesign):
        # Keep the cells well below the one-step spread (sigma = 1) for wide intervals.
        n1 = min(max(states, math.ceil(16.0 * design.h)), 1500)
        n2 = 2 * n1
        k, h = design.k, design.h
        # Lower CUSUM under +shift is the upper CUSUM under -shift.
        up1, up2 = _cusum_chain(k, h, shift, n1), _cusum_chain(k, h, shift, n2)
        if shift == 0.0:
            down1, down2 = up1, up2
        else:
            down1, down2 = _cusum_chain(k, h, -shift, n1), _cusum_chain(k, h, -shift, n2)
        up, down = _richardson(up1, up2, n1, n2), _richardson(down1, down2, n1, n2)
        value = 1.0 / (1.0 / up + 1.0 / down)
        fine = 1.0 / (1.0 / up2 + 1.0 / down2)
        return ArlResult(value, 0.0, "markov", _CUSUM_MARKOV, abs(value - fine), n2 + 1)
    raise TypeError(f"design must be a ShewhartDesign, EwmaDesign or CusumDesign, got {design!r}")


def _one_blas_thread() -> AbstractContextManager[object]:
    """Run BLAS single-threaded while solving chains of a few hundred states.

    At this size a threaded LAPACK solve spends its time waking threads; on a busy two-core
    server it was fifty times slower than one thread. threadpoolctl comes with the server
    install; without it the chains still work, only slower on busy machines.
    """
    try:
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]
    except ImportError:
        return nullcontext()
    return cast(AbstractContextManager[object], threadpool_limits(limits=1, user_api="blas"))


def _richardson(a1: float, a2: float, n1: int, n2: int) -> float:
    """Extrapolate two chain values whose error is c / N^2 to N = infinity."""
    return (n2 * n2 * a2 - n1 * n1 * a1) / (n2 * n2 - n1 * n1)


def _phi(x: float) -> float:
    """Standard normal CDF, accurate in both tails."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _zone_probabilities(L: float, shift: float) -> FloatArray:  # noqa: N803
    """Probability of each of the eight zones for one point ~ N(shift, 1)."""
    z = L / 3.0
    edges = [-math.inf, -3 * z, -2 * z, -z, 0.0, z, 2 * z, 3 * z, math.inf]
    p = np.empty(_N_ZONES)
    for c in range(_N_ZONES):
        lo, hi = edges[c] - shift, edges[c + 1] - shift
        # Difference the tail on the side away from the mean, so small zones keep their digits.
        p[c] = _phi(hi) - _phi(lo) if hi <= 0.0 else _phi(-lo) - _phi(-hi)
    return p


def _rule_key(rules: tuple[str, ...]) -> tuple[str, ...]:
    """The rules as Markov-chain clauses: aliases folded, in one canonical order."""
    wanted = {_ALIASES.get(r, r) for r in rules}
    return tuple(r for r in _CLAUSES if r in wanted)


def has_chain(design: ShewhartDesign) -> bool:
    """True when every rule of ``design`` is a zone rule with an exact Markov chain."""
    return all(_ALIASES.get(r, r) in _CLAUSES for r in design.rules)


@lru_cache(maxsize=32)
def _rule_automaton(rules: tuple[str, ...]) -> npt.NDArray[np.int64]:
    """Transition table ``next[state, zone]`` of the rules' history automaton; -1 = signal.

    A state holds one integer per one-sided clause "k of the last m points in zones S": the
    current run of hits when k = m, else the bit pattern of hits among the last m - 1 points.
    States are enumerated breadth-first from the empty history, so only reachable histories
    become states (555 for we1-we4).
    """
    clauses = [c for r in rules for c in _CLAUSES[r]]
    start = tuple(0 for _ in clauses)
    index: dict[tuple[int, ...], int] = {start: 0}
    order: list[tuple[int, ...]] = [start]
    table: list[list[int]] = []
    i = 0
    while i < len(order):
        row: list[int] = []
        for zone in range(_N_ZONES):
            nxt: list[int] = []
            fired = False
            for (k, m, zones), sub in zip(clauses, order[i], strict=True):
                hit = int(zone in zones)
                if k == m:
                    run = sub + 1 if hit else 0
                    fired |= run >= m
                    nxt.append(run)
                else:
                    fired |= sub.bit_count() + hit >= k
                    nxt.append(((sub << 1) | hit) & ((1 << (m - 1)) - 1))
            if fired:
                row.append(-1)
                continue
            key = tuple(nxt)
            if key not in index:
                index[key] = len(order)
                order.append(key)
            row.append(index[key])
        table.append(row)
        i += 1
    return np.array(table, dtype=np.int64)


def _shewhart_chain_arl(L: float, rules: tuple[str, ...], shift: float) -> tuple[float, int]:  # noqa: N803
    nxt = _rule_automaton(rules)
    p = _zone_probabilities(L, shift)
    n = nxt.shape[0]
    q = np.zeros((n, n))
    rows = np.repeat(np.arange(n), _N_ZONES)
    cols = nxt.ravel()
    probs = np.tile(p, n)
    keep = cols >= 0
    np.add.at(q, (rows[keep], cols[keep]), probs[keep])
    arl = np.linalg.solve(np.eye(n) - q, np.ones(n))
    return float(arl[0]), n


def _ewma_chain(lam: float, h: float, shift: float, n: int) -> float:
    """Brook & Evans chain on (-h, h) with n (odd) cells; start in the middle cell (z = 0)."""
    from scipy.special import ndtr  # type: ignore[import-untyped]

    w = 2.0 * h / n
    mid = -h + (np.arange(n) + 0.5) * w
    base = (1.0 - lam) * mid[:, None]
    cdf = np.asarray(ndtr((mid[None, :] + 0.5 * w - base) / lam - shift), dtype=np.float64)
    low = np.asarray(ndtr((mid[None, :] - 0.5 * w - base) / lam - shift), dtype=np.float64)
    return _solve_start(cdf - low, n // 2)


def _cusum_chain(k: float, h: float, shift: float, n: int) -> float:
    """Upper one-sided CUSUM: an exact atom at 0 plus n cells on (0, h]; starts at 0."""
    from scipy.special import ndtr

    w = h / n
    value = np.concatenate([[0.0], (np.arange(1, n + 1) - 0.5) * w])
    edges = np.arange(n + 1) * w
    # P(next <= edge) with next = max(0, value + x - k), x ~ N(shift, 1).
    cdf = np.asarray(ndtr(edges[None, :] - value[:, None] + k - shift), dtype=np.float64)
    q = np.empty((n + 1, n + 1))
    q[:, 0] = cdf[:, 0]
    q[:, 1:] = np.diff(cdf, axis=1)
    return _solve_start(q, 0)


def _solve_start(q: FloatArray, start: int) -> float:
    n = q.shape[0]
    return float(np.linalg.solve(np.eye(n) - q, np.ones(n))[start])


# -- simulation --------------------------------------------------------------------------------


class _Stepper:
    """One chart's state for many simulated runs at once; ``step`` returns who signalled."""

    def step(self, x: FloatArray, t: int) -> BoolArray:
        raise NotImplementedError

    def keep(self, mask: BoolArray) -> None:
        raise NotImplementedError


class _ShewhartStepper(_Stepper):
    """Rules evaluated on a window of raw values (independent of the zone automaton)."""

    def __init__(self, design: ShewhartDesign, runs: int) -> None:
        z = design.L / 3.0
        # (k, m, low, high): k of the last m values in (low, high).
        self.clauses = [
            (k, m, _zone_low(zones) * z, _zone_high(zones) * z)
            for r in _rule_key(design.rules)
            for k, m, zones in _CLAUSES[r]
        ]
        self.width = max(m for _, m, _, _ in self.clauses)
        self.window = np.full((runs, self.width), np.nan)

    def step(self, x: FloatArray, t: int) -> BoolArray:
        w = self.window
        w[:, (t - 1) % self.width] = x
        fired = np.zeros(x.shape[0], dtype=bool)
        for k, m, low, high in self.clauses:
            cols = [(t - 1 - j) % self.width for j in range(min(m, t))]
            recent = w[:, cols]
            hits = np.sum((recent > low) & (recent < high), axis=1)
            fired |= hits >= k
        return fired

    def keep(self, mask: BoolArray) -> None:
        self.window = self.window[mask]


def _zone_low(zones: frozenset[int]) -> float:
    """Lower edge, in units of L/3, of a contiguous zone set."""
    return -math.inf if min(zones) == 0 else float(min(zones) - 4)


def _zone_high(zones: frozenset[int]) -> float:
    return math.inf if max(zones) == _N_ZONES - 1 else float(max(zones) - 3)


class _EwmaStepper(_Stepper):
    def __init__(self, design: EwmaDesign, runs: int) -> None:
        self.lam = design.lam
        self.width = design.L * math.sqrt(design.lam / (2.0 - design.lam))
        self.exact = design.limits == "exact"
        self.z = np.zeros(runs)

    def step(self, x: FloatArray, t: int) -> BoolArray:
        self.z = self.lam * x + (1.0 - self.lam) * self.z
        width = self.width
        if self.exact:
            width *= math.sqrt(1.0 - (1.0 - self.lam) ** (2 * t))
        out: BoolArray = np.abs(self.z) > width
        return out

    def keep(self, mask: BoolArray) -> None:
        self.z = self.z[mask]


class _CusumStepper(_Stepper):
    def __init__(self, design: CusumDesign, runs: int) -> None:
        self.k = design.k
        self.h = design.h
        self.up = np.zeros(runs)
        self.down = np.zeros(runs)

    def step(self, x: FloatArray, t: int) -> BoolArray:
        self.up = np.maximum(0.0, self.up + x - self.k)
        self.down = np.maximum(0.0, self.down - x - self.k)
        out: BoolArray = (self.up > self.h) | (self.down > self.h)
        return out

    def keep(self, mask: BoolArray) -> None:
        self.up = self.up[mask]
        self.down = self.down[mask]


def simulate_arl(
    design: Design,
    shift: float = 0.0,
    *,
    runs: int = 10_000,
    seed: int = 0,
    max_steps: int = 100_000,
) -> ArlResult:
    """Zero-state ARL by simulating ``runs`` independent charts at once (numpy only).

    Every run starts fresh with the shift present from the first sample; runs leave the batch
    as they signal. Runs still silent after ``max_steps`` samples are censored: they count with
    ``max_steps`` as their run length and are reported in ``censored`` (the ARL is then a lower
    bound; raise ``max_steps``). ``se`` is the sample standard deviation over ``sqrt(runs)``.

    Examples:
        >>> res = simulate_arl(ShewhartDesign(L=2.0), runs=2000, seed=1)
        >>> res.method, res.censored, abs(res.arl - 1 / 0.0455) < 4 * res.se
        ('simulation', 0, True)
    """
    shift = check_float("simulate_arl", "shift", shift)
    runs = check_int("simulate_arl", "runs", runs, 2)
    seed = check_int("simulate_arl", "seed", seed, 0)
    max_steps = check_int("simulate_arl", "max_steps", max_steps, 1)
    stepper: _Stepper
    if isinstance(design, ShewhartDesign) and not has_chain(design):
        return _simulate_run_rules(design, shift, runs, seed, max_steps)
    if isinstance(design, ShewhartDesign):
        stepper, convention = _ShewhartStepper(design, runs), _SHEWHART
    elif isinstance(design, EwmaDesign):
        exact = design.limits == "exact"
        stepper = _EwmaStepper(design, runs)
        convention = _EWMA_EXACT if exact else _EWMA_ASYMPTOTIC
    elif isinstance(design, CusumDesign):
        stepper, convention = _CusumStepper(design, runs), _CUSUM_SIMULATED
    else:
        raise TypeError(
            f"design must be a ShewhartDesign, EwmaDesign or CusumDesign, got {design!r}"
        )
    rng = np.random.default_rng(seed)
    length = np.full(runs, max_steps, dtype=np.int64)
    alive = np.arange(runs)
    t = 0
    # One Python iteration per time step, vectorized over the runs still alive.
    while alive.size and t < max_steps:
        t += 1
        fired = stepper.step(rng.standard_normal(alive.size) + shift, t)
        if fired.any():
            length[alive[fired]] = t
            stay = ~fired
            alive = alive[stay]
            stepper.keep(stay)
    mean = float(length.mean())
    se = float(length.std(ddof=1) / math.sqrt(runs))
    return ArlResult(mean, se, "simulation", convention, runs=runs, censored=int(alive.size))


def _simulate_run_rules(
    design: ShewhartDesign, shift: float, runs: int, seed: int, max_steps: int
) -> ArlResult:
    """Zero-state ARL of rules without a chain, running `RunRules` over blocks of samples.

    Each run is one column; all columns advance together block by block, and a run's length is
    its first signalling row. Only the 3-sigma zones of `RunRules` exist, hence L = 3.
    """
    if design.L != 3.0:
        raise ParameterError(
            "The 'L' parameter of ShewhartDesign must be 3.0 when the rules include "
            f"{', '.join(r for r in design.rules if _ALIASES.get(r, r) not in _CLAUSES)} "
            f"(simulated with 1, 2, 3 sigma zones). Got {design.L!r} instead."
        )
    rng = np.random.default_rng(seed)
    det = RunRules(rules=design.rules).fit_known(np.zeros(runs), np.ones(runs))
    length = np.full(runs, max_steps, dtype=np.int64)
    open_ = np.ones(runs, dtype=bool)
    t, block = 0, 256
    while open_.any() and t < max_steps:
        rows = min(block, max_steps - t)
        res = det.update(rng.standard_normal((rows, runs)) + shift)
        fired = res.signal != 0
        hit = fired.any(axis=0) & open_
        length[hit] = t + 1 + fired[:, hit].argmax(axis=0)
        open_ &= ~hit
        t += rows
        block = min(block * 2, 8192)
    mean = float(length.mean())
    se = float(length.std(ddof=1) / math.sqrt(runs))
    return ArlResult(mean, se, "simulation", _SHEWHART, runs=runs, censored=int(open_.sum()))


def arl(
    design: Design,
    shift: float = 0.0,
    *,
    runs: int = 10_000,
    seed: int = 0,
    max_steps: int = 100_000,
) -> ArlResult:
    """The exact Markov ARL where one exists, else a simulation (EWMA with exact limits).

    Examples:
        >>> arl(EwmaDesign(lam=0.2, L=3.0)).method
        'markov'
        >>> arl(EwmaDesign(lam=0.2, L=3.0, limits="exact"), shift=2.0, runs=500).method
        'simulation'
    """
    if (isinstance(design, EwmaDesign) and design.limits == "exact") or (
        isinstance(design, ShewhartDesign) and not has_chain(design)
    ):
        return simulate_arl(design, shift, runs=runs, seed=seed, max_steps=max_steps)
    return markov_arl(design, shift)


# -- solvers -----------------------------------------------------------------------------------


def solve_design(design: Design, target_arl0: float) -> Design:
    """``design`` with ``L`` (Shewhart, EWMA) or ``h`` (CUSUM) set so the in-control ARL is
    ``target_arl0``, found by Brent's method on the exact Markov ARL.

    Raises `ParameterError` if the target is not reachable (for example above the ARL0 of 255
    that rule we4 alone allows however wide the limits) or if the design has no exact method.

    Examples:
        >>> round(solve_design(EwmaDesign(lam=1.0), 370.4).L, 4)
        3.0
        >>> round(solve_design(CusumDesign(k=0.5), 465.0).h, 2)
        5.0
    """
    target = check_float("solve_design", "target_arl0", target_arl0, 1.0, low_open=True)
    if isinstance(design, EwmaDesign) and design.limits != "asymptotic":
        raise ParameterError(
            "The 'limits' parameter of solve_design's EwmaDesign must be 'asymptotic' (the "
            f"solver needs the exact Markov ARL). Got {design.limits!r} instead."
        )
    if isinstance(design, ShewhartDesign) and not has_chain(design):
        raise ParameterError(
            "The 'rules' parameter of solve_design's ShewhartDesign must be zone rules with a "
            f"Markov chain (the solver needs the exact ARL). Got {design.rules!r} instead."
        )
    name = "h" if isinstance(design, CusumDesign) else "L"

    def with_value(v: float) -> Design:
        if isinstance(design, CusumDesign):
            return replace(design, h=v)
        if isinstance(design, EwmaDesign):
            return replace(design, L=v)
        return replace(design, L=v)

    def gap(v: float) -> float:
        return math.log(markov_arl(with_value(v)).arl) - math.log(target)

    with _one_blas_thread():
        lo, hi = _bracket(gap, 1.0, 4.0, ceiling=40.0, target=target, name=name)
    from scipy.optimize import brentq  # type: ignore[import-untyped]

    with _one_blas_thread():
        root = float(brentq(gap, lo, hi, xtol=1e-10, rtol=1e-12))
    return with_value(root)


def _bracket(
    gap: Callable[[float], float],
    lo: float,
    hi: float,
    *,
    ceiling: float,
    target: float,
    name: str,
) -> tuple[float, float]:
    """Widen ``[lo, hi]`` until the increasing ``gap`` changes sign inside it."""
    while gap(lo) > 0.0:
        lo /= 2.0
        if lo < 1e-6:
            raise ParameterError(
                f"The 'target_arl0' parameter of solve_design must be reachable by some {name} "
                f"> 0. Got {target!r} instead."
            )
    top = gap(hi)
    while top < 0.0:
        if hi >= ceiling:
            cap = target * math.exp(top)
            raise ParameterError(
                f"The 'target_arl0' parameter of solve_design must be at most {cap:.4g}, the "
                f"in-control ARL at {name} = {ceiling:g}, the widest the solver tries (run "
                f"rules cap a Shewhart chart's ARL0 however wide its limits). Got {target!r} "
                "instead."
            )
        lo, hi = hi, min(hi * 1.5, ceiling)
        top = gap(hi)
    return lo, hi
