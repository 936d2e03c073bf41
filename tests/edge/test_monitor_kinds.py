"""Monitor with every detector kind: run lengths as the ARL says, rules named, gaps, exclusion.

Run-length checks start every chart fresh (zero state) with a known centre and sigma, the
convention of `models.arl`, so the expected value is the chart's exact Markov ARL. Run lengths
of these charts are at most about geometric, whose standard deviation is below its mean, so
the mean of ``S`` independent run lengths lies within ``ARL * 4 / sqrt(S)`` of the ARL except
with a probability far below 1e-3: that is the tolerance, not a tuned one.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pytest

from edge.framer import Frame, Framer
from edge.monitor import Monitor
from models.arl import CusumDesign, ShewhartDesign, markov_arl
from models.batch import Batch
from models.cusum import Cusum
from models.messages import Detection, Quality, Reading, SeriesKey
from models.runrules import RunRules
from models.shewhart import Individuals
from tests.edge.plants import plant

T0 = 1_000.0


def key(eq: str) -> SeriesKey:
    return SeriesKey("l1", "coater", eq, "weight")


def frames(data: np.ndarray, rows: int, dt: float = 1.0) -> list[Frame]:
    """``data`` (time, series) cut into frames of ``rows`` samples, as the framer lays them out."""
    names = tuple(f"s{j:03d}" for j in range(data.shape[1]))
    out = []
    for a in range(0, data.shape[0], rows):
        x = np.ascontiguousarray(data[a : a + rows])
        t = np.repeat((T0 + dt * np.arange(a, a + x.shape[0]))[:, None], x.shape[1], axis=1)
        e = x.shape[1]
        out.append(
            Frame(
                "l1",
                "coater",
                "weight",
                names,
                x,
                t,
                np.full(e, x.shape[0]),
                np.zeros(e, dtype=np.int64),
                t[0].copy(),
                t[-1].copy(),
                Batch.empty(),
            )
        )
    return out


def detect(det: dict[str, Any], data: np.ndarray, rows: int = 97) -> list[Detection]:
    m = Monitor(plant(detector=det))
    return [d for fr in frames(data, rows) for d in m.process(fr).detections]


def run_lengths(found: list[Detection], n_series: int, n_rows: int) -> np.ndarray:
    """Samples until each series' first detection (``n_rows`` if it had none)."""
    first = np.full(n_series, n_rows, dtype=np.float64)
    for d in found:
        j = int(d.key.equipment[1:])
        first[j] = min(first[j], d.ts - T0 + 1)
    return first


def within_arl(rl: np.ndarray, expected: float) -> None:
    tol = 4 * expected / math.sqrt(rl.size)
    assert abs(rl.mean() - expected) <= tol, (rl.mean(), expected, tol)


KNOWN = {"center": 0.0, "sigma": 1.0}


@pytest.mark.parametrize(
    ("det", "design", "shift"),
    [
        ({"kind": "cusum", "k": 0.5, "h": 4.0}, CusumDesign(k=0.5, h=4.0), 1.0),
        ({"kind": "shewhart", "L": 3.0}, ShewhartDesign(L=3.0), 2.0),
        (
            {"kind": "shewhart", "L": 3.0, "rules": ["we1", "we2", "we3", "we4"]},
            ShewhartDesign(L=3.0, rules=("we1", "we2", "we3", "we4")),
            1.0,
        ),
    ],
    ids=["cusum", "shewhart", "shewhart+we1-4"],
)
def test_run_lengths_in_control_and_after_a_shift_match_the_arl(
    det: dict[str, Any], design: CusumDesign | ShewhartDesign, shift: float
) -> None:
    rng = np.random.default_rng(5)
    arl0, arl1 = markov_arl(design).arl, markov_arl(design, shift).arl
    n_series = 64
    n_rows = int(12 * arl0)  # P(no signal in 12 ARL0) ~ e^-12 per series: censoring is moot
    quiet = rng.normal(0.0, 1.0, size=(n_rows, n_series))
    rl0 = run_lengths(detect({**det, **KNOWN}, quiet), n_series, n_rows)
    within_arl(rl0, arl0)
    shifted = rng.normal(shift, 1.0, size=(400, n_series))
    rl1 = run_lengths(detect({**det, **KNOWN}, shifted), n_series, 400)
    within_arl(rl1, arl1)
    assert rl1.max() < 400


def test_cusum_detection_says_how_far_and_since_when() -> None:
    x = np.r_[np.zeros(10), np.full(20, 1.2)][:, None]  # +1.2 sigma from sample 10
    [d] = detect({"kind": "cusum", "k": 0.5, "h": 5.0, **KNOWN}, x, rows=7)
    # The documented example (docs/DETECTORS.md): the signal on sample 17, excursion from 10.
    assert (d.rule, d.ts, d.direction, d.limit, d.center, d.sigma) == (
        "cusum",
        T0 + 17,
        1,
        5.0,
        0.0,
        1.0,
    )
    assert d.value == pytest.approx(8 * 0.7)
    assert d.message.startswith("CUSUM C+ 5.6 above H 5:")
    assert "mean moved to about 1.20 over the last 8 samples" in d.message


def test_each_run_rule_fires_as_its_own_detection_once_per_pattern() -> None:
    z = np.array([0.5, 2.5, -0.3, 2.5, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, -0.1])
    found = detect(
        {"kind": "shewhart", "rules": list(RunRules.RULES), "center": 50.0, "sigma": 2.0},
        50.0 + 2.0 * z[:, None],
        rows=5,
    )
    got = [(int(d.ts - T0), d.rule, d.direction) for d in found]
    # The documented example: we2/nelson5 at 3; nelson3 (6 rising) from 9 on, reported once;
    # we4 when 3..10 make eight points above the centre.
    assert got == [(3, "we2", 1), (3, "nelson5", 1), (9, "nelson3", 1), (10, "we4", 1)]
    we2 = found[0]
    assert we2.limit == pytest.approx(54.0) and we2.value == pytest.approx(55.0)
    assert we2.message.startswith("WE2: 2 of 3 points beyond 2 sigma on one side; value 55.00")


def test_stuck_fires_once_after_n_unchanged_samples_and_never_on_noise() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(5.0, 0.1, size=(300, 3))
    x[120:, 1] = x[120, 1]  # series 1 freezes at sample 120
    x[200:, 2] = np.round(x[200, 2], 1) + rng.uniform(-0.004, 0.004, size=100)  # jitter < tol
    found = detect({"kind": "stuck", "n": 6, "tolerance": 0.01}, x, rows=13)
    got = {(d.key.equipment, int(d.ts - T0)) for d in found}
    # Series 1: samples 121.. are unchanged, the 6th of them (126) makes it stuck. Series 2
    # moves by less than 0.008 per sample from 200 on: stuck at 206. Series 0 never.
    assert got == {("s001", 126), ("s002", 206)}
    d = next(d for d in found if d.key.equipment == "s001")
    assert (d.rule, d.value, d.limit, d.center, d.sigma) == ("stuck", 6.0, 6.0, x[120, 1], 0.01)
    assert d.message.startswith(f"stuck at {x[120, 1]:.6g}: 6 samples in a row unchanged")


def test_stuck_needs_no_baseline_and_reports_its_run_in_the_stats() -> None:
    m = Monitor(plant(detector={"kind": "stuck", "n": 3}))
    framer = Framer()
    for i, v in enumerate([1.0, 1.0, 1.0, 2.0]):
        framer.add(Reading(key("a"), T0 + i, v))
    [fr] = framer.cut()
    out = m.process(fr)
    assert m.cohorts("l1", "coater", "weight") == [("a",)]
    assert out.detections == ()  # two unchanged samples, then a change
    [s] = out.stats
    assert (s.statistic, s.lcl, s.ucl) == (0.0, 0.0, 3.0)


@pytest.mark.parametrize("kind", ["cusum", "shewhart"])
def test_phase_one_fits_the_baseline_then_finds_a_shift(kind: str) -> None:
    rng = np.random.default_rng(9)
    baseline, shift_at = 50, 80
    x = rng.normal(10.0, 0.5, size=(150, 4))
    x[shift_at:, 2] += 2.5  # 5 sigma on series 2
    det = {"kind": kind, "baseline": baseline}
    found = detect(det, x, rows=17)
    assert {d.key.equipment for d in found} == {"s002"}
    first = min(found, key=lambda d: d.ts)
    assert shift_at <= first.ts - T0 <= shift_at + 5
    ref = (Cusum if kind == "cusum" else Individuals)(min_baseline=baseline).fit(x[:baseline])
    assert first.center == pytest.approx(ref.center_[2])
    assert first.sigma == pytest.approx(ref.sigma_[2])


def test_a_flat_cusum_baseline_is_rejected_and_collected_again() -> None:
    m = Monitor(plant(detector={"kind": "cusum", "baseline": 4}))
    framer = Framer()
    for v in [1.0, 1.0, 1.0, 1.0, 1.0, 1.2, 0.8, 1.1]:
        framer.add(Reading(key("a"), T0, v))
    [fr] = framer.cut()
    m.process(fr)
    assert m.fit_errors == 1 and m.cohorts("l1", "coater", "weight") == []
    for v in [1.0, 1.2, 0.8, 1.1]:
        framer.add(Reading(key("a"), T0, v))
    [fr] = framer.cut()
    m.process(fr)
    assert m.cohorts("l1", "coater", "weight") == [("a",)]


DETECTORS = [
    {"kind": "cusum", "k": 0.5, "h": 4.0, "baseline": 30},
    {
        "kind": "shewhart",
        "rules": ["we2", "we3", "we4", "nelson3"],
        "max_gap_s": 5.0,
        "baseline": 30,
    },
    {"kind": "stuck", "n": 4},
]


@pytest.mark.parametrize("det", DETECTORS, ids=lambda d: d["kind"])
def test_detections_do_not_depend_on_windowing(det: dict[str, Any]) -> None:
    rng = np.random.default_rng(21)
    x = np.round(rng.normal(3.0, 0.2, size=(400, 5)), 2)  # rounding makes repeats happen
    x[200:, 1] += 0.3
    x[250:, 3] = x[250, 3]
    readings = [
        Reading(key(f"s{j}"), T0 + i * (1 + 9 * (i % 50 == 0)), float(x[i, j]))
        for i in range(x.shape[0])
        for j in range(x.shape[1])
    ]
    results = []
    for cuts in (
        [],
        list(range(3, len(readings), 3)),
        sorted(rng.choice(len(readings), size=120, replace=False).tolist()),
    ):
        m, framer, found = Monitor(plant(detector=det)), Framer(), []
        for a, b in zip([0, *cuts], [*cuts, len(readings)], strict=True):
            for r in readings[a:b]:
                framer.add(r)
            for fr in framer.cut():
                found.extend(m.process(fr).detections)
        results.append(sorted((d.key.equipment, d.ts, d.rule, d.value) for d in found))
    assert results[0], "the seeded shift and freeze should be found"
    assert results[1] == results[0] and results[2] == results[0]


def test_run_rules_restart_after_a_gap_longer_than_max_gap_s() -> None:
    # Eight points just above the centre, with a 60 s line stop after the fifth.
    times = [0.0, 1.0, 2.0, 3.0, 4.0, 64.0, 65.0, 66.0, 67.0]
    base = {"kind": "shewhart", "rules": ["we4"], "center": 0.0, "sigma": 1.0}
    for gap, expected in ((None, [66.0]), (10.0, [])):
        m, framer = Monitor(plant(detector={**base, "max_gap_s": gap} if gap else base)), Framer()
        for t in times:
            framer.add(Reading(key("a"), t, 0.5))
        found = [d for fr in framer.cut() for d in m.process(fr).detections]
        assert [d.ts for d in found] == expected, gap


def test_excluded_samples_never_reach_a_chart_and_are_counted_per_series(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="cellwatch.edge.framer")
    m = Monitor(plant(detector={"kind": "shewhart", "rules": ["we1", "we4"], **KNOWN}))
    framer = Framer()
    rng = np.random.default_rng(4)
    for i in range(40):
        framer.add(Reading(key("a"), T0 + i, float(rng.normal(0.0, 0.5))))
        if i % 10 == 3:  # wild values the device itself marked as bad or uncertain
            q = Quality.BAD if i < 20 else Quality.UNCERTAIN
            framer.add(Reading(key("a"), T0 + i + 0.5, 1e6, q))
    framer.add(Reading(key("b"), T0, math.nan))  # a good-quality value that is not a number
    framer.add(Reading(key("b"), T0 + 1, math.inf))
    framer.add(Reading(key("b"), math.nan, 1.0))  # no usable time: refused before framing
    out = [m.process(fr) for fr in framer.cut()]
    assert [d for o in out for d in o.detections] == []
    stats = {s.key.equipment: s for o in out for s in o.stats}
    assert (stats["a"].count, stats["a"].bad, stats["a"].maximum < 1e6) == (40, 4, True)
    assert (stats["b"].count, stats["b"].bad) == (0, 2)
    assert m.excluded == {key("a"): 4, key("b"): 2}
    assert (framer.excluded, framer.nonfinite, framer.rejected) == (6, 2, 1)
    msgs = sorted(r.getMessage() for r in caplog.records)
    assert len(msgs) == 2  # once per series and cause, not per sample
    assert msgs[0].startswith("l1/coater/b/weight: good-quality sample with value nan left out")
    assert msgs[1].startswith("l1/coater/b/weight: reading with time nan refused")


def test_station_default_detector_with_param_override_and_opt_out() -> None:
    cfg = plant(params=("weight", "speed", "width"))
    station = cfg.lines[0].stations[0].model_dump(exclude_unset=True)
    station["detector"] = {"kind": "stuck", "n": 3}
    station["params"][1]["detector"] = {"kind": "cusum", **KNOWN}
    station["params"][2]["detector"] = None
    data = cfg.model_dump(exclude_unset=True)
    data["lines"][0]["stations"][0] = station
    m = Monitor(type(cfg).model_validate(data))
    assert m.detector("l1", "coater", "weight").kind == "stuck"
    assert m.detector("l1", "coater", "speed").kind == "cusum"
    assert m.detector("l1", "coater", "width") is None
