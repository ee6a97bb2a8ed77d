#!/usr/bin/env bash
# Set up everything rawvault needs on a fresh Debian machine with Python 3.11:
# system packages from apt, then a virtual environment in .venv with the pinned
# runtime and dev requirements. Safe to run again: it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "rawvault needs Python 3.11; $PYTHON is $("$PYTHON" --version 2>&1). Set PYTHON=/path/to/python3.11." >&2
    exit 1
fi

# System packages (Debian): the tests' Redis broker, docker-compose (v1, only to
# validate the compose file) and Chromium for the UI tests.
APT_PACKAGES=$(sed -e 's/#.*//' scripts/apt-packages.txt | xargs)
missing=()
for pkg in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "==> installing system packages: ${missing[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    echo "==> creating virtual environment .venv"
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.rawvault-requirements
wanted=$(cat requirements_airflow.txt requirements_dev.txt constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "==> installing Python requirements into .venv (a few minutes the first time)"
    # (This machine's pip config may name local package mirrors that do not exist; pip's notes about them are noise.)
    .venv/bin/pip install -q --disable-pip-version-check -r requirements_dev.txt -c constraints.txt \
        2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
    echo "$wanted" > "$stamp"
fi
