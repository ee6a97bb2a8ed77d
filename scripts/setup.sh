#!/usr/bin/env bash
# Set up everything rawvault needs on a fresh Debian machine with Python 3.11:
# system packages from apt, then a virtual environment in .venv with the pinned
# runtime and dev requirements. Safe to run again: it only does what is missing.
# Prints one "==> apt (...)" and one "==> venv (...)" line (scripts/_phases.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/_phases.sh
. scripts/_phases.sh

PYTHON=${PYTHON:-python3.11}
UV_VERSION=0.13.8  # the installer of the venv (below); pinned like everything else
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "rawvault needs Python 3.11; $PYTHON is $("$PYTHON" --version 2>&1). Set PYTHON=/path/to/python3.11." >&2
    exit 1
fi

# apt-get prints about five lines per package, and Chromium and PostgreSQL bring well over a hundred
# dependencies: keep the list of packages it installs, its size summary, a line every 25 packages
# set up, and every warning or error.
apt_progress() {
    awk '
        /^The following NEW packages will be installed/ { listing = 1; print "    " $0; fflush(); next }
        listing && /^  / { print "    " $0; next }
        { listing = 0 }
        / newly installed, / || /^Need to get / || /^After this operation/ { print "    " $0; fflush(); next }
        /^Setting up / { done++; if (done % 25 == 0) { print "    set up " done " packages"; fflush() }; next }
        /^(E|W): / || /^dpkg: / || /rror/ { print; fflush() }
        END { if (done) print "    set up " done " packages" }
    '
}

# System packages (Debian): the tests' Redis broker, docker-compose (v1, only to
# validate the compose file) and Chromium for the UI tests.
phase_start apt
APT_PACKAGES=$(sed -e 's/#.*//' scripts/apt-packages.txt | xargs)
missing=()
for pkg in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "==> apt: installing ${missing[*]} and their dependencies (apt-get update first)"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends -o Dpkg::Use-Pty=0 \
        "${missing[@]}" 2>&1 | apt_progress
    phase_end "installed ${missing[*]}"
else
    phase_end "$(wc -w <<<"$APT_PACKAGES") system packages already installed ($APT_PACKAGES)"
fi

phase_start venv
if [ ! -x .venv/bin/python ]; then
    echo "==> venv: creating .venv with $PYTHON"
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.rawvault-requirements
wanted=$(cat requirements_airflow.txt requirements_dev.txt constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "==> venv: installing requirements_dev.txt locked by constraints.txt (a minute or two the first time)"
    # uv installs the same pinned set as pip (constraints.txt pins every package; checked with `pip freeze`)
    # in about 1.5 min instead of 3-8: CI sets up a fresh clone within its 30 minutes. pip stays the
    # fallback where uv cannot be installed. (This machine's pip config may name local package mirrors
    # that do not exist; pip's notes about them are noise.)
    # uv does not read pip's configuration: where only pip's package mirrors are reachable, uv fails and
    # pip installs the same set.
    pip_noise="is ignored: it is neither a file nor a directory"
    if .venv/bin/pip install --quiet --disable-pip-version-check "uv==$UV_VERSION" 2> >(grep -v "$pip_noise" >&2) &&
        .venv/bin/uv pip install --quiet --python .venv/bin/python -r requirements_dev.txt -c constraints.txt; then
        :
    else
        echo "==> venv: uv $UV_VERSION could not install the requirements; installing with pip (slower)"
        .venv/bin/pip install --disable-pip-version-check -r requirements_dev.txt -c constraints.txt \
            2> >(grep -v "$pip_noise" >&2)
    fi
    echo "$wanted" > "$stamp"
    phase_end "requirements installed"
else
    phase_end "requirements up to date"
fi
