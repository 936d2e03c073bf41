"""``cellwatch arl``: the chart design tool, answering "how long until this chart signals?".

Quality engineers choose a chart's limits here before a detector goes live on a line: the
in-control ARL says how often it will raise a false alarm, the ARL at a shift how long a real
drift goes unnoticed, and ``--target-arl0`` solves for the limit that gives a wanted false-alarm
rate. The numbers come from `models.arl` (exact Markov chains where they exist, a seeded
simulation otherwise); this module only turns options into a design, checks that they belong
together, and prints one JSON object (``--json``, for scripts) or one readable line. A bad
combination of options is one line on stderr and exit code 2, like every other usage error of
``cellwatch``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from models.arl import (
    ArlResult,
    CusumDesign,
    Design,
    EwmaDesign,
    ShewhartDesign,
    has_chain,
    markov_arl,
    simulate_arl,
    solve_design,
)
from models.params import ParameterError

__all__ = ["ArlUsageError", "build_design", "run_arl"]

#: Which design options each chart accepts; anything else given with it is a usage error.
_OPTIONS = {
    "shewhart": ("L", "rules"),
    "ewma": ("lam", "L", "limits"),
    "cusum": ("k", "h"),
}
_FLAGS = {
    "lam": "--lam",
    "L": "--L",
    "k": "--k",
    "h": "--h",
    "rules": "--rules",
    "limits": "--limits",
}
_SIMULATION_ONLY = {"runs": "--runs", "seed": "--seed", "max_steps": "--max-steps"}


class ArlUsageError(ValueError):
    """Options that do not make a design together (printed as one line, exit code 2)."""


def build_design(args: argparse.Namespace) -> Design:
    """The design the options describe, with the chart's defaults for what is not given."""
    chart = args.chart
    for name, flag in _FLAGS.items():
        if getattr(args, name) is not None and name not in _OPTIONS[chart]:
            raise ArlUsageError(f"{flag} does not apply to the {chart} chart")
    if chart == "shewhart":
        rules = ("we1",) if args.rules is None else _rules(args.rules)
        return ShewhartDesign(L=_or(args.L, 3.0), rules=rules)
    if chart == "ewma":
        return EwmaDesign(
            lam=_or(args.lam, 0.2), L=_or(args.L, 3.0), limits=args.limits or "asymptotic"
        )
    return CusumDesign(k=_or(args.k, 0.5), h=_or(args.h, 5.0))


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _rules(text: str) -> tuple[str, ...]:
    return tuple(r.strip() for r in text.split(",") if r.strip())


def run_arl(args: argparse.Namespace) -> int:
    """Compute (and optionally solve) a design's ARL; print the result; return the exit code."""
    try:
        design = build_design(args)
        no_chain = (isinstance(design, EwmaDesign) and design.limits == "exact") or (
            isinstance(design, ShewhartDesign) and not has_chain(design)
        )
        simulate = args.method == "simulation" or no_chain
        if args.method == "markov" and no_chain:
            raise ArlUsageError(
                "--method markov needs fixed asymptotic limits and zone rules; exact EWMA "
                "limits and rules nelson3, nelson4, nelson8 are simulated"
            )
        if not simulate:
            given = [
                flag for name, flag in _SIMULATION_ONLY.items() if getattr(args, name) is not None
            ]
            if given:
                raise ArlUsageError(
                    f"{', '.join(given)}: simulation options, but this design is computed "
                    "exactly (add --method simulation to simulate it)"
                )
        solved: str | None = None
        if args.target_arl0 is not None:
            if isinstance(design, EwmaDesign) and design.limits == "exact":
                raise ArlUsageError(
                    "--target-arl0 solves on the exact Markov ARL, which needs --limits asymptotic"
                )
            design = solve_design(design, args.target_arl0)
            solved = "h" if isinstance(design, CusumDesign) else "L"
        if simulate:
            runs = 10_000 if args.runs is None else args.runs
            seed = 0 if args.seed is None else args.seed
            max_steps = 100_000 if args.max_steps is None else args.max_steps
            result = simulate_arl(design, args.shift, runs=runs, seed=seed, max_steps=max_steps)
        else:
            result = markov_arl(design, args.shift)
    except (ArlUsageError, ParameterError) as e:
        print(f"cellwatch arl: {e}", file=sys.stderr)
        return 2
    record = _record(design, args, result, solved)
    if result.censored:
        print(
            f"cellwatch arl: {result.censored} of {result.runs} runs had not signalled after "
            f"{record['max_steps']} samples; the ARL is a lower bound (raise --max-steps)",
            file=sys.stderr,
        )
    print(json.dumps(record) if args.json else _line(design, args.shift, result, solved))
    return 0


def _record(
    design: Design, args: argparse.Namespace, result: ArlResult, solved: str | None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "chart": args.chart,
        "shift": args.shift,
        "arl": result.arl,
        "se": result.se,
        "method": result.method,
        "convention": result.convention,
    }
    if isinstance(design, ShewhartDesign):
        out |= {"L": design.L, "rules": list(design.rules)}
    elif isinstance(design, EwmaDesign):
        out |= {"lam": design.lam, "L": design.L, "limits": design.limits}
    else:
        out |= {"k": design.k, "h": design.h}
    if result.method == "markov":
        out |= {"states": result.states, "numerical_error": result.numerical_error}
    else:
        out |= {
            "runs": result.runs,
            "seed": 0 if args.seed is None else args.seed,
            "max_steps": 100_000 if args.max_steps is None else args.max_steps,
            "censored": result.censored,
        }
    if solved is not None:
        out |= {"target_arl0": args.target_arl0, "solved": solved}
    return out


def _line(design: Design, shift: float, result: ArlResult, solved: str | None) -> str:
    if isinstance(design, ShewhartDesign):
        what = f"Shewhart L={design.L:.6g} rules={','.join(design.rules)}"
    elif isinstance(design, EwmaDesign):
        what = f"EWMA lam={design.lam:g} L={design.L:.6g} ({design.limits} limits)"
    else:
        what = f"CUSUM k={design.k:g} h={design.h:.6g}"
    if result.method == "markov":
        how = "Markov chain"
        value = f"{result.arl:.2f}"
    else:
        how = f"simulation, {result.runs} runs"
        value = f"{result.arl:.2f} +/- {result.se:.2f}"
    note = f" [{solved} solved for the target ARL0]" if solved else ""
    return f"{what}, shift {shift:g} sigma: ARL {value} ({how}; {result.convention}){note}"
