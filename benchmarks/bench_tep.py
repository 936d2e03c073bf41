"""Tennessee Eastman benchmark: fault detection rates of cellwatch's multivariate monitoring.

The model is fitted on ``d00.dat`` only (500 fault-free samples) and every limit comes from that
file; the test files are only scored. ``d00_te.dat`` gives the false alarm rate (FAR, share of
scored rows that alarm), ``dNN_te.dat`` the fault detection rate (FDR) on rows 161-960, where
fault NN is active. The mean FDR is taken over the 18 faults PCA-type methods can detect (all but
3, 9 and 15), as the data's README says.

Two configurations run on the same data in the same process:

* **baseline**: the README's static PCA (11 components, T2 F limit and Jackson-Mudholkar SPE
  limit at alpha 0.005 each), which reproduces its published row (FAR 5.2 %, mean FDR 79.6 %);
* **cellwatch**: dynamic PCA with 2 lags (Ku et al. 1995 found two lags for this process),
  components to 90 % cumulative variance, SPE smoothed by an EWMA with lambda 0.1, T2 not
  smoothed, limits at alpha 0.005 each from the out-of-sample quantiles of 5-fold blocked
  cross-validation on ``d00.dat``. It is fitted by ``server.mvfit``, saved as an artifact,
  loaded back and scored by ``models.mvmonitor`` exactly as a gateway would.

``--sweep`` also prints neighbouring configurations (lags, components, smoothing), to show how
much the result depends on the choice. ``--json`` prints ``{"far", "mean_fdr_18", "fdr"}`` for
the cellwatch configuration on the last line, rates in %.

    .venv/bin/python benchmarks/bench_tep.py --data ../shared/data/tep --json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.mvartifact import load_model, save_model
from models.mvmonitor import MvMonitor
from server.mvfit import FitOptions, fit_model

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tep"
FAULTS = range(1, 22)
UNDETECTABLE = (3, 9, 15)
ONSET = 160  # rows 161-960 (1-based) of each dNN_te.dat are faulty
VARIABLES = [f"XMEAS({i})" for i in range(1, 42)] + [f"XMV({i})" for i in range(1, 12)]

BASELINE = FitOptions(components=11, alpha=0.005, limits="theory")
CELLWATCH = FitOptions(lags=2, components=0.9, alpha=0.005, limits="cv", spe_lam=0.1)


@dataclass(frozen=True, slots=True)
class Rates:
    """FAR (d00_te) and per-fault FDR, in %, for T2, SPE and their combination."""

    far: dict[str, float]
    fdr: dict[str, list[float]]
    components: int

    def mean18(self, stat: str = "any") -> float:
        keep = [self.fdr[stat][f - 1] for f in FAULTS if f not in UNDETECTABLE]
        return float(np.mean(keep))


def load(data: Path) -> tuple[np.ndarray, list[np.ndarray]]:
    """The training set (stored transposed) and the 22 test sets."""
    train = np.loadtxt(data / "d00.dat").T
    tests = [np.loadtxt(data / f"d{i:02d}_te.dat") for i in range(22)]
    if train.shape != (500, 52) or any(t.shape != (960, 52) for t in tests):
        raise SystemExit(f"{data}: unexpected shapes; see its README.md")
    return train, tests


def evaluate(train: np.ndarray, tests: list[np.ndarray], opt: FitOptions) -> Rates:
    """Fit on ``train``, round-trip the artifact, score every test set."""
    model = fit_model(train, VARIABLES, options=opt, window={"source": "d00.dat"})
    with tempfile.TemporaryDirectory() as tmp:
        model = load_model(save_model(model, Path(tmp) / "tep")[0])
    bits = {"t2": MvMonitor.T2, "spe": MvMonitor.SPE, "any": MvMonitor.T2 | MvMonitor.SPE}
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


def sweep(train: np.ndarray, tests: list[np.ndarray]) -> None:
    """Neighbours of the chosen configuration, one line each."""
    for lags in (0, 1, 2, 3):
        for comp in (0.8, 0.9, 0.95):
            for t2_lam, spe_lam in ((1.0, 1.0), (1.0, 0.2), (1.0, 0.1), (0.2, 0.1)):
                opt = FitOptions(
                    lags=lags,
                    components=comp,
                    alpha=0.005,
                    limits="cv",
                    t2_lam=t2_lam,
                    spe_lam=spe_lam,
                )
                name = f"lags {lags} var {comp} lamT2 {t2_lam} lamSPE {spe_lam}"
                print(_row(name, evaluate(train, tests, opt)), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="directory with d00.dat and dNN_te.dat (default: %(default)s)",
    )
    p.add_argument("--sweep", action="store_true", help="also print neighbouring configurations")
    p.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    args = p.parse_args(argv)

    train, tests = load(args.data)
    base = evaluate(train, tests, BASELINE)
    ours = evaluate(train, tests, CELLWATCH)
    print("fault  " + " ".join(f"{f:>5}" for f in FAULTS))
    for name, r in (("baseline", base), ("cellwatch", ours)):
        for stat in ("t2", "spe", "any"):
            label = f"{name[:4]} {stat}"
            print(f"{label:<9}" + " ".join(f"{v:5.1f}" for v in r.fdr[stat]))
    print(_row("baseline: static PCA, F + J&M", base))
    print(_row("cellwatch: DPCA(2) + EWMA(SPE), CV", ours))
    if args.sweep:
        sweep(train, tests)
    if args.json:
        print(
            json.dumps(
                {
                    "far": round(ours.far["any"], 2),
                    "mean_fdr_18": round(ours.mean18(), 2),
                    "fdr": [round(v, 2) for v in ours.fdr["any"]],
                }
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
