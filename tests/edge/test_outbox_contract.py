"""The outbox contract, run against the in-memory and the SQLite outbox alike.

Numbering, oldest-first peeking, acknowledgement of a batch's subset, both drop policies and
their counters, and a randomized comparison against a plain reference model. The tests at the
end are about what only a file can do: continue after a restart, refuse a second user, set a
damaged file aside.
"""

from __future__ import annotations

import re
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.outbox import (
    Item,
    Mark,
    MemoryOutbox,
    Outbox,
    OutboxError,
    SqliteOutbox,
    open_outbox,
)
from models.configfile import ConfigError, parse_plant
from models.plant import OutboxConfig

KINDS = ["memory", "sqlite"]
Make = Callable[..., Outbox]


def _make(kind: str, directory: Path) -> Make:
    made: list[Outbox] = []

    def make(**kw: Any) -> Outbox:
        box: Outbox
        if kind == "memory":
            box = MemoryOutbox(start_seq=kw.pop("start_seq", 1000), **kw)
        else:
            kw.pop("start_seq", None)
            box = SqliteOutbox(directory / "outbox.sqlite", **kw)
        made.append(box)
        return box

    make.made = made  # type: ignore[attr-defined]
    return make


@pytest.fixture(params=KINDS)
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Make]:
    """A factory of empty outboxes of one kind, closed after the test."""
    factory = _make(request.param, tmp_path)
    yield factory
    for box in factory.made:  # type: ignore[attr-defined]
        box.close()


def body(seq: int, size: int = 10) -> bytes:
    """``size`` bytes that name the sequence number (as an encoded envelope does)."""
    return (f"{seq}|".encode() * size)[:size]


def put(box: Outbox, topic: str = "t/a", size: int = 10) -> Item | None:
    return box.put(topic, lambda seq: body(seq, size))


def test_put_numbers_consecutively_and_peek_returns_oldest_first(make: Make) -> None:
    box = make()
    start = box.start_seq
    assert box.last_seq == start and box.depth == 0 and box.nbytes == 0
    items = [put(box, size=10 + i) for i in range(5)]
    assert [it.seq for it in items if it] == [start + 1 + i for i in range(5)]
    assert all(it is not None and it.payload == body(it.seq, it.size) for it in items)
    assert box.last_seq == start + 5
    assert (box.depth, box.nbytes) == (5, sum(10 + i for i in range(5)))
    assert box.peek(3) == items[:3]
    assert box.peek(10, after=start + 2) == items[2:]
    assert box.peek(0) == [] and box.peek(5, after=start + 5) == []
    assert box.depth == 5, "peek must not remove anything"


def test_a_batch_is_begun_and_only_what_the_broker_acknowledged_leaves(make: Make) -> None:
    box = make()
    items = [put(box) for _ in range(6)]
    seqs = [it.seq for it in items if it]
    batch = box.peek(4)
    assert [it.seq for it in batch] == seqs[:4]
    # The broker acknowledged the first and the third of the batch; the rest stays, in order.
    assert box.ack([seqs[0], seqs[2]]) == 2
    assert [it.seq for it in box.peek(10)] == [seqs[1], seqs[3], seqs[4], seqs[5]]
    assert (box.depth, box.nbytes) == (4, 40)
    assert box.ack([seqs[0], 12345, seqs[2]]) == 0, "unknown or repeated acks change nothing"
    assert box.ack([]) == 0
    assert box.ack(seqs) == 4
    assert (box.depth, box.nbytes, box.peek(10)) == (0, 0, [])
    assert put(box).seq == seqs[-1] + 1, "numbers are never reused after the outbox empties"


def test_a_failing_build_stores_nothing_and_uses_no_number(make: Make) -> None:
    box = make()
    first = put(box)

    def broken(seq: int) -> bytes:
        raise ValueError(f"cannot encode {seq}")

    with pytest.raises(ValueError, match="cannot encode"):
        box.put("t/a", broken)
    assert box.depth == 1 and box.last_seq == first.seq
    assert put(box).seq == first.seq + 1


def test_drop_oldest_makes_room_counts_and_leaves_a_gap(make: Make) -> None:
    box = make(max_bytes=100, drop="oldest")
    items = [put(box, size=30) for _ in range(3)]  # 90 bytes
    new = put(box, size=30)  # 120 > 100: the oldest goes
    assert new is not None
    assert [it.seq for it in box.peek(10)] == [items[1].seq, items[2].seq, new.seq]
    assert (box.dropped, box.depth, box.nbytes) == (1, 3, 90)
    big = put(box, size=80)  # needs all three gone
    assert [it.seq for it in box.peek(10)] == [big.seq]
    assert (box.dropped, box.nbytes) == (4, 80)


def test_drop_newest_refuses_the_new_envelope_and_counts_it(make: Make) -> None:
    box = make(max_bytes=100, drop="newest")
    items = [put(box, size=30) for _ in range(3)]
    assert put(box, size=30) is None
    assert put(box, size=30) is None
    assert [it.seq for it in box.peek(10)] == [it.seq for it in items]
    assert (box.dropped, box.depth, box.nbytes) == (2, 3, 90)
    assert put(box, size=10).seq == items[-1].seq + 3, "a refused envelope used its number"


@pytest.mark.parametrize("drop", ["oldest", "newest"])
def test_the_count_bound_applies_like_the_byte_bound(make: Make, drop: str) -> None:
    box = make(max_items=3, drop=drop)
    items = [put(box) for _ in range(5)]
    kept = [it.seq for it in box.peek(10)]
    if drop == "oldest":
        assert kept == [it.seq for it in items[2:]]
    else:
        assert kept == [it.seq for it in items[:3]] and items[3] is None and items[4] is None
    assert (box.depth, box.dropped) == (3, 2)


def test_marks_go_with_their_envelope_and_the_latest_per_source_wins(make: Make) -> None:
    box = make(max_bytes=100, drop="newest")
    assert box.marks() == {}
    a1, b1, a2 = Mark("fa", b"1"), Mark("fb", b"2"), Mark("fa", b"3")
    box.put("t/a", lambda seq: body(seq), {"a": a1, "b": b1})
    put(box)  # no marks: the stored ones stay
    assert box.marks() == {"a": a1, "b": b1}
    # Refused by the drop policy: its data is a counted loss, and the mark still moves on.
    assert box.put("t/a", lambda seq: body(seq, 101), {"a": a2}) is None
    assert box.marks() == {"a": a2, "b": b1}


def test_a_failing_build_stores_no_mark(make: Make) -> None:
    box = make()

    def fail(seq: int) -> bytes:
        raise ValueError("cannot encode")

    with pytest.raises(ValueError):
        box.put("t/a", fail, {"a": Mark("f", b"x")})
    assert box.marks() == {}


@pytest.mark.parametrize("drop", ["oldest", "newest"])
def test_an_envelope_larger_than_the_outbox_is_refused_not_emptying_it(
    make: Make, drop: str
) -> None:
    box = make(max_bytes=100, drop=drop)
    kept = put(box, size=50)
    assert put(box, size=101) is None
    assert [it.seq for it in box.peek(10)] == [kept.seq]
    assert box.dropped == 1


def test_oldest_ts_is_the_age_of_the_head(make: Make) -> None:
    box = make()
    assert box.oldest_ts is None
    a, b = put(box), put(box)
    assert a.ts <= b.ts
    assert box.oldest_ts == a.ts
    box.ack([a.seq])
    assert box.oldest_ts == b.ts
    box.ack([b.seq])
    assert box.oldest_ts is None


def test_order_is_kept_per_topic_across_interleaved_topics(make: Make) -> None:
    box = make()
    topics = ["s/coater/telemetry", "s/coater/stats", "s/_edge/gw/status"]
    for i in range(30):
        put(box, topic=topics[i % 3])
    out = box.peek(100)
    for t in topics:
        seqs = [it.seq for it in out if it.topic == t]
        assert seqs == sorted(seqs) and len(seqs) == 10


# -- randomized: against a reference model ----------------------------------------------------

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(1, 60), st.sampled_from(["a", "b"])),
        st.tuples(st.just("peek_ack"), st.integers(0, 8), st.integers(0, 255)),
    ),
    max_size=60,
)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=60, deadline=None)
@given(
    ops=OPS,
    max_bytes=st.integers(60, 300),
    max_items=st.integers(1, 12),
    drop=st.sampled_from(["oldest", "newest"]),
)
def test_random_operations_match_a_reference_model(
    kind: str, ops: list[tuple[str, int, Any]], max_bytes: int, max_items: int, drop: str
) -> None:
    with tempfile.TemporaryDirectory() as d:
        box = _make(kind, Path(d))(max_bytes=max_bytes, max_items=max_items, drop=drop)
        try:
            model: list[tuple[int, str, int]] = []  # (seq, topic, size), oldest first
            last, dropped = box.start_seq, 0
            for op in ops:
                if op[0] == "put":
                    _, size, topic = op
                    last += 1
                    got = box.put(topic, lambda seq, n=size: body(seq, n))
                    total = sum(s for _, _, s in model)
                    full = bool(model) and (total + size > max_bytes or len(model) >= max_items)
                    if size > max_bytes or (full and drop == "newest"):
                        assert got is None
                        dropped += 1
                        continue
                    assert got is not None and got.seq == last
                    while model and (
                        sum(s for _, _, s in model) + size > max_bytes or len(model) >= max_items
                    ):
                        model.pop(0)
                        dropped += 1
                    model.append((last, topic, size))
                else:
                    _, n, mask = op
                    batch = box.peek(n)
                    assert [(it.seq, it.topic, it.size) for it in batch] == model[:n]
                    acked = [it.seq for i, it in enumerate(batch) if mask >> i & 1]
                    assert box.ack(acked) == len(acked)
                    model = [m for m in model if m[0] not in acked]
                assert (box.depth, box.nbytes) == (len(model), sum(s for _, _, s in model))
                assert box.dropped == dropped and box.last_seq == last
            assert [(it.seq, it.topic, it.size) for it in box.peek(1000)] == model
        finally:
            box.close()


# -- what only the file does --------------------------------------------------------------------


def test_a_reopened_file_keeps_what_waits_and_continues_the_numbers(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    box = SqliteOutbox(path, max_items=4)
    items = [put(box, topic=f"t/{i % 2}") for i in range(6)]  # two dropped
    box.ack([items[2].seq])
    box.close()
    again = SqliteOutbox(path, max_items=4)
    try:
        assert again.recovered == 3 and again.depth == 3 and again.nbytes == 30
        assert again.peek(10) == [items[3], items[4], items[5]]
        assert again.start_seq == items[-1].seq and again.dropped == 0
        assert again.dropped_total == 2
        assert put(again).seq == items[-1].seq + 1
    finally:
        again.close()


def test_a_reopened_file_keeps_the_marks_stored_with_its_envelopes(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    box = SqliteOutbox(path)
    box.put("t/a", lambda seq: body(seq), {"opc": Mark("f1", bytes(range(16)))})
    box.ack([it.seq for it in box.peek(10)])  # acknowledged: the mark is about collection
    box.close()
    box = SqliteOutbox(path)
    try:
        assert box.marks() == {"opc": Mark("f1", bytes(range(16)))}
    finally:
        box.close()


def test_numbers_continue_after_everything_was_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    box = SqliteOutbox(path)
    last = [put(box) for _ in range(3)][-1]
    box.ack(range(last.seq - 2, last.seq + 1))
    assert box.depth == 0
    box.close()
    again = SqliteOutbox(path)
    try:
        assert put(again).seq == last.seq + 1
    finally:
        again.close()


def test_a_second_agent_on_the_same_file_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    box = SqliteOutbox(path)
    try:
        with pytest.raises(OutboxError, match=r"o\.sqlite is in use by another process"):
            SqliteOutbox(path)
        assert put(box) is not None, "the first one is undisturbed"
    finally:
        box.close()


def test_a_damaged_file_is_moved_aside_and_an_empty_outbox_starts(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    path.write_bytes(b"this is not a database at all" * 200)
    box = SqliteOutbox(path)
    try:
        assert box.quarantined is not None and box.quarantined.exists()
        assert box.quarantined.read_bytes().startswith(b"this is not a database")
        assert box.depth == 0 and put(box) is not None
    finally:
        box.close()


def test_a_file_of_another_layout_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY, data BLOB)")
    with pytest.raises(OutboxError, match=r"columns \['id', 'data'\].*edge\.outbox\.path"):
        SqliteOutbox(path)


def test_an_unusable_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutboxError, match="cannot create the directory of outbox"):
        SqliteOutbox(blocker / "sub" / "o.sqlite")


def test_open_outbox_builds_what_the_config_names(tmp_path: Path) -> None:
    mem = open_outbox(OutboxConfig(max_bytes=5000, drop="newest"), max_items=7)
    assert isinstance(mem, MemoryOutbox)
    assert (mem.max_bytes, mem.max_items, mem.drop) == (5000, 7, "newest")
    path = tmp_path / "deep" / "o.sqlite"
    box = open_outbox(OutboxConfig(kind="sqlite", path=str(path), sync="full"), max_items=9)
    try:
        assert isinstance(box, SqliteOutbox) and path.exists() and box.max_items == 9
    finally:
        box.close()


@pytest.mark.parametrize(
    ("outbox", "key", "allowed", "given"),
    [
        ("{kind: sqlite}", "path", "must name the outbox file when kind is sqlite", "None"),
        ("{kind: disk}", "kind", "'memory'.*'sqlite'", "'disk'"),
        ("{drop: random}", "drop", "'oldest'.*'newest'", "'random'"),
        ("{max_bytes: 10}", "max_bytes", ">= 4096", "10"),
        ("{sync: fast}", "sync", "'normal'.*'full'", "'fast'"),
    ],
)
def test_outbox_config_errors_name_the_key_the_allowed_and_the_given(
    outbox: str, key: str, allowed: str, given: str
) -> None:
    text = f"site: {{id: p}}\nlines: [{{id: l, area: a}}]\nedge:\n  outbox: {outbox}\n"
    with pytest.raises(ConfigError) as info:
        parse_plant(text, "x.yaml")
    (problem,) = [str(p) for p in info.value.problems]
    assert re.fullmatch(rf"x\.yaml:4 edge\.outbox\.{key}: .*{allowed}.*, got {given}", problem)
