"""The SQLite outbox survives kill -9: nothing stored is lost, nothing is torn, no number is
reused.

A child process puts envelopes (1 KB and 50 KB, so that WAL checkpoints happen) into the
outbox and acknowledges batches, printing each operation once it has returned, and an ``ack``
line also before it starts. The test kills it with SIGKILL at a random moment, reopens the
file and checks it against what the child reported: every envelope put and not (being)
acknowledged is there, byte for byte; nothing acknowledged is; at most the one put in
progress appears beyond what was reported. Then the next child continues on the same file,
and its numbers must continue above everything ever used.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

from edge.outbox import SqliteOutbox

ROOT = Path(__file__).resolve().parents[2]

#: The child: put forever, acknowledge the oldest five after every seventh put.
WRITER = r"""
import hashlib, sys
from edge.outbox import SqliteOutbox

def body(seq):
    size = 50_000 if seq % 10 == 0 else 1_000
    head = hashlib.sha256(str(seq).encode()).hexdigest().encode()
    return (head * (size // len(head) + 1))[:size]

box = SqliteOutbox(sys.argv[1], max_bytes=1 << 40, max_items=1 << 40)
print("open", box.last_seq, box.depth, flush=True)
n = 0
while True:
    item = box.put("t/durable", body)
    print("put", item.seq, flush=True)
    n += 1
    if n % 7 == 0:
        seqs = [it.seq for it in box.peek(5)]
        print("ack-begin", *seqs, flush=True)
        box.ack(seqs)
        print("ack-done", *seqs, flush=True)
"""


def body(seq: int) -> bytes:
    size = 50_000 if seq % 10 == 0 else 1_000
    head = hashlib.sha256(str(seq).encode()).hexdigest().encode()
    return (head * (size // len(head) + 1))[:size]


class Child:
    """The writer process and the lines it printed (read on a thread as they come)."""

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[list[str]] = []
        self._more = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if not line.endswith("\n"):
                break  # cut by the kill: the operation returned, its report did not get out
            with self._more:
                self.lines.append(line.split())
                self._more.notify_all()
        with self._more:
            self.lines.append(["eof"])
            self._more.notify_all()

    def wait_for_puts(self, n: int, timeout: float) -> None:
        """Return once the child reported ``n`` puts; fail if it ends or is too slow."""

        def enough() -> bool:
            return sum(1 for w in self.lines if w[0] == "put") >= n or self.lines[-1:] == [["eof"]]

        with self._more:
            assert self._more.wait_for(enough, timeout), f"the writer did not put {n} in time"
            assert self.lines[-1:] != [["eof"]], "the writer ended by itself"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._reader.join(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        assert self.proc.stderr is not None
        err = self.proc.stderr.read()
        self.proc.stderr.close()
        assert self.proc.returncode == -signal.SIGKILL, err


def test_kill_9_at_random_moments_loses_nothing_stored_and_reuses_no_number(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.sqlite"
    rng = random.Random(os.getpid())
    highest = 0  # highest number any child reported using
    put: set[int] = set()
    acked: set[int] = set()
    rounds = 6
    for _ in range(rounds):
        child = Child(path)
        child.wait_for_puts(rng.randint(30, 400), timeout=30)
        child.kill()
        opened, *_ = (w for w in child.lines if w[0] == "open")
        assert int(opened[1]) >= highest, "a restarted outbox went back in its numbering"
        begun: set[int] = set()
        for w in child.lines:
            if w[0] == "put":
                seq = int(w[1])
                assert seq > highest, f"number {seq} used twice"
                highest = seq
                put.add(seq)
            elif w[0] == "ack-begin":
                begun |= {int(s) for s in w[1:]}
            elif w[0] == "ack-done":
                done = {int(s) for s in w[1:]}
                acked |= done
                begun -= done
        box = SqliteOutbox(path, max_bytes=1 << 40, max_items=1 << 40)
        try:
            assert box.quarantined is None, "the file did not survive"
            stored = {it.seq: it for it in box.peek(1 << 30)}
            must = put - acked - begun
            may = put - acked | {highest + 1}
            assert must <= stored.keys(), f"lost {sorted(must - stored.keys())[:5]}"
            assert stored.keys() <= may, f"unexpected {sorted(stored.keys() - may)[:5]}"
            for seq, item in stored.items():
                assert item.payload == body(seq), f"envelope {seq} is torn"
                assert item.topic == "t/durable"
            assert box.depth == len(stored)
            assert box.nbytes == sum(len(body(s)) for s in stored)
            assert box.last_seq >= highest
            # The next child acknowledges from the head, so the state carries over.
            acked |= begun - stored.keys()
            put |= stored.keys()
            highest = max(highest, box.last_seq)
        finally:
            box.close()
    assert len(put) > rounds * 30
