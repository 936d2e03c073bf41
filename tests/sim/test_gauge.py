"""The traversing beta gauge: scan geometry, unbiased lane averages, faults showing in scans."""

from __future__ import annotations

import doctest
import json
import math

import numpy as np
import pytest

import sim.gauge
from sim.coating import AREAL_WEIGHT, CoatingModel
from sim.fault import FaultSpec
from sim.gauge import BetaGauge, GaugeScan, scan_payload, web_width_mm
from sim.web import WebModel, WebPosition

T0 = 1_700_000_000.0
WEB = WebModel()


def _scans(gauge: BetaGauge, means: np.ndarray, n: int, side: str = "A") -> list[GaugeScan]:
    return [
        gauge.scan(T0 + k * gauge.scan_s, side, means, WEB.position(k * gauge.scan_s))
        for k in range(n)
    ]


def test_doctests() -> None:
    result = doctest.testmod(sim.gauge)
    assert result.attempted > 0 and result.failed == 0


def test_points_lie_on_the_lanes_only_in_cd_order() -> None:
    gauge = BetaGauge(lanes=4, seed=1, lane_width_mm=150.0, gap_mm=30.0, points_per_lane=12)
    scan = gauge.scan(T0, "B", np.full(4, 20.0), WEB.position(0.0))
    bounds = gauge.lane_bounds_mm()
    assert bounds.tolist() == [[30.0, 180.0], [210.0, 360.0], [390.0, 540.0], [570.0, 720.0]]
    assert gauge.width_mm == web_width_mm(4, 150.0, 30.0) == 750.0
    assert scan.pos_mm.shape == scan.areal_weight.shape == (48,)
    assert np.all(np.diff(scan.pos_mm) > 0)
    lane_of = np.searchsorted(bounds[:, 0], scan.pos_mm, side="right") - 1
    inside = (scan.pos_mm > bounds[lane_of, 0]) & (scan.pos_mm < bounds[lane_of, 1])
    assert inside.all()  # no point in a gap or beyond the web edges
    assert np.bincount(lane_of).tolist() == [12] * 4
    # Evenly spaced on each lane: the bin centres, 12.5 mm apart.
    assert np.allclose(np.diff(scan.pos_mm[:12]), 150.0 / 12)


def test_scan_carries_times_side_and_web_position() -> None:
    gauge = BetaGauge(lanes=2, seed=1, scan_s=4.0)
    web = WebPosition("R00007", 123.5, 7323.5)
    scan = gauge.scan(T0, "B", np.array([20.0, 21.0]), web)
    assert (scan.ts_start, scan.ts_end, scan.side) == (T0, T0 + 4.0, "B")
    assert (scan.roll_id, scan.md_m) == ("R00007", 123.5)


def test_scan_lane_means_are_the_means_of_their_points() -> None:
    gauge = BetaGauge(lanes=3, seed=2)
    scan = gauge.scan(T0, "A", np.array([19.0, 20.0, 21.0]), WEB.position(0.0))
    per_lane = scan.areal_weight.reshape(3, gauge.points_per_lane).mean(axis=1)
    assert np.allclose(scan.lane_means, per_lane, rtol=0, atol=1e-12)


def test_scan_lane_means_are_unbiased_for_the_given_means() -> None:
    n = 400
    gauge = BetaGauge(lanes=4, seed=3)
    given = np.array([20.0, 20.6, 19.4, 20.1])
    got = np.array([s.lane_means for s in _scans(gauge, given, n)])
    # Each scan's lane mean averages points_per_lane independent readings; over n scans the
    # SE of the mean is point_sigma / sqrt(points_per_lane * n).
    se = gauge.point_sigma / math.sqrt(gauge.points_per_lane * n)
    assert np.all(np.abs(got.mean(axis=0) - given) < 5 * se)
    # ... and their spread is the averaged point noise, nothing more (SE of an SD ~ 1/sqrt(2n)).
    sd = gauge.point_sigma / math.sqrt(gauge.points_per_lane)
    assert np.all(np.abs(got.std(axis=0, ddof=1) / sd - 1.0) < 5 / math.sqrt(2 * n))


def test_lane_edges_are_heavy_and_the_edge_shape_is_mean_zero() -> None:
    n = 400
    gauge = BetaGauge(lanes=2, seed=4, edge_gain=0.03, edge_mm=6.0)
    shape = gauge.edge_profile()
    assert abs(shape.sum()) < 1e-12
    assert shape[0] == shape[-1] == shape.max() > 0 > shape[len(shape) // 2]
    mean = 20.0
    profiles = np.array([s.areal_weight for s in _scans(gauge, np.full(2, mean), n)])
    avg = profiles.mean(axis=0).reshape(2, gauge.points_per_lane)
    centre = gauge.points_per_lane // 2
    edge_delta = avg[:, [0, -1]].mean(axis=1) - avg[:, centre]
    expected = mean * (shape[0] - shape[centre])
    # edge average of 2 points and one centre point over n scans: SE = sigma*sqrt(1/2n + 1/n).
    se = gauge.point_sigma * math.sqrt(1.5 / n)
    assert np.all(np.abs(edge_delta - expected) < 5 * se)
    assert expected > 5 * se  # the effect is large enough to be seen at all
    # A flat gauge (no edge) reads flat.
    flat = BetaGauge(lanes=1, seed=4, edge_gain=0.0)
    assert not flat.edge_profile().any()


def test_a_shifted_lane_shows_in_its_scans() -> None:
    n = 200
    model = CoatingModel(
        seed=5,
        lanes=4,
        fault=FaultSpec(lane=3, side="A", shift_sigma=3.0, start_s=0.0),
        start_ts=T0,
    )
    gauge = BetaGauge(lanes=4, seed=5)
    lane_means = []
    for k in range(n):
        ts = T0 + k * gauge.scan_s
        sample = model.sample(ts)
        scan = gauge.scan(ts, "A", sample.areal_weight[:, 0], sample.web)
        lane_means.append(scan.lane_means)
    got = np.array(lane_means)
    shift = 3.0 * AREAL_WEIGHT.sigma
    others = got[:, [0, 1, 3]].mean(axis=1)
    # Per scan a lane mean varies by the sample noise and the averaged point noise; the
    # difference of lane 3 and the mean of three others has variance v * (1 + 1/3).
    v = AREAL_WEIGHT.sigma**2 + gauge.point_sigma**2 / gauge.points_per_lane
    se = math.sqrt(v * (1 + 1 / 3) / n)
    assert abs((got[:, 2] - others).mean() - shift) < 5 * se
    assert shift > 10 * se


def test_a_lane_without_a_mean_gives_no_points() -> None:
    gauge = BetaGauge(lanes=3, seed=6, points_per_lane=5)
    scan = gauge.scan(T0, "A", np.array([20.0, np.nan, 20.0]), WEB.position(0.0))
    bounds = gauge.lane_bounds_mm()
    assert scan.pos_mm.shape == (10,)
    assert not np.any((scan.pos_mm > bounds[1, 0]) & (scan.pos_mm < bounds[1, 1]))
    assert math.isnan(scan.lane_means[1])
    assert np.all(np.isfinite(scan.lane_means[[0, 2]]))
    assert np.all(np.isfinite(scan.areal_weight))


def test_a_dropout_does_not_shift_the_following_scans() -> None:
    web = WEB.position(0.0)
    a, b = BetaGauge(lanes=2, seed=7), BetaGauge(lanes=2, seed=7)
    a.scan(T0, "A", np.array([20.0, 20.0]), web)
    b.scan(T0, "A", np.array([np.nan, 20.0]), web)
    after_a = a.scan(T0 + 6, "A", np.array([20.0, 20.0]), web)
    after_b = b.scan(T0 + 6, "A", np.array([20.0, 20.0]), web)
    assert np.array_equal(after_a.areal_weight, after_b.areal_weight)


def test_same_seed_same_scans() -> None:
    means = np.array([20.0, 20.2])

    def profile(seed: int) -> np.ndarray:
        return np.array([s.areal_weight for s in _scans(BetaGauge(2, seed), means, 20)])

    assert np.array_equal(profile(11), profile(11))
    assert not np.allclose(profile(11), profile(12))


def test_payload_is_compact_json() -> None:
    gauge = BetaGauge(lanes=2, seed=8, points_per_lane=4)
    scan = gauge.scan(
        T0 + 0.123456, "B", np.array([20.0, np.nan]), WebPosition("R00002", 1.23456, 1201.23456)
    )
    payload = scan_payload(scan)
    text = json.dumps(payload, allow_nan=False)  # NaN would not be JSON
    back = json.loads(text)
    assert back == {
        "ts": round(T0 + 0.123456, 3),
        "te": round(T0 + 6.123456, 3),
        "side": "B",
        "roll": "R00002",
        "md_m": 1.235,
        "pos_mm": [45.0, 95.0, 145.0, 195.0],
        "aw": pytest.approx(scan.areal_weight.tolist(), abs=5e-5),
        "lane_aw": [pytest.approx(float(scan.lane_means[0]), abs=5e-5), None],
    }
    assert all(len(repr(v).split(".")[1]) <= 4 for v in back["aw"])


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"lanes": 0}, "lanes"),
        ({"lanes": 2, "lane_width_mm": 0.0}, "lane_width_mm"),
        ({"lanes": 2, "gap_mm": 0.0}, "gap_mm"),
        ({"lanes": 2, "points_per_lane": 0}, "points_per_lane"),
        ({"lanes": 2, "scan_s": math.nan}, "scan_s"),
        ({"lanes": 2, "edge_mm": -1.0}, "edge_mm"),
        ({"lanes": 2, "edge_gain": 0.9}, "edge_gain"),
        ({"lanes": 2, "point_sigma": -0.1}, "point_sigma"),
    ],
)
def test_bad_parameters_name_themselves(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name} must be in .*, got"):
        BetaGauge(**kwargs)


def test_bad_scan_input_is_refused() -> None:
    gauge = BetaGauge(lanes=2, seed=1)
    web = WEB.position(0.0)
    with pytest.raises(ValueError, match="side must be one of A, B, got 'C'"):
        gauge.scan(T0, "C", np.full(2, 20.0), web)
    with pytest.raises(ValueError, match=r"lane_means must have shape \(2,\), got \(3,\)"):
        gauge.scan(T0, "A", np.full(3, 20.0), web)
