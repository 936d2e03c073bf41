"""Real servers for integration tests: Mosquitto and InfluxDB 1.x on free loopback ports.

Each is started from the binaries Debian installs (``mosquitto``, ``influxd``) in a temporary
directory, waited for by polling its port or ``/ping`` (an event, not a fixed sleep), and
stopped at the end. Tests that need one skip with the reason when the binary is missing, except
under CI (``CI=true``), where a missing server is a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

__all__ = [
    "free_port",
    "influxd",
    "mosquitto",
    "mosquitto_tls",
    "need_binary",
    "victoria_metrics",
    "wait_for",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def need_binary(name: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None
    )
    if path is None:
        msg = f"{name} is not installed (apt-get install -y mosquitto influxdb)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def wait_for(check, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    """Poll ``check()`` until it is true; fail naming ``what`` on timeout or early exit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before it was ready")
        if check():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} was not ready within {timeout} s")


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def mosquitto(tmp: Path, port: int | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run Mosquitto on a free loopback port; yields ``(mqtt://127.0.0.1:PORT, process)``."""
    binary = need_binary("mosquitto")
    port = port or free_port()
    conf = tmp / f"mosquitto-{port}.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 100000\n"
    )
    log = open(tmp / f"mosquitto-{port}.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=log)
    try:
        wait_for(lambda: _port_open(port), 10, "mosquitto", proc)
        yield f"mqtt://127.0.0.1:{port}", proc
    finally:
        _stop(proc)
        log.close()


@contextmanager
def mosquitto_tls(
    tmp: Path,
    port: int | None = None,
    *,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    require_certificate: bool = False,
    passwords: dict[str, str] | None = None,
    persistence: bool = False,
) -> Iterator[tuple[str, subprocess.Popen]]:
    """Mosquitto with what a plant broker has: a TLS listener (``ca``/``cert``/``key`` given;
    ``require_certificate`` makes clients present one the CA signed), a password file made by
    ``mosquitto_passwd`` from ``passwords`` (anonymous clients are then refused) and, with
    ``persistence``, sessions and queued messages kept across a restart on the same ``tmp``
    and port. Yields ``(url, process)``; the url is ``mqtts://`` with TLS."""
    binary = need_binary("mosquitto")
    port = port or free_port()
    lines = [f"listener {port} 127.0.0.1", "max_queued_messages 100000"]
    if os.geteuid() == 0:
        lines.append("user root")  # read the test's files instead of dropping to 'mosquitto'
    if cert is not None:
        lines += [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}"]
        lines.append(f"require_certificate {'true' if require_certificate else 'false'}")
    if passwords:
        tool = need_binary("mosquitto_passwd")
        pwfile = tmp / f"mosquitto-{port}.passwd"
        pwfile.write_text("")
        for user, password in passwords.items():
            subprocess.run([tool, "-b", str(pwfile), user, password], check=True)
        lines += [f"password_file {pwfile}", "allow_anonymous false"]
    else:
        lines.append("allow_anonymous true")
    if persistence:
        store = tmp / f"mosquitto-{port}-store"
        store.mkdir(exist_ok=True)
        lines += ["persistence true", f"persistence_location {store}/", "autosave_interval 1"]
    else:
        lines.append("persistence false")
    conf = tmp / f"mosquitto-{port}.conf"
    conf.write_text("\n".join(lines) + "\n")
    log = open(tmp / f"mosquitto-{port}.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=log)
    scheme = "mqtts" if cert is not None else "mqtt"
    try:
        wait_for(lambda: _port_open(port), 10, "mosquitto", proc)
        yield f"{scheme}://127.0.0.1:{port}", proc
    finally:
        _stop(proc)
        log.close()


def _ping(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=0.5) as r:
            return r.status == 204
    except OSError:
        return False


@contextmanager
def influxd(tmp: Path, port: int | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run InfluxDB 1.x on free loopback ports; yields ``(http://127.0.0.1:PORT, process)``."""
    binary = need_binary("influxd")
    port = port or free_port()
    rpc = free_port()
    base = tmp / f"influxdb-{port}"
    for sub in ("meta", "data", "wal"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    conf = base / "influxdb.conf"
    conf.write_text(
        f'reporting-disabled = true\nbind-address = "127.0.0.1:{rpc}"\n'
        f'[meta]\n  dir = "{base}/meta"\n'
        f'[data]\n  dir = "{base}/data"\n  wal-dir = "{base}/wal"\n  query-log-enabled = false\n'
        f'[http]\n  bind-address = "127.0.0.1:{port}"\n  log-enabled = false\n'
        "[monitor]\n  store-enabled = false\n"
        "[continuous_queries]\n  enabled = false\n"
    )
    log = open(base / "influxd.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([binary, "-config", str(conf)], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ping(url), 30, "influxd", proc)
        yield url, proc
    finally:
        _stop(proc)
        log.close()


def _vm_healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=0.5) as r:
            return r.status == 200
    except OSError:
        return False


@contextmanager
def victoria_metrics(
    tmp: Path, port: int | None = None, *, flags: tuple[str, ...] = ()
) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run VictoriaMetrics (Debian package ``victoria-metrics``) on a free loopback port.

    It accepts InfluxDB line protocol on ``/write`` and ``/api/v2/write`` (the 2.x write API
    that influxdb-client speaks) and exports stored samples from ``/api/v1/export``. Retention
    is 100 years so fixed test timestamps from the past are kept, and the query latency
    offset is zero so fresh samples are visible at once; ``flags`` adds more. Yields
    ``(http://127.0.0.1:PORT, process)``.
    """
    binary = shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"
    if not os.path.exists(binary):
        msg = "victoria-metrics is not installed (apt-get install -y victoria-metrics)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    port = port or free_port()
    base = tmp / f"victoria-metrics-{port}"
    base.mkdir(parents=True, exist_ok=True)
    log = open(base / "victoria-metrics.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            binary, f"-storageDataPath={base / 'data'}", f"-httpListenAddr=127.0.0.1:{port}",
            "-retentionPeriod=100y", "-search.latencyOffset=0s", "-loggerLevel=WARN",
            *flags,
        ],
        stdout=log,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _vm_healthy(url), 30, "victoria-metrics", proc)
        yield url, proc
    finally:
        _stop(proc)
        log.close()
