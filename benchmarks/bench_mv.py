"""Throughput of multivariate scoring (PCA T2 and SPE) against scikit-learn, in the same run.

A gateway scores each station's chunk of ``(rows, variables)`` once per framing window with
``models.mvmonitor.MvMonitor`` (numpy only). The model is fitted by ``server.mvfit`` on
synthetic in-control data (``--vars`` variables driven by a tenth as many latent factors plus
noise; components to 90 % cumulative variance) and scored on fresh data from the same process:

* **cellwatch, chunks**: ``MvMonitor.update`` on chunks of ``--chunk`` rows (raw T2 and SPE);
* **cellwatch, chunks, EWMA(SPE)**: the same with SPE smoothed (lambda 0.1), which adds the
  per-row recursion and per-variable contributions of every row;
* **cellwatch, one row per call**: ``update`` with one row, the per-call overhead;
* **scikit-learn, one sample**: the same model through ``PCA.transform`` and
  ``inverse_transform`` one sample at a time, T2 and SPE from their output (the usual way a
  fitted scikit-learn model is applied to a stream); its statistics are checked to equal ours;
* **scikit-learn, batch**: ``transform``/``inverse_transform`` of a whole chunk, for reference.

Rates are samples (rows) per second on one core, the best of three passes; ratios are
cellwatch's chunked rate over each scikit-learn rate. ``--json`` prints one JSON object on the
last line.

    OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python benchmarks/bench_mv.py --json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable

import numpy as np
from sklearn.decomposition import PCA

from models.mvmodel import MvModel
from models.mvmonitor import MvMonitor
from server.mvfit import FitOptions, fit_model


def _data(rng: np.random.Generator, n: int, p: int) -> np.ndarray:
    rank = max(2, p // 10)
    load = np.random.default_rng(1234 + p).normal(size=(p, rank))
    return rng.normal(size=(n, rank)) @ load.T + 0.5 * rng.normal(size=(n, p)) + 10.0


def _best(run: Callable[[], None], passes: int = 3) -> float:
    best = math.inf
    for _ in range(passes):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return best


def _sklearn_twin(model: MvModel) -> PCA:
    """A scikit-learn PCA holding exactly the model's loadings (fitted on the scaled data)."""
    a = model.components
    pca = PCA(n_components=a)
    pca.components_ = model.loadings.T.copy()
    pca.mean_ = np.zeros(model.width)
    pca.explained_variance_ = model.eigenvalues.copy()
    pca.n_components_ = a
    pca.n_features_in_ = model.width
    pca.whiten = False
    return pca


def measure(p: int, rows: int, chunk: int, per_sample: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    names = [f"v{j}" for j in range(p)]
    base = _data(rng, max(2000, 4 * p), p)
    model = fit_model(base, names, options=FitOptions(components=0.9, alpha=0.005))
    smooth_model = fit_model(
        base, names, options=FitOptions(components=0.9, alpha=0.005, limits="cv", spe_lam=0.1)
    )
    x = _data(rng, rows, p)
    pca = _sklearn_twin(model)

    def chunks(m: MvModel, size: int, data: np.ndarray) -> Callable[[], None]:
        def run() -> None:
            mon = MvMonitor(m)
            for i in range(0, data.shape[0], size):
                mon.update(data[i : i + size])

        return run

    def sk_one() -> None:
        inv = 1.0 / model.eigenvalues
        for row in x[:per_sample]:
            z = ((row - model.mean) / model.scale)[None, :]
            t = pca.transform(z)
            float(np.sum(t * t * inv))
            r = z - pca.inverse_transform(t)
            float(np.sum(r * r))

    def sk_batch() -> None:
        inv = 1.0 / model.eigenvalues
        for i in range(0, rows, chunk):
            z = (x[i : i + chunk] - model.mean) / model.scale
            t = pca.transform(z)
            np.sum(t * t * inv, axis=1)
            r = z - pca.inverse_transform(t)
            np.sum(r * r, axis=1)

    # Same model, same numbers: check on a few rows before timing.
    res = MvMonitor(model).update(x[:20])
    z = (x[:20] - model.mean) / model.scale
    t = pca.transform(z)
    np.testing.assert_allclose(res.t2, np.sum(t * t / model.eigenvalues, axis=1), rtol=1e-9)
    np.testing.assert_allclose(
        res.spe, np.sum((z - pca.inverse_transform(t)) ** 2, axis=1), rtol=1e-9
    )

    for warm in (chunks(model, chunk, x[: 2 * chunk]), sk_batch):
        warm()
    out = {
        "components": float(model.components),
        "cellwatch_chunk": rows / _best(chunks(model, chunk, x)),
        "cellwatch_chunk_ewma_spe": rows / _best(chunks(smooth_model, chunk, x)),
        "cellwatch_one_row": per_sample / _best(chunks(model, 1, x[:per_sample])),
        "sklearn_one_sample": per_sample / _best(sk_one),
        "sklearn_batch": rows / _best(sk_batch),
    }
    out["vs_sklearn_one_sample"] = out["cellwatch_chunk"] / out["sklearn_one_sample"]
    out["vs_sklearn_batch"] = out["cellwatch_chunk"] / out["sklearn_batch"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vars", default="50,500", help="comma-separated variable counts")
    p.add_argument("--rows", type=int, default=100_000, help="rows scored per pass")
    p.add_argument("--chunk", type=int, default=100, help="rows per update (default: %(default)s)")
    p.add_argument(
        "--per-sample",
        type=int,
        default=5000,
        help="rows for the one-at-a-time measurements (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    args = p.parse_args(argv)

    results: dict[str, dict[str, float]] = {}
    for n_vars in (int(v) for v in args.vars.split(",")):
        rows = max(args.chunk, args.rows * 50 // max(n_vars, 50) // args.chunk * args.chunk)
        r = measure(n_vars, rows, args.chunk, args.per_sample, args.seed)
        results[str(n_vars)] = r
        print(
            f"{n_vars:>4} vars, {int(r['components'])} components, {rows} rows: "
            f"cellwatch {r['cellwatch_chunk'] / 1e3:8.1f} k rows/s (EWMA SPE "
            f"{r['cellwatch_chunk_ewma_spe'] / 1e3:.1f} k, one row per call "
            f"{r['cellwatch_one_row'] / 1e3:.1f} k); scikit-learn one sample "
            f"{r['sklearn_one_sample'] / 1e3:.2f} k, batch {r['sklearn_batch'] / 1e3:.1f} k; "
            f"{r['vs_sklearn_one_sample']:.0f}x one-sample, {r['vs_sklearn_batch']:.1f}x batch",
            flush=True,
        )
    if args.json:
        print(json.dumps({"chunk_rows": args.chunk, "vars": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
