#!/usr/bin/env bash
# Install everything (scripts/setup.sh) and run the linters and the whole test suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -k settings -x
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "==> ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "==> pytest"
# pytest exits 5 when it collected no test: that is a failure here, never a pass.
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: failing" >&2
    exit 1
fi
exit "$status"
