"""Framer: grouping per parameter, column layout, NaN padding, exclusion of unusable samples."""

from __future__ import annotations

import math

import numpy as np

from edge.framer import Framer
from models.messages import Quality, Reading, SeriesKey


def key(eq: str, param: str = "weight", station: str = "coater") -> SeriesKey:
    return SeriesKey("l1", station, eq, param)


def test_groups_per_line_station_param_and_sorts_them() -> None:
    f = Framer()
    f.add(Reading(key("a", "speed"), 1.0, 60.0))
    f.add(Reading(key("a", "weight"), 1.0, 20.0))
    f.add(Reading(key("c1", "voltage", "formation"), 1.0, 3.7))
    frames = f.cut()
    assert [fr.group for fr in frames] == [
        ("l1", "coater", "speed"), ("l1", "coater", "weight"), ("l1", "formation", "voltage"),
    ]
    assert [fr.values.tolist() for fr in frames] == [[[60.0]], [[20.0]], [[3.7]]]


def test_columns_are_top_aligned_in_arrival_order_with_nan_padding_and_times() -> None:
    f = Framer()
    rows = [("b", 1.0, 5.0), ("a", 1.0, 1.0), ("b", 2.0, 6.0), ("b", 3.0, 7.0), ("a", 2.5, 2.0)]
    for eq, ts, v in rows:
        f.add(Reading(key(eq), ts, v))
    [fr] = f.cut()
    assert fr.equipment == ("a", "b")
    np.testing.assert_array_equal(fr.values, [[1.0, 5.0], [2.0, 6.0], [np.nan, 7.0]])
    np.testing.assert_array_equal(fr.times, [[1.0, 1.0], [2.5, 2.0], [np.nan, 3.0]])
    assert fr.count.tolist() == [2, 3]
    assert fr.bad.tolist() == [0, 0]
    assert len(fr.readings) == 5


def test_bad_uncertain_and_non_finite_samples_are_excluded_and_counted() -> None:
    f = Framer()
    f.add(Reading(key("a"), 1.0, 1.0))
    f.add(Reading(key("a"), 2.0, 99.0, Quality.BAD))
    f.add(Reading(key("a"), 3.0, 98.0, Quality.UNCERTAIN))
    f.add(Reading(key("a"), 4.0, math.nan))
    f.add(Reading(key("a"), 5.0, math.inf))
    f.add(Reading(key("a"), 6.0, 2.0))
    f.add(Reading(key("z"), 7.0, 0.0, Quality.BAD))
    [fr] = f.cut()
    assert fr.equipment == ("a", "z")
    np.testing.assert_array_equal(fr.values, [[1.0, np.nan], [2.0, np.nan]])
    assert fr.count.tolist() == [2, 0]
    assert fr.bad.tolist() == [4, 1]
    assert fr.ts_start.tolist() == [1.0, 7.0] and fr.ts_end.tolist() == [6.0, 7.0]
    assert len(fr.readings) == 7  # telemetry keeps them all
    assert f.excluded == 5


def test_cut_starts_a_new_window() -> None:
    f = Framer()
    f.add(Reading(key("a"), 1.0, 1.0))
    assert len(f) == 1
    assert len(f.cut()) == 1
    assert len(f) == 0
    assert f.cut() == []
    f.add(Reading(key("a"), 2.0, 3.0))
    [fr] = f.cut()
    assert fr.values.tolist() == [[3.0]]
