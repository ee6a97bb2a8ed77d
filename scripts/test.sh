#!/usr/bin/env bash
# Install everything (scripts/setup.sh), then ruff, mypy, the import contracts and pytest: what CI runs
# (.ci/run). Each phase ends with a line "==> name (time) result"; a summary of all of them comes last.
#
#   bash scripts/test.sh                   the whole suite
#   bash scripts/test.sh --quick           the edit-test loop: every test not marked slow (a few minutes)
#   bash scripts/test.sh [--quick] ARGS    ARGS go to pytest, e.g. tests/unit -x
#   RAWVAULT_TEST_WORKERS=0 bash scripts/test.sh    one test file at a time (default: two side by side)
#
# mypy (airflow_src/plugins and shared) and the import contracts between the layers (pyproject.toml)
# fail the run like ruff does.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/_phases.sh
. scripts/_phases.sh

quick=0
pytest_args=()
for arg in "$@"; do
    if [ "$arg" = "--quick" ]; then quick=1; else pytest_args+=("$arg"); fi
done
export PYTHONUNBUFFERED=1  # progress lines reach a CI log as they happen

RAWVAULT_PHASE_LOG=$(mktemp)
export RAWVAULT_PHASE_LOG
started=$SECONDS
print_summary() {
    local status=$?
    echo "==> summary ($(human_duration $((SECONDS - started))) in all$( ((quick)) && echo ", quick mode"))"
    while IFS='|' read -r name took result; do
        printf '    %-17s %11s   %s\n' "$name" "$took" "$result"
    done <"$RAWVAULT_PHASE_LOG"
    rm -f "$RAWVAULT_PHASE_LOG"
    exit "$status"
}
trap print_summary EXIT

bash scripts/setup.sh

phase_start ruff
ruff_ok=1
.venv/bin/ruff check --quiet . || ruff_ok=0
.venv/bin/ruff format --check --quiet . || ruff_ok=0
if ((!ruff_ok)); then
    phase_end "FAILED: fix the findings above (.venv/bin/ruff check --fix . && .venv/bin/ruff format .)"
    exit 1
fi
phase_end "lint and format clean"

phase_start mypy "type-checking airflow_src/plugins and shared"
if ! mypy_output=$(.venv/bin/mypy 2>&1); then
    echo "$mypy_output"
    phase_end "FAILED: $(tail -n 1 <<<"$mypy_output")"
    exit 1
fi
# "Success: no issues found in 80 source files" -> "no issues in 80 source files"
phase_end "$(tail -n 1 <<<"$mypy_output" | sed -E 's/^Success: no issues found/no issues/')"

# import-linter sees the code as the runtime does: rawvault from airflow_src/plugins, shared from the
# repository root, the DAG files as the package `dags` (contracts in pyproject.toml [tool.importlinter]).
phase_start "import contracts" "lint-imports: the layers of CLAUDE.md"
set +e
imports_output=$(PYTHONPATH=airflow_src/plugins:airflow_src COLUMNS=120 .venv/bin/lint-imports --no-logo 2>&1)
imports_status=$?
set -e
imports_result=$(grep -E '^Contracts: ' <<<"$imports_output" | tail -n 1 | sed -E 's/^Contracts: //; s/\.$//' || true)
if ((imports_status)); then
    echo "$imports_output" | sed -e '/^$/N;/^\n$/D'  # the report, runs of blank lines squeezed
    phase_end "FAILED: ${imports_result:-lint-imports could not check the contracts (exit $imports_status)}"
    exit 1
fi
phase_end "$imports_result"

# pytest: one line per test file as it finishes (tests/file_progress.py) instead of a dot per test.
pytest_cmd=(.venv/bin/python -m pytest -q -o console_output_style=classic -p tests.file_progress)
# Two files at a time (pytest-xdist; a file's tests stay together in one worker process with its own
# Airflow home, MongoDB server and free ports): most tests wait on Airflow, servers and subprocesses.
# RAWVAULT_TEST_WORKERS=0 runs one file after the other, as before.
workers=${RAWVAULT_TEST_WORKERS:-2}
if ((workers > 0)); then
    pytest_cmd+=(-n "$workers" --dist loadfile --no-loadscope-reorder)
fi
if ((quick)); then
    pytest_cmd+=(-m "not slow")
    phase_start pytest "quick mode: every test not marked slow (the slow ones run in the full command)"
else
    phase_start pytest "the whole suite"
fi
set +e
"${pytest_cmd[@]}" "${pytest_args[@]}"
status=$?
set -e
# pytest exits 5 when it collected no test: that is a failure here, never a pass.
if [ "$status" -eq 5 ]; then
    phase_end "FAILED: pytest collected no tests"
    exit 1
elif [ "$status" -ne 0 ]; then
    phase_end "FAILED (pytest exit $status; the failures are listed above)"
    exit "$status"
fi
phase_end "passed"
