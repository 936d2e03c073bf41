"""An OPC UA source's collection mark: what it records, and when a restarted source trusts it.

Pure logic on a source that never connects; the end-to-end case (kill -9 of the agent, the
restarted agent backfilling from the mark in its outbox) is in `test_forwarder_faults`.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
from asyncua import ua

from edge.opcua_source import OpcUaSource
from tests.edge.test_opcua_source import NODES, config

URL = "opc.tcp://127.0.0.1:4840/never"


def sample(src: OpcUaSource, handle: int, ts: float) -> None:
    """A live data change of node ``handle`` with source timestamp ``ts``."""
    dv = ua.DataValue(
        ua.Variant(20.0, ua.VariantType.Double),
        SourceTimestamp=datetime.fromtimestamp(ts, UTC),
    )
    src._on_change(handle, dv, 20.0)  # noqa: SLF001 - the subscription's entry point


def test_a_mark_holds_each_nodes_last_sample_and_resumes_a_new_source() -> None:
    src = OpcUaSource(config(URL))
    assert src.mark() is None  # nothing emitted yet
    sample(src, 1, 1000.0)
    sample(src, 1, 1001.5)
    mark = src.mark()
    assert mark is not None
    assert src.mark() is None  # nothing new since: nothing to store again

    again = OpcUaSource(config(URL))
    assert again.resume(mark) == 1  # only node 1 had a sample
    # The resumed source starts where the mark says: its next mark keeps node 1 at 1001.5
    # (the gap a backfill reads starts there) and adds what it collects itself.
    sample(again, 2, 1002.0)
    later = again.mark()
    assert later is not None
    assert np.frombuffer(later.state, np.float64).tolist()[:2] == [1001.5, 1002.0]
    assert OpcUaSource(config(URL)).resume(later) == 2


def test_a_mark_of_other_nodes_or_without_backfill_is_not_used() -> None:
    src = OpcUaSource(config(URL))
    sample(src, 1, 1000.0)
    mark = src.mark()
    assert mark is not None
    other = OpcUaSource(config(URL, list(reversed(NODES))))
    assert other.fingerprint != src.fingerprint
    assert other.resume(mark) == 0
    moved = OpcUaSource(config("opc.tcp://127.0.0.1:4841/other"))
    assert moved.resume(mark) == 0
    off = OpcUaSource(config(URL).model_copy(update={"backfill": False}))
    assert off.resume(mark) == 0
    sample(off, 1, 1000.0)
    assert off.mark() is None


def test_nodes_without_a_sample_stay_unmarked() -> None:
    src = OpcUaSource(config(URL))
    sample(src, 2, 5.0)
    mark = src.mark()
    assert mark is not None
    state = np.frombuffer(mark.state, np.float64)
    assert state.shape == (len(NODES),)
    assert state[1] == 5.0
    assert all(math.isnan(x) for i, x in enumerate(state) if i != 1)
