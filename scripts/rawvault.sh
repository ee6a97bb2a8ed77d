#!/usr/bin/env bash
# rawvault's command line (restore, verify, purge preview, coverage, buckets); see README.md "Restore and verify",
# "Purge", "coverage" and "S3-compatible stores".
#   bash scripts/rawvault.sh restore <raw_file_id> <target_folder> [--from-manifest s3://<bucket>/<key>]
#   bash scripts/rawvault.sh verify [--instrument X] [--project P] [--since YYYY-MM-DD] [--sample N]
#   bash scripts/rawvault.sh purge --dry-run --instrument X [--json]
#   bash scripts/rawvault.sh coverage [--instrument X] [--json]
#   bash scripts/rawvault.sh buckets probe (--bucket B | --all) / buckets apply-lifecycle [--bucket B]
# Reads RAWVAULT_ENV or RAWVAULT_CONFIG, RAWVAULT_MONGO_URI and the Airflow AWS connection
# (e.g. AIRFLOW_CONN_AWS_DEFAULT). Exit codes: 0 ok, 1 restore failed, drift found, a purge check failed
# or unprotected raw files found, 2 cannot run.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
export PYTHONPATH="$repo:$repo/airflow_src/plugins${PYTHONPATH:+:$PYTHONPATH}"
exec "$repo/.venv/bin/python" -m rawvault.cli "$@"
