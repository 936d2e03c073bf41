#!/usr/bin/env bash
# Runs the whole cellwatch test suite from a fresh clone: installs Mosquitto, InfluxDB 1.x and
# VictoriaMetrics (a server with InfluxDB's /api/v2/write) from the distribution when they are
# missing (the integration tests start their own instances on free loopback ports), sets up
# .venv with the test extra, then runs ruff, mypy and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo

missing=()
{ command -v mosquitto || [ -x /usr/sbin/mosquitto ]; } >/dev/null 2>&1 || missing+=(mosquitto)
command -v influxd >/dev/null 2>&1 || missing+=(influxdb)
command -v victoria-metrics >/dev/null 2>&1 || missing+=(victoria-metrics)
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -q
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

EXTRAS=test bash deploy/setup.sh
.venv/bin/python -m ruff check .
.venv/bin/python -m mypy
.venv/bin/python -m pytest "$@"
