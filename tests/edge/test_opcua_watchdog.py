"""The pure parts of OPC UA self-healing: deadlines, the ladder, stale nodes, clock skew."""

from __future__ import annotations

import doctest
import importlib
import logging

import pytest

from edge.clock_skew import WINDOW, SkewEstimator
from edge.watchdog import Action, Escalation, StaleWatchdog, keepalive_deadline


@pytest.mark.parametrize("name", ["edge.watchdog", "edge.clock_skew", "edge.opcua_nodes"])
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0


def test_keepalive_deadline_covers_the_keepalive_interval_with_grace() -> None:
    assert keepalive_deadline(1000, 10) == 12.0  # 10 intervals + 2
    assert keepalive_deadline(100, 3) == 0.8  # 0.3 s + the 0.5 s floor of the grace
    for interval, count in [(20, 1), (250, 10), (5000, 3)]:
        assert keepalive_deadline(interval, count) > interval * count / 1000


def test_ladder_climbs_repeats_the_top_and_resets_on_data_or_after_quiet() -> None:
    e = Escalation(reset_after_s=60)
    assert [e.next(t) for t in (0, 5, 10, 15)] == [
        Action.RESUBSCRIBE,
        Action.NEW_SESSION,
        Action.NEW_CLIENT,
        Action.NEW_CLIENT,
    ]
    e.healthy()
    assert e.next(20) is Action.RESUBSCRIBE
    assert e.next(25) is Action.NEW_SESSION
    assert e.next(100) is Action.RESUBSCRIBE  # the last action held for over a minute


def test_stale_nodes_are_reported_once_and_recover_on_a_sample() -> None:
    w = StaleWatchdog({1: 1.0, 2: 5.0}, now=0.0)
    assert w.check(0.5) == [] and not w.all_stale(0.5)
    assert w.check(1.5) == [1]
    assert w.check(2.0) == []  # reported once, not at every check
    assert w.seen(1, 2.5) is True and w.stale == set()
    assert w.seen(1, 2.6) is False  # not stale, nothing to recover
    assert w.seen(99, 2.6) is False  # unwatched handles are ignored
    assert sorted(w.check(6.0)) == [1, 2] and w.all_stale(6.0)


def test_a_new_subscription_gets_a_full_period_before_it_is_judged() -> None:
    w = StaleWatchdog({1: 1.0, 2: 1.0, 3: 1.0}, now=0.0)
    assert sorted(w.check(2.0)) == [1, 2, 3] and w.all_stale(2.0)
    w.restart(10.0, [1, 2, 4])  # node 3 is no longer subscribed, 4 has no limit
    assert set(w.active) == {1, 2} and w.stale == {1, 2}  # marks stay until data comes
    assert not w.all_stale(10.5)
    assert w.check(10.5) == [] and w.all_stale(11.0)
    empty = StaleWatchdog({}, now=0.0)
    assert not empty and not empty.all_stale(100.0)


def test_skew_is_a_robust_median_and_logs_only_on_crossings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    est = SkewEstimator("plc", warn_s=2.0, log=logging.getLogger("test.skew"))
    assert est.update(0.0) is None
    for _ in range(10):
        est.add(-0.05)  # transit time only: within the limit
    assert est.update(0.0) == -0.05 and not caplog.messages
    for off in [5.0] * WINDOW:  # the clock jumps 5 s ahead
        est.add(off)
        est.update(0.0)
    est.add(1e9)  # one absurd timestamp moves nothing
    assert est.update(0.0) == 5.0
    for _ in range(WINDOW):
        est.add(-3.0)  # now 3 s behind: still beyond the limit, no new warning
        est.update(0.0)
    for _ in range(WINDOW):
        est.add(0.0)
    assert est.update(0.0) == 0.0
    warned, back = caplog.messages  # one warning on the way out, one note on the way back
    assert "device clock runs" in warned and "ahead of the gateway's" in warned
    assert "limit is 2 s" in warned
    assert "device clock skew back within 2 s" in back


def test_a_node_off_the_sources_clock_is_named_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    est = SkewEstimator("plc", 2.0, logging.getLogger("test.skew"), name=lambda k: f"node {k}")
    for t in range(5):
        for key in range(1, 6):
            est.add(-0.1, key)
        est.add(30.0, 6)  # one sub-device with its own clock
        est.update(float(t))
    assert est.estimate == -0.1 and set(est.off) == {6}
    for t in range(5, 60):
        est.add(-0.1, 6)  # its clock is set right
        est.update(float(t))
    assert est.off == {}
    warned, back = caplog.messages
    assert "timestamps of node 6 run 30.100 s off the source's clock" in warned
    assert "timestamps of node 6 back in line" in back
