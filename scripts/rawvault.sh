#!/usr/bin/env bash
# rawvault's command line (restore, verify, purge preview, coverage, buckets); see README.md "Restore and verify",
# "Purge", "coverage" and "S3-compatible stores".
#   bash scripts/rawvault.sh restore <raw_file_id> <target_folder> [--from-manifest s3://<bucket>/<key>]
#   bash scripts/rawvault.sh verify [--instrument X] [--project P] [--since YYYY-MM-DD] [--sample N]
#   bash scripts/rawvault.sh purge --dry-run --instrument X [--json]
#   bash scripts/rawvault.sh coverage [--instrument X] [--json]
#   bash scripts/rawvault.sh buckets probe (--bucket B | --all) / buckets apply-lifecycle [--bucket B]
# Reads RAWVAULT_ENV or RAWVAULT_CONFIG, RAWVAULT_MONGO_URI and the Airflow AWS connection
# (e.g. AIRFLOW_CONN_AWS_DEFAULT). When none of RAWVAULT_ENV, RAWVAULT_CONFIG and RAWVAULT_MONGO_URI is set
# and the local stack (bash scripts/run_local.sh) wrote .rawvault-run/env, it reads that file (and says so
# on stderr). Exit codes: 0 ok, 1 restore failed, drift found, a purge check failed
# or unprotected raw files found, 2 cannot run.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
env_file="$repo/.rawvault-run/env"
if [[ -z "${RAWVAULT_ENV:-}${RAWVAULT_CONFIG:-}${RAWVAULT_MONGO_URI:-}" && -f "$env_file" ]]; then
  # It is sourced (run as shell code): only a file of this user that nobody else may write.
  if [[ ! -O "$env_file" || -n "$(find "$env_file" -maxdepth 0 -perm /022)" ]]; then
    echo "rawvault: not reading $env_file: it must belong to $(id -un) and be writable by nobody else" \
      "(scripts/run_local.sh writes it with mode 0600); fix or delete it, or set RAWVAULT_ENV yourself" >&2
    exit 2
  fi
  echo "rawvault: no environment set: using the local stack's settings from $env_file (written by scripts/run_local.sh)" >&2
  set -a
  # shellcheck source=/dev/null
  source "$env_file"
  set +a
fi
export PYTHONPATH="$repo:$repo/airflow_src/plugins${PYTHONPATH:+:$PYTHONPATH}"
exec "$repo/.venv/bin/python" -m rawvault.cli "$@"
