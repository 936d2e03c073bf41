"""``cellwatch sim --scenario``: runs a scenario, writes its ground truth, rejects a bad file."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCENARIO = """name: cli_check
description: a stuck sensor soon after the start
seed: 5
rate_hz: 10
faults:
  - kind: stuck
    start_s: 0.3
    target: {lane: 2, side: B}
  - kind: lot_effect
    start_s: 0.5
    target: all
    shift_pct: -2
"""


def _lines(stream: object) -> queue.Queue[str]:
    """Lines of a pipe, read on a thread so the test can wait for one with a deadline."""
    out: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:  # type: ignore[attr-defined]
            out.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return out


def test_sim_runs_a_scenario_and_writes_the_truth(tmp_path: Path) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text(SCENARIO)
    truth = tmp_path / "truth.jsonl"
    cmd = [sys.executable, "-m", "cellwatch", "sim", "--scenario", str(scenario),
           "--broker", "none", "--opcua-port", "0", "--truth", str(truth), "--seed", "8"]
    with subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as proc:
        try:
            lines = _lines(proc.stdout)
            first = lines.get(timeout=15)
            assert "OPC UA opc.tcp://127.0.0.1:" in first and "scenario cli_check" in first
            assert "MQTT off" in first
            deadline = time.monotonic() + 10
            while len(truth.read_text().splitlines() if truth.exists() else []) < 2:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "the ground truth was not written"
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=10) == 0
            stderr = proc.stderr.read() if proc.stderr else ""
        finally:
            if proc.poll() is None:
                proc.kill()
    assert "Traceback" not in stderr
    records = [json.loads(line) for line in truth.read_text().splitlines()]
    starts = [r for r in records if r["event"] == "start"]
    ends = {r["fault"]: r for r in records if r["event"] == "end"}
    stuck, lot = starts
    assert stuck["kind"] == "stuck" and stuck["tags"][0]["equipment"] == "lane02_B"
    assert lot["kind"] == "lot_effect" and len(lot["tags"]) == 8
    assert lot["start_ts"] - stuck["start_ts"] == pytest.approx(0.2)
    assert lot["parameters"] == {"shift_pct": -2.0, "unit": "Ah"}
    # Both faults were still active at the stop: each gets an open end record with its cells.
    assert len(records) == 4 and set(ends) == {stuck["fault"], lot["fault"]}
    assert ends[stuck["fault"]]["open"] and ends[stuck["fault"]]["affects"] == "data"
    assert ends[lot["fault"]]["affects"] == "product" and ends[lot["fault"]]["cells"]
    assert ends[lot["fault"]]["end_ts"] > lot["start_ts"]


def test_a_bad_scenario_prints_one_line_per_problem_and_exits_2(tmp_path: Path) -> None:
    scenario = tmp_path / "bad.yaml"
    scenario.write_text("name: bad\nrate_hz: fast\nfaults:\n  - {kind: stuck, start_s: -1}\n")
    res = subprocess.run(
        [sys.executable, "-m", "cellwatch", "sim", "--scenario", str(scenario),
         "--broker", "none", "--opcua-port", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert lines == [
        f"{scenario}:2 rate_hz: input should be a valid number, unable to parse string as a "
        "number, got 'fast'",
        f"{scenario}:4 faults[0].start_s: input should be greater than or equal to 0, got -1",
    ]


def test_scenario_and_fault_at_exclude_each_other() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "cellwatch", "sim", "--scenario", "x.yaml", "--fault-at", "3"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )
    assert res.returncode == 2 and "not allowed with argument" in res.stderr
