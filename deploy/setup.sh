#!/usr/bin/env bash
# Sets up cellwatch in ./.venv on a Debian/Ubuntu machine with Python >= 3.11.
# EXTRAS selects what to install: "server" (default: server, simulator, demo), "test" (all of
# that plus the test tools), "edge" (only what a gateway needs).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo

if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "cellwatch needs Python >= 3.11; $PY is $("$PY" --version 2>&1)" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  if ! "$PY" -m venv .venv >/dev/null 2>&1; then
    # Debian splits venv (and ensurepip) into their own package.
    rm -rf .venv
    $SUDO apt-get update -q
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
    "$PY" -m venv .venv
  fi
fi
# --no-compile: byte-compiling all of scipy and scikit-learn up front doubles the set-up time;
# Python compiles what it imports on first use instead.
.venv/bin/python -m pip install -q --disable-pip-version-check --no-compile -e ".[${EXTRAS:-server}]"
