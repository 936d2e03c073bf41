"""Tennessee Eastman benchmark: fault detection rates of cellwatch's multivariate monitoring.

Every model is fitted on ``d00.dat`` only (500 fault-free samples) and every limit comes from
that file. ``d00_te.dat`` gives the false alarm rate (FAR, share of scored rows that alarm),
``dNN_te.dat`` the fault detection rate (FDR) on rows 161-960, where fault NN is active. The
mean FDR is taken over the 18 faults PCA-type methods can detect (all but 3, 9 and 15), as the
data's README says.

**Baseline**: the README's static PCA (11 components, T2 F limit and Jackson-Mudholkar SPE limit
at alpha 0.005 each), which reproduces its published row (FAR 5.2 %, mean FDR 79.6 %).

**cellwatch: a design chosen on training files only.** The design is picked from a grid fixed
before selection, by a rule fixed before selection, from ``d00.dat`` and the training fault files
``dNN.dat``; no ``*_te.dat`` file is read until the choice is made, and then only the chosen
design is scored on them. Two selection protocols share the grid and the training figures and
differ in which false alarm rate a design must keep under 5 % (``--protocol``):

* ``forward`` (protocol 2, the default): the forward FAR *and* the blocked held-out FAR.
* ``blocked`` (protocol 1, as first published): the blocked held-out FAR alone.

* Grid (20 designs): dynamic PCA with ``lags`` in {0, 1, 2, 3}, times the smoothing in {none;
  SPE EWMA 0.2; SPE EWMA 0.1; T2 and SPE EWMA 0.2; T2 and SPE EWMA 0.1}. Fixed for all:
  components to 90 % cumulative variance, alpha 0.005 per statistic, limits from the
  out-of-sample quantiles of 5-fold blocked cross-validation on ``d00.dat`` (``limits="cv"``).
  Each is fitted by ``server.mvfit``, saved as an artifact, loaded back and scored by
  ``models.mvmonitor`` exactly as a gateway would.
* Training FDR: the share of alarming scored rows of ``dNN.dat``; every row of those files is
  faulty (480 rows recorded after the fault was introduced, see the README; ``d04.dat``'s
  XMV(10) already sits 12 training standard deviations off at row 1). Score = mean over the 18
  detectable faults.
* Held-out FAR on ``d00.dat``: each of the 5 cross-validation blocks is scored by the model
  fitted without it (the same fold models the limits come from), against limits taken from the
  out-of-sample statistics of the *other four* blocks only. (The fitted model's own
  ``cv_false_alarm_rate`` compares those statistics with limits set on all of them, so it is
  about 2 alpha by construction and cannot reject anything; it is printed for reference.)
* Forward FAR on ``d00.dat``: the design, options and limits included, is fitted on rows 1-250
  alone and a fresh monitor scores rows 251-500, the share of scored rows where T2 or SPE
  alarms. This is how a monitor runs: fitted on the past, scoring the future, EWMA starting
  from its in-control centre. Each blocked fold model was fitted on data on both sides (in time)
  of its held-out block, so slow wander it has not seen goes unmeasured there. A design whose
  fit on 250 rows raises is infeasible, and the reason is printed.
* Rule (``forward``): feasible designs have a forward FAR <= 5 % and a held-out FAR <= 5 %;
  (``blocked``): a held-out FAR <= 5 %. Among feasible designs the highest score wins; designs
  within 0.1 percentage points of the best tie, and a tie goes to the simpler design: fewer
  lags, then fewer smoothed statistics, then the larger lambda. If none is feasible, the lowest
  forward FAR (``forward``) or held-out FAR (``blocked``) wins, ties again to the simpler.

The default run makes the choice, then scores the baseline and the selected design (only it)
on the test files. ``--select`` runs the selection alone and never opens a test file. ``--json``
prints ``{"far", "mean_fdr_18", "fdr", "selected", "protocol", "forward_far"}`` for the selected
design on the last line, rates in % (with ``--select``, all but the test figures).

    .venv/bin/python benchmarks/bench_tep.py --data ../shared/data/tep --select
    .venv/bin/python benchmarks/bench_tep.py --data ../shared/data/tep --json
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.mvartifact import load_model, save_model
from models.mvlimits import empirical_limit
from models.mvmodel import MvModel
from models.mvmonitor import MvMonitor

# The held-out FAR needs the per-fold models and centres of the limit cross-validation, which
# fit_model does not return; these are the same private helpers fit_model uses.
from server.mvfit import FitOptions, _cv_scores, _model, fit_model

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tep"
FAULTS = range(1, 22)
UNDETECTABLE = (3, 9, 15)
ONSET = 160  # rows 161-960 (1-based) of each dNN_te.dat are faulty; all rows of dNN.dat are
VARIABLES = [f"XMEAS({i})" for i in range(1, 42)] + [f"XMV({i})" for i in range(1, 12)]
ANY = MvMonitor.T2 | MvMonitor.SPE

BASELINE = FitOptions(components=11, alpha=0.005, limits="theory")

#: The predeclared grid: (lags, T2 lambda, SPE lambda); everything else as in `_options`.
GRID: tuple[tuple[int, float, float], ...] = tuple(
    (lags, t2, spe)
    for lags in (0, 1, 2, 3)
    for t2, spe in ((1.0, 1.0), (1.0, 0.2), (1.0, 0.1), (0.2, 0.2), (0.1, 0.1))
)
MAX_FAR = 5.0  # % held-out (and, under "forward", forward) FAR on d00.dat a design may have
TIE = 0.1  # percentage points of training mean FDR within which designs tie
#: Selection protocols: "forward" (protocol 2, current) and "blocked" (protocol 1).
PROTOCOLS = ("forward", "blocked")
#: Forward validation fits on rows 1-250 of d00.dat (its first half) and scores rows 251-500.
FORWARD_ROWS = 250


def _options(lags: int, t2_lam: float, spe_lam: float) -> FitOptions:
    return FitOptions(
        lags=lags, components=0.9, alpha=0.005, limits="cv", t2_lam=t2_lam, spe_lam=spe_lam
    )


def _mean18(fdr: Sequence[float]) -> float:
    return float(np.mean([fdr[f - 1] for f in FAULTS if f not in UNDETECTABLE]))


@dataclass(frozen=True, slots=True)
class Rates:
    """FAR (d00_te) and per-fault FDR, in %, for T2, SPE and their combination."""

    far: dict[str, float]
    fdr: dict[str, list[float]]
    components: int

    def mean18(self, stat: str = "any") -> float:
        return _mean18(self.fdr[stat])


@dataclass(frozen=True, slots=True)
class Forward:
    """Forward validation of one design: FAR in % on rows 251-500 of ``d00.dat``, the model's
    component count, or the error its fit on rows 1-250 raised (then ``far`` is None)."""

    far: float | None
    components: int | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    """One grid design and its training-side figures, in %."""

    lags: int
    t2_lam: float
    spe_lam: float
    components: int
    cv_far: float  # the model's cv_false_alarm_rate (limits set on the same statistics)
    heldout_far: float  # leave-one-block-out limits
    fdr: list[float]  # per fault, on dNN.dat
    forward: Forward  # fitted on rows 1-250 of d00.dat, scored on rows 251-500

    @property
    def score(self) -> float:
        return _mean18(self.fdr)

    @property
    def forward_key(self) -> float:
        """The forward FAR, a failed fit ranking last."""
        return math.inf if self.forward.far is None else self.forward.far

    def over(self, protocol: str) -> list[str]:
        """The FAR bounds this design breaks under ``protocol`` (empty: feasible)."""
        out = []
        if protocol == "forward" and not self.forward_key <= MAX_FAR:
            out.append("forward FAR over 5 %" if self.forward.error is None else "fit failed")
        if not self.heldout_far <= MAX_FAR:
            out.append("held-out FAR over 5 %")
        return out

    def feasible(self, protocol: str) -> bool:
        return not self.over(protocol)

    @property
    def complexity(self) -> tuple[int, int, float]:
        smoothed = int(self.t2_lam < 1.0) + int(self.spe_lam < 1.0)
        return (self.lags, smoothed, -min(self.t2_lam, self.spe_lam))

    @property
    def options(self) -> FitOptions:
        return _options(self.lags, self.t2_lam, self.spe_lam)

    @property
    def name(self) -> str:
        if self.spe_lam == 1.0 and self.t2_lam == 1.0:
            smooth = "T2, SPE raw"
        elif self.t2_lam == 1.0:
            smooth = f"SPE EWMA {self.spe_lam}"
        else:
            smooth = f"T2+SPE EWMA {self.spe_lam}"
        return f"DPCA({self.lags}) {smooth}"


def load(data: Path) -> np.ndarray:
    """The fault-free training set (stored transposed)."""
    train = np.loadtxt(data / "d00.dat").T
    if train.shape != (500, 52):
        raise SystemExit(f"{data}: unexpected d00.dat shape; see its README.md")
    return train


def load_faults(data: Path) -> list[np.ndarray]:
    """The 21 training fault sets ``dNN.dat``, faulty throughout."""
    faults = [np.loadtxt(data / f"d{i:02d}.dat") for i in FAULTS]
    if any(x.shape != (480, 52) for x in faults):
        raise SystemExit(f"{data}: unexpected dNN.dat shapes; see its README.md")
    return faults


def load_tests(data: Path) -> list[np.ndarray]:
    """The 22 test sets ``dNN_te.dat``."""
    tests = [np.loadtxt(data / f"d{i:02d}_te.dat") for i in range(22)]
    if any(t.shape != (960, 52) for t in tests):
        raise SystemExit(f"{data}: unexpected test shapes; see its README.md")
    return tests


def fit(train: np.ndarray, opt: FitOptions) -> MvModel:
    """Fit on ``train`` and round-trip the artifact, as a gateway receives it."""
    model = fit_model(train, VARIABLES, options=opt, window={"source": "d00.dat"})
    with tempfile.TemporaryDirectory() as tmp:
        return load_model(save_model(model, Path(tmp) / "tep")[0])


def heldout_far(train: np.ndarray, opt: FitOptions, model: MvModel) -> float:
    """Combined FAR in % on ``d00.dat``, each CV block against limits from the other blocks."""
    names = tuple(VARIABLES)
    units = ("",) * len(names)
    folds, t2_center, spe_center = _cv_scores(train, opt, model.components, names, units)
    huge = float(np.finfo(np.float64).max)
    stats = []
    for core, held in folds:
        probe = _model(
            core,
            opt,
            names,
            units,
            (huge, huge, huge),
            (t2_center, spe_center),
            (opt.t2_lam, opt.spe_lam),
        )
        res = MvMonitor(probe).update(held)
        ok = np.isfinite(res.t2)
        stats.append((res.t2[ok], res.spe[ok]))
    alarms = rows = 0
    for k, (t2, spe) in enumerate(stats):
        t2_lim = empirical_limit(
            np.concatenate([s[0] for j, s in enumerate(stats) if j != k]), opt.alpha
        )
        q_lim = empirical_limit(
            np.concatenate([s[1] for j, s in enumerate(stats) if j != k]), opt.alpha
        )
        alarms += int(np.count_nonzero((t2 > t2_lim) | (spe > q_lim)))
        rows += t2.size
    return 100.0 * alarms / rows


def forward_far(train: np.ndarray, opt: FitOptions) -> Forward:
    """Fit the design on the first `FORWARD_ROWS` rows of ``d00.dat`` and score the rest.

    The whole fit is repeated on the earlier rows (components, ``limits="cv"`` limits and EWMA
    centres computed within them), round-tripped as an artifact, and a fresh `MvMonitor` scores
    the later rows from its first sample, as a newly deployed model would: the figure includes
    the slow wander that data fitted on the past has not seen. Any exception from the fit makes
    the design infeasible; it is reported, not raised.
    """
    try:
        model = fit(train[:FORWARD_ROWS], opt)
    except Exception as exc:  # any failure of the fit is a reason to reject the design
        return Forward(None, error=f"{type(exc).__name__}: {exc}")
    res = MvMonitor(model).update(train[FORWARD_ROWS:])
    scored = np.isfinite(res.t2)
    return Forward(100.0 * float(np.mean((res.signal[scored] & ANY) > 0)), model.components)


def training_fdr(model: MvModel, faults: list[np.ndarray]) -> list[float]:
    """Per fault, % of scored rows of ``dNN.dat`` that alarm (T2 or SPE)."""
    out = []
    for x in faults:
        res = MvMonitor(model).update(x)
        scored = np.isfinite(res.t2)
        out.append(100.0 * float(np.mean((res.signal[scored] & ANY) > 0)))
    return out


def select(
    train: np.ndarray, faults: list[np.ndarray], protocol: str = "forward"
) -> tuple[list[Candidate], Candidate]:
    """Score the grid on training files and apply ``protocol``'s predeclared rule."""
    grid = []
    for lags, t2_lam, spe_lam in GRID:
        opt = _options(lags, t2_lam, spe_lam)
        model = fit(train, opt)
        grid.append(
            Candidate(
                lags=lags,
                t2_lam=t2_lam,
                spe_lam=spe_lam,
                components=model.components,
                cv_far=100.0 * float(model.info["cv_false_alarm_rate"]),
                heldout_far=heldout_far(train, opt, model),
                fdr=training_fdr(model, faults),
                forward=forward_far(train, opt),
            )
        )
        print(_candidate_row(grid[-1], protocol), flush=True)
    return grid, choose(grid, protocol)


def choose(grid: Sequence[Candidate], protocol: str = "forward") -> Candidate:
    """The predeclared rule: best training score among feasible designs (``forward``: forward
    and held-out FAR <= 5 %; ``blocked``: held-out FAR <= 5 %); scores within `TIE` of the best
    tie and go to the simplest design. With none feasible, the lowest forward (``forward``) or
    held-out (``blocked``) FAR wins, ties to the simplest."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    feasible = [c for c in grid if c.feasible(protocol)]
    if not feasible:
        if protocol == "forward":
            return min(grid, key=lambda c: (c.forward_key, c.complexity))
        return min(grid, key=lambda c: (c.heldout_far, c.complexity))
    best = max(c.score for c in feasible)
    tied = [c for c in feasible if c.score >= best - TIE]
    return min(tied, key=lambda c: c.complexity)


def evaluate(train: np.ndarray, tests: list[np.ndarray], opt: FitOptions) -> Rates:
    """Fit on ``train``, round-trip the artifact, score every test set."""
    model = fit(train, opt)
    bits = {"t2": MvMonitor.T2, "spe": MvMonitor.SPE, "any": ANY}
    far: dict[str, float] = {}
    fdr: dict[str, list[float]] = {k: [] for k in bits}
    for i, x in enumerate(tests):
        res = MvMonitor(model).update(x)
        scored = np.isfinite(res.t2)
        for k, b in bits.items():
            hit = (res.signal & b) > 0
            if i == 0:
                far[k] = 100.0 * float(np.mean(hit[scored]))
            else:
                fdr[k].append(100.0 * float(np.mean(hit[ONSET:])))
    return Rates(far, fdr, model.components)


def _row(name: str, r: Rates) -> str:
    return (
        f"{name:<34} a={r.components:<3} FAR {r.far['any']:4.1f} % "
        f"(T2 {r.far['t2']:.1f}, SPE {r.far['spe']:.1f})  mean FDR(18) {r.mean18():5.1f} % "
        f"(T2 {r.mean18('t2'):.1f}, SPE {r.mean18('spe'):.1f})"
    )


def _candidate_row(c: Candidate, protocol: str) -> str:
    f = c.forward
    fwd = " n/a" if f.far is None else f"{f.far:4.1f}"
    row = (
        f"{c.name:<28} a={c.components:<3} d00 FAR forward {fwd} % (a={f.components}) "
        f"held-out {c.heldout_far:4.1f} % (CV {c.cv_far:.1f})  train mean FDR(18) {c.score:5.1f} %"
    )
    over = c.over(protocol)
    if over:
        row += f"  ({'; '.join(over)})"
    if f.error is not None:
        row += f"\n    forward fit on rows 1-{FORWARD_ROWS} failed: {f.error}"
    return row


def _fdr_line(label: str, values: Sequence[float]) -> str:
    return f"{label:<9}" + " ".join(f"{v:5.1f}" for v in values)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="directory with d00.dat, dNN.dat and dNN_te.dat (default: %(default)s)",
    )
    p.add_argument(
        "--select",
        action="store_true",
        help="only choose the design on the training files; read no test file",
    )
    p.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="forward",
        help="selection rule: forward validation (protocol 2) or blocked CV alone (protocol 1) "
        "(default: %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    args = p.parse_args(argv)

    train = load(args.data)
    print(f"selection, protocol {args.protocol}, on d00.dat and dNN.dat (training files only):")
    _, chosen = select(train, load_faults(args.data), args.protocol)
    fwd = chosen.forward.far
    print(f"selected: {chosen.name} (train mean FDR(18) {chosen.score:.1f} %, ", end="")
    print(f"held-out d00 FAR {chosen.heldout_far:.1f} %, ", end="")
    print("forward d00 FAR " + ("n/a" if fwd is None else f"{fwd:.1f} %") + ")")
    print("fault    " + " ".join(f"{f:>5}" for f in FAULTS))
    print(_fdr_line("train", chosen.fdr))
    design = {
        "lags": chosen.lags,
        "components": chosen.components,
        "t2_lam": chosen.t2_lam,
        "spe_lam": chosen.spe_lam,
        "train_heldout_far": round(chosen.heldout_far, 2),
        "train_mean_fdr_18": round(chosen.score, 2),
    }
    side = {"protocol": args.protocol, "forward_far": None if fwd is None else round(fwd, 2)}
    if args.select:
        if args.json:
            print(json.dumps({"selected": design, **side}))
        return 0

    tests = load_tests(args.data)
    base = evaluate(train, tests, BASELINE)
    ours = evaluate(train, tests, chosen.options)
    print("test files, scored once:")
    print("fault    " + " ".join(f"{f:>5}" for f in FAULTS))
    for name, r in (("baseline", base), ("cellwatch", ours)):
        for stat in ("t2", "spe", "any"):
            print(_fdr_line(f"{name[:4]} {stat}", r.fdr[stat]))
    print(_row("baseline: static PCA, F + J&M", base))
    print(_row(f"cellwatch: {chosen.name}", ours))
    if args.json:
        print(
            json.dumps(
                {
                    "far": round(ours.far["any"], 2),
                    "mean_fdr_18": round(ours.mean18(), 2),
                    "fdr": [round(v, 2) for v in ours.fdr["any"]],
                    "selected": design,
                    **side,
                }
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
