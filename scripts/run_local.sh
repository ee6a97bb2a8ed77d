#!/usr/bin/env bash
# The main job on embedded defaults: set up (scripts/setup.sh), start a local S3
# server, a MongoDB wire server and Airflow with envs/rawvault.local.yaml, back up
# a demo Thermo file and Bruker .d set end to end, and print a summary.
#   bash scripts/run_local.sh               run (the stack keeps running for the UI)
#   bash scripts/run_local.sh --stop        stop everything it started
#   bash scripts/run_local.sh --stop-after  run, print the summary, stop
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHONPATH="$PWD:$PWD/airflow_src/plugins"
exec .venv/bin/python -m devtools.run_local "$@"
