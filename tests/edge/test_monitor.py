"""Monitor: Phase I cohorts, EWMA detections on rising edges, chunking invariance, stats."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from edge.framer import Framer
from edge.monitor import Monitor
from models.arl import EwmaDesign, markov_arl
from models.ewma import Ewma
from models.messages import Detection, Quality, Reading, SeriesKey
from tests.edge.plants import plant

LAM, L = 0.1, 5.0  # the example plant's chart: ARL0 2.4 million, ~14 samples for 1.5 sigma


def key(eq: str, param: str = "weight") -> SeriesKey:
    return SeriesKey("l1", "coater", eq, param)


def arl(lam: float, L: float, shift: float) -> float:  # noqa: N803
    """Zero-state ARL of an EWMA chart with asymptotic limits (Markov chain, models.arl)."""
    return markov_arl(EwmaDesign(lam=lam, L=L), shift).arl


def run(monitor: Monitor, readings: list[Reading], cuts: list[int]) -> list[Detection]:
    """Feed readings through a framer, cutting a window before each index in ``cuts``."""
    framer = Framer()
    found: list[Detection] = []
    bounds = [0, *sorted(set(cuts)), len(readings)]
    for a, b in zip(bounds, bounds[1:], strict=False):
        for r in readings[a:b]:
            if monitor.admit(r):
                framer.add(r)
        for fr in framer.cut():
            found.extend(monitor.process(fr).detections)
    return found


def interleave(data: np.ndarray, names: list[str], t0: float = 1000.0) -> list[Reading]:
    """Readings of a (time, series) array, one sample of every series per tick, in time order."""
    return [
        Reading(key(eq), t0 + i, float(data[i, j]))
        for i in range(data.shape[0])
        for j, eq in enumerate(names)
    ]


def test_arl_model_matches_the_documented_chart() -> None:
    # The plant file promises about 14 samples for a 1.5 sigma shift with lam 0.1, L 5.0, and an
    # in-control ARL of about 2.4 million samples.
    assert 13.0 < arl(LAM, L, 1.5) < 15.0
    assert 2.3e6 < arl(LAM, L, 0.0) < 2.5e6


def test_a_step_of_one_and_a_half_sigma_is_found_within_the_arl() -> None:
    rng = np.random.default_rng(7)
    n_series, before, after = 40, 300, 100
    center, sigma = 20.0, 0.1
    names = [f"lane{j:02d}" for j in range(n_series)]
    data = rng.normal(center, sigma, size=(before + after, n_series))
    data[before:] += 1.5 * sigma
    det = {"lam": LAM, "L": L, "center": center, "sigma": sigma}
    readings = interleave(data, names)
    cuts = sorted(rng.choice(len(readings), size=60, replace=False).tolist())
    found = run(Monitor(plant(detector=det)), readings, cuts)
    t_shift = 1000.0 + before
    assert [d for d in found if d.ts < t_shift] == []  # in control: L 5.0 keeps quiet
    first = {}
    for d in found:
        first.setdefault(d.key.equipment, d)
    assert sorted(first) == names  # every shifted series is found
    delays = np.array([first[eq].ts - t_shift + 1 for eq in names])
    expected = arl(LAM, L, 1.5)
    assert 0.6 * expected <= delays.mean() <= 1.4 * expected
    assert delays.max() <= 4 * expected
    d = first[names[0]]
    assert (d.rule, d.direction, d.center, d.sigma) == ("ewma", 1, center, sigma)
    assert d.value > d.limit > center
    assert d.message.startswith("EWMA ") and " above UCL " in d.message
    assert f"(center {center:.2f}, sigma {sigma:.3f})" in d.message


def test_detections_fire_on_rising_edges_only_and_the_flag_spans_windows() -> None:
    # lam 1 makes the chart a Shewhart chart: the statistic is the sample itself.
    det = {"lam": 1.0, "L": 3.0, "center": 0.0, "sigma": 1.0}
    values = [0.0, 5.0, 5.0, 0.0, 5.0, -5.0, 0.0, -5.0, -5.0]
    readings = [Reading(key("a"), float(i), v) for i, v in enumerate(values)]
    expected = [(1.0, 1), (4.0, 1), (7.0, -1)]
    for cuts in ([], [2], [1, 2, 3, 5, 8], list(range(1, 9))):
        found = run(Monitor(plant(detector=det)), readings, cuts)
        assert [(d.ts, d.direction) for d in found] == expected, cuts
    below = run(Monitor(plant(detector=det)), readings, [])[-1]
    assert below.limit == pytest.approx(-3.0) and " below LCL " in below.message


def _reference(data: np.ndarray, baseline: int) -> list[tuple[float, int]]:
    """Detections of one series by a directly fitted Ewma, as (ts, direction)."""
    ewma = Ewma(lam=LAM, L=L, min_baseline=baseline).fit(data[:baseline, None])
    sig = ewma.update(data[baseline:, None]).signal[:, 0]
    prev = np.concatenate(([0], sig[:-1]))
    return [(1000.0 + baseline + i, int(sig[i])) for i in np.flatnonzero((sig != 0) & (prev == 0))]


def test_phase_one_and_detections_do_not_depend_on_windowing() -> None:
    rng = np.random.default_rng(3)
    baseline, n = 60, 400
    names = ["a", "b", "c", "d"]
    data = rng.normal(5.0, 0.2, size=(n, len(names)))
    data[250:, 1] += 0.3  # b drifts up 1.5 sigma, d down 2 sigma
    data[200:, 3] -= 0.4
    readings = interleave(data, names)
    det = {"lam": LAM, "L": L, "baseline": baseline}
    results = []
    for cuts in ([], list(range(4, len(readings), 4)), list(range(7, len(readings), 7)),
                 sorted(rng.choice(len(readings), size=150, replace=False).tolist())):
        found = run(Monitor(plant(detector=det)), readings, cuts)
        results.append(sorted((d.key.equipment, d.ts, d.direction, d.value) for d in found))
    assert all(r == results[0] for r in results[1:])
    got = {eq: [(ts, dr) for e, ts, dr, _ in results[0] if e == eq] for eq in names}
    for j, eq in enumerate(names):
        assert got[eq] == _reference(data[:, j], baseline), eq
    assert got["b"] and got["b"][0][1] == 1
    assert got["d"] and got["d"][0][1] == -1


def test_series_completing_their_baseline_together_form_one_cohort() -> None:
    m = Monitor(plant(detector={"lam": LAM, "L": L, "baseline": 5}))
    framer = Framer()
    rng = np.random.default_rng(1)

    def window(counts: dict[str, int]) -> None:
        for eq, c in counts.items():
            for v in rng.normal(1.0, 0.1, size=c):
                framer.add(Reading(key(eq), 0.0, float(v)))
        for fr in framer.cut():
            m.process(fr)

    window({"a": 3, "b": 5, "c": 4})
    assert m.cohorts("l1", "coater", "weight") == [("b",)]
    window({"a": 2, "c": 1, "d": 2})
    window({"d": 3, "e": 9})
    assert m.cohorts("l1", "coater", "weight") == [("b",), ("a", "c"), ("d", "e")]


def test_stats_per_series_and_window() -> None:
    m = Monitor(plant(detector={"lam": LAM, "L": L, "baseline": 3}, params=("weight", "speed")))
    framer = Framer()
    for i, v in enumerate([1.0, 2.0, 3.0, 4.0]):
        framer.add(Reading(key("a"), 10.0 + i, v))
    framer.add(Reading(key("a"), 14.0, 0.0, Quality.BAD))
    framer.add(Reading(key("b"), 11.0, 7.0))
    framer.add(Reading(key("x", "speed"), 12.0, 60.0))
    out = [m.process(fr) for fr in framer.cut()]
    stats = {s.key: s for o in out for s in o.stats}
    a, b, x = stats[key("a")], stats[key("b")], stats[key("x", "speed")]
    assert (a.count, a.mean, a.minimum, a.maximum, a.bad) == (4, 2.5, 1.0, 4.0, 1)
    assert (a.ts_start, a.ts_end) == (10.0, 14.0)
    # a had 3 baseline samples and one monitored sample: its chart runs; b is in Phase I.
    assert a.statistic is not None and a.lcl is not None and a.ucl is not None
    assert a.lcl < a.statistic < a.ucl
    assert (b.count, b.statistic) == (1, None)
    assert (x.count, x.mean, x.statistic) == (1, 60.0, None)  # no detector configured
    for fr_out in out:
        assert fr_out.detections == ()
    for s in stats.values():
        for v in (s.ts_start, s.mean, s.statistic):
            assert v is None or type(v) is float


def test_readings_of_undeclared_parameters_are_refused_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    m = Monitor(plant())
    caplog.set_level(logging.WARNING, logger="cellwatch.edge.monitor")
    assert m.admit(Reading(key("a"), 1.0, 1.0))
    assert not m.admit(Reading(key("a", "humidity"), 1.0, 1.0))
    assert not m.admit(Reading(key("a", "humidity"), 2.0, 1.0))
    assert not m.admit(Reading(SeriesKey("l1", "nowhere", "a", "weight"), 2.0, 1.0))
    assert m.rejected == 3
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 2
    assert "l1/coater/a/humidity" in msgs[0] and "parameter" in msgs[0]
    assert "station" in msgs[1]


def test_a_flat_baseline_is_rejected_and_collected_again_without_holding_back_others() -> None:
    m = Monitor(plant(detector={"lam": LAM, "L": L, "baseline": 4}))
    framer = Framer()
    for v in [1.0, 1.0, 1.0, 1.0]:
        framer.add(Reading(key("flat"), 0.0, v))
    for v in [1.0, 1.1, 0.9, 1.05]:
        framer.add(Reading(key("ok"), 0.0, v))
    [fr] = framer.cut()
    m.process(fr)
    assert m.fit_errors == 1
    assert m.cohorts("l1", "coater", "weight") == [("ok",)]
    for v in [1.0, 1.2, 0.8, 1.1]:
        framer.add(Reading(key("flat"), 0.0, v))
    [fr] = framer.cut()
    m.process(fr)
    assert m.cohorts("l1", "coater", "weight") == [("ok",), ("flat",)]
