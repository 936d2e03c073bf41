"""Throughput of the univariate detection stack, beside per-sample baselines in the same run.

The stack is what a gateway runs on every tag: EWMA, two-sided CUSUM, the Shewhart individuals
chart and Western Electric rules 1-4, each fitted with known parameters and then fed the same
(time, tags) data in chunks of ``--chunk`` rows, as the edge monitor does once per window.
Two baselines process a sample of the same data one tag-sample at a time:

* a plain Python loop doing the same four computations per sample;
* river's ``drift.PageHinkley`` and ``drift.ADWIN``, one ``update`` per tag-sample (river is
  the streaming library most often used for this; skipped with a note if it is not installed).

Rates are tag-samples per second on one core; ratios are the stack's rate over each baseline's.
``--json`` prints one JSON object on the last line.

    taskset -c 0 .venv/bin/python benchmarks/bench_core.py --json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import time
from typing import Any

import numpy as np

from models.cusum import Cusum
from models.ewma import Ewma
from models.runrules import RunRules
from models.shewhart import Individuals

TAG_COUNTS = (100, 1_000, 10_000, 100_000)


def _stack(tags: int) -> list[Any]:
    center, sigma = np.zeros(tags), np.ones(tags)
    return [
        Ewma(lam=0.2, L=3.0, limits="asymptotic").fit_known(center, sigma),
        Cusum(k=0.5, h=5.0).fit_known(center, sigma),
        Individuals(L=3.0).fit_known(center, sigma),
        RunRules(rules=("we1", "we2", "we3", "we4")).fit_known(center, sigma),
    ]


def stack_rate(tags: int, rows: int, chunk: int, seed: int) -> float:
    """Tag-samples per second of the vectorized stack over ``rows`` x ``tags`` data."""
    data = np.random.default_rng(seed).normal(size=(rows, tags))
    dets = _stack(tags)
    for det in dets:  # warm-up: first-call costs are not throughput
        det.update(data[:chunk])
        det.reset()
    best = math.inf
    for _ in range(3):
        for det in dets:
            det.reset()
        t0 = time.perf_counter()
        for i in range(0, rows, chunk):
            block = data[i : i + chunk]
            for det in dets:
                det.update(block)
        best = min(best, time.perf_counter() - t0)
    return rows * tags / best


def loop_rate(samples: int, seed: int) -> float:
    """The same four computations, one sample at a time, in plain Python."""
    xs = np.random.default_rng(seed).normal(size=samples).tolist()
    lam, width, k, h = 0.2, 3.0 * math.sqrt(0.2 / 1.8), 0.5, 5.0
    t0 = time.perf_counter()
    z = cp = cm = 0.0
    hist: list[float] = []
    alarms = 0
    for x in xs:
        z = lam * x + (1 - lam) * z
        cp = max(0.0, cp + x - k)
        cm = max(0.0, cm - x - k)
        hist.append(x)
        if len(hist) > 8:
            hist.pop(0)
        last3, last5 = hist[-3:], hist[-5:]
        we1 = abs(x) > 3
        we2 = sum(v > 2 for v in last3) >= 2 or sum(v < -2 for v in last3) >= 2
        we3 = sum(v > 1 for v in last5) >= 4 or sum(v < -1 for v in last5) >= 4
        we4 = len(hist) == 8 and (all(v > 0 for v in hist) or all(v < 0 for v in hist))
        alarms += (abs(z) > width) + (cp > h) + (cm > h) + we1 + we2 + we3 + we4
    return samples / (time.perf_counter() - t0)


def river_rates(samples: int, seed: int) -> dict[str, float] | None:
    """PageHinkley and ADWIN, one update per tag-sample; None when river is missing."""
    try:
        from river import drift
    except ImportError:
        return None
    xs = np.random.default_rng(seed).normal(size=samples).tolist()
    out = {}
    for name, make in (("page_hinkley", drift.PageHinkley), ("adwin", drift.ADWIN)):
        det = make()
        t0 = time.perf_counter()
        for x in xs:
            det.update(x)
        out[name] = samples / (time.perf_counter() - t0)
    return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tags", default=",".join(map(str, TAG_COUNTS)),
                   help="comma-separated tag counts (default: %(default)s)")
    p.add_argument("--tag-samples", type=float, default=2e7,
                   help="tag-samples per stack measurement (default: %(default)g)")
    p.add_argument("--chunk", type=int, default=100, help="rows per update (default: %(default)s)")
    p.add_argument("--baseline-samples", type=int, default=200_000,
                   help="samples fed to each per-sample baseline (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    args = p.parse_args(argv)

    loop = loop_rate(args.baseline_samples, args.seed)
    river = river_rates(args.baseline_samples, args.seed)
    river_best = max(river.values()) if river else None
    rate, vs_loop, vs_river = {}, {}, {}
    for tags in (int(t) for t in args.tags.split(",")):
        rows = max(args.chunk, int(args.tag_samples // tags) // args.chunk * args.chunk)
        r = stack_rate(tags, rows, args.chunk, args.seed)
        rate[str(tags)] = r
        vs_loop[str(tags)] = r / loop
        vs_river[str(tags)] = r / river_best if river_best else None
        print(f"{tags:>7} tags x {rows:>6} rows: {r / 1e6:8.1f} M tag-samples/s  "
              f"{r / loop:8.0f}x loop  "
              + (f"{r / river_best:8.0f}x river" if river_best else "river not installed"),
              flush=True)
    print(f"baselines: python loop {loop / 1e6:.2f} M/s; river "
          + (", ".join(f"{k} {v / 1e6:.3f} M/s" for k, v in river.items()) if river else "n/a"))
    print(f"peak RSS {peak_rss_mb():.0f} MB; threads OMP={os.environ.get('OMP_NUM_THREADS', '-')}")
    if args.json:
        print(json.dumps({
            "rate": rate, "vs_river": vs_river, "vs_loop": vs_loop, "peak_rss_mb": peak_rss_mb(),
            "baselines": {"python_loop": loop, "river": river},
            "chunk_rows": args.chunk,
        }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
