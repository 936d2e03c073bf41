"""``cellwatch demo`` as a user runs it: a real process, its API, Ctrl-C, its one-line errors.

The demo runs the example plant with the embedded broker on free ports, exactly as the README
command does, except that the drift is scripted at +20 s instead of +25 s (Phase I, 60 samples
at 4 Hz, ends at about +17 s).
"""

from __future__ import annotations

import json
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAULT_TAG = "line1/coater/lane03_A/areal_weight"

pytestmark = pytest.mark.integration


def _demo(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cellwatch", "demo", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _lines(stream) -> queue.Queue[str]:
    q: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            q.put(line)
        q.put("")

    threading.Thread(target=pump, daemon=True).start()
    return q


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)


def test_demo_shows_the_drift_alert_in_the_api_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    started = time.monotonic()
    proc = _demo(
        "--fault-at",
        "20",
        "--http-port",
        "0",
        "--opcua-port",
        "0",
        "--mqtt-port",
        "0",
        "--summary",
        str(summary),
    )
    out = _lines(proc.stdout)
    try:
        url = None
        while url is None:
            line = out.get(timeout=30)
            assert line, (
                f"demo exited early: {proc.stderr.read() if proc.poll() is not None else ''}"
            )
            if "dashboard http://" in line:
                url = line.split("dashboard ", 1)[1].split()[0].rstrip("/")
        deadline = time.monotonic() + 60
        alerts: list = []
        while not [a for a in alerts if a["tag"] == FAULT_TAG]:
            assert time.monotonic() < deadline, f"no drift alert within 60 s: {alerts}"
            time.sleep(0.5)
            alerts = _get_json(f"{url}/api/alerts")
        alert_after = time.monotonic() - started
        health = _get_json(f"{url}/api/health")
        assert health["status"] == "ok"
        with urllib.request.urlopen(f"{url}/", timeout=5) as r:
            page = r.read().decode()
        assert "cellwatch" in page and "lane03_A" in page
        proc.send_signal(signal.SIGINT)
        t = time.monotonic()
        code = proc.wait(timeout=10)
        stop_s = time.monotonic() - t
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    assert code == 0, err
    assert stop_s < 5.0
    assert "Traceback" not in err
    data = json.loads(summary.read_text())
    tags = [a["tag"] for a in data["alerts"]]
    assert FAULT_TAG in tags
    first = next(a for a in data["alerts"] if a["tag"] == FAULT_TAG)
    assert first["first_ts"] >= data["fault"][0]["start_ts"]
    assert data["readings_per_source"]["coater-plc"] > 0
    assert data["readings_per_source"]["formation-cabinets"] > 0
    print(
        f"demo: alert visible in the API {alert_after:.1f} s after start; stopped in {stop_s:.2f} s"
    )


def test_taken_port_is_one_line_not_a_traceback() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = _demo("--http-port", str(port), "--opcua-port", "0", "--mqtt-port", "0")
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert err.strip().splitlines() == [
        f"cellwatch: cannot listen on 127.0.0.1:{port} for the dashboard: Address already in use"
    ]


def test_unreachable_broker_is_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _demo("--broker", f"mqtt://127.0.0.1:{port}", "--http-port", "0", "--opcua-port", "0")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert err.strip().splitlines() == [
        f"cellwatch: cannot reach the MQTT broker at 127.0.0.1:{port}: Connection refused"
    ]


def test_malformed_broker_url_is_one_line() -> None:
    proc = _demo("--broker", "broker.local", "--http-port", "0", "--opcua-port", "0")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert err.strip().splitlines() == [
        "cellwatch: --broker must be a URL like mqtt://HOST:PORT, got 'broker.local'"
    ]


def test_missing_or_broken_scenario_is_reported_before_anything_starts(tmp_path: Path) -> None:
    proc = _demo("--scenario", "no/such.yaml", "--http-port", "0")
    _, err = proc.communicate(timeout=30)
    assert (proc.returncode, err.strip()) == (
        1, "cellwatch: cannot read scenario no/such.yaml: No such file or directory"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nrate_hz: -1\nfaults: []\n")
    proc = _demo("--scenario", str(bad), "--http-port", "0")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert err.strip().splitlines() == [f"{bad}:2 rate_hz: input should be greater than 0, got -1"]
