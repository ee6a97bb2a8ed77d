"""The main job on embedded defaults: a local S3 server, a MongoDB wire server and Airflow.

``python -m devtools.run_local`` starts the stack with ``envs/rawvault.local.yaml``,
writes a Thermo file and a Bruker ``.d`` set into demo instrument folders, lets
the watchers pick them up, waits until both are backed up (local copy and S3)
and moved aside, and prints a summary. The stack keeps running for the UI
until ``python -m devtools.run_local --stop`` (or ``--stop-after``).

Each run starts from a clean slate: the demo data, database and Airflow state
of a previous run are removed first, so a second run behaves like the first.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from devtools.demo_data import MIB, make_bruker, make_thermo
from devtools.local_stack import (
    REPO_ROOT,
    StackPaths,
    StackState,
    airflow_env,
    aws_connection_uri,
    run_airflow,
    start_data_servers,
    start_process,
    stop_stack,
    wait_for_http,
    write_env_file,
)
from devtools.servers import HOST, free_port, local_s3_client
from shared.db.interface import create_project
from shared.settings import get_settings

RUN_DIR = REPO_ROOT / ".rawvault-run"
ENV_FILE = RUN_DIR / "env"  # the CLI's settings for this stack; scripts/rawvault.sh reads it (rawvault.cli_setup)
DATA_DIR = REPO_ROOT / ".rawvault-data"
DEMO_PROJECT = "DEMO"
FINAL_BACKUP_STATUSES = {"upload_done", "upload_failed", "copying_failed"}


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((HOST, port)) != 0


def _say(message: str) -> None:
    print(f"[rawvault] {message}", flush=True)


def _demo_files(settings_instruments: dict[str, Path]) -> list[Path]:
    thermo_folder, bruker_folder = settings_instruments["thermo1"], settings_instruments["tims1"]
    return [
        make_thermo(thermo_folder, f"20261122_thermo1_{DEMO_PROJECT}_HeLa_01.raw", 40 * MIB, seed=11),
        make_bruker(bruker_folder, "20261122_tims1_plasma_02.d", main_size=24 * MIB, seed=12),
    ]


def _state(raw_file: dict) -> str:
    """``status/backup_status`` of a progress line; only the status while there is no backup status yet."""
    status, backup_status = raw_file.get("status") or "registered", raw_file.get("backup_status")
    return f"{status}/{backup_status}" if backup_status else status


def write_cli_env(state: StackState, rawvault_env: dict[str, str]) -> None:
    """Write the CLI's settings of this stack to ``.rawvault-run/env`` (0600; the local demo credentials only)."""
    values = {
        **rawvault_env,
        "RAWVAULT_MONGO_URI": state.mongo_uri,
        "AIRFLOW_CONN_AWS_DEFAULT": aws_connection_uri(state.s3_endpoint),
    }
    header = (
        "Settings of the local rawvault stack (bash scripts/run_local.sh) for the command line:\n"
        "scripts/rawvault.sh reads this file when no environment is set; `source .rawvault-run/env` for a shell.\n"
        "Local demo credentials only. Removed by bash scripts/run_local.sh --stop."
    )
    write_env_file(ENV_FILE, values, header=header)


def _wait_for_backups(expected: int, timeout: float, api_url: str) -> list[dict]:
    from shared.db.interface import connect_db
    from shared.db.models import RawFile

    connect_db()
    deadline = time.monotonic() + timeout
    last_report = ""
    while True:
        raw_files = [r.to_mongo().to_dict() for r in RawFile.objects.order_by("instrument_id")]
        done = [
            r
            for r in raw_files
            if r.get("backup_status") in FINAL_BACKUP_STATUSES and r.get("status") in ("moved", "error")
        ]
        report = ", ".join(f"{r['_id']}: {_state(r)}" for r in raw_files) or "waiting for the watchers"
        if report != last_report:
            _say(report)
            last_report = report
        if len(raw_files) >= expected and len(done) == len(raw_files):
            return raw_files
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"the demo raw files did not finish within {timeout:.0f} s; open {api_url} to see why "
                f"(logs in {RUN_DIR / 'logs'})"
            )
        time.sleep(3)


def _print_summary(raw_files: list[dict], state: StackState, paths: StackPaths, stopping: bool) -> bool:
    client = local_s3_client(state.s3_endpoint)
    rows = [("raw file", "instrument", "project", "status", "backup_status", "s3 key", "s3 etag", "objects in S3")]
    all_good = True
    for raw_file in raw_files:
        key = raw_file.get("s3_backup_key") or ""
        objects = "-"
        if key.startswith("s3://"):
            bucket, _, prefix = key[len("s3://") :].partition("/")
            keys = [prefix + path for path in raw_file.get("file_info", {})]
            present = sum(1 for object_key in keys if _exists(client, bucket, object_key))
            manifest = _exists(client, bucket, f"{prefix}{raw_file['_id']}.rawvault-manifest.json")
            objects = f"{present}/{len(keys)} files" + (" + manifest" if manifest else ", no manifest")
        all_good &= raw_file.get("backup_status") == "upload_done"
        rows.append(
            (
                raw_file["_id"],
                raw_file.get("instrument_id", ""),
                raw_file.get("project_id", ""),
                raw_file.get("status", ""),
                raw_file.get("backup_status", ""),
                key,
                raw_file.get("s3_etag") or "",
                objects,
            )
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    print()
    for n, row in enumerate(rows):
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
        if n == 0:
            print("  ".join("-" * width for width in widths))
    for raw_file in raw_files:
        if raw_file.get("backup_status") != "upload_done" or raw_file.get("status") == "error":
            print(f"\n{raw_file['_id']}: {raw_file.get('backup_status_details') or raw_file.get('status_details')}")
    if stopping:  # the servers stop in a moment: their addresses and the login would only mislead
        print(f"\nLocal data:  {DATA_DIR}   logs: {paths.logs}   (the stack is stopped now)\n")
        return all_good
    password_file = paths.airflow_home / "simple_auth_manager_passwords.json.generated"
    password = json.loads(password_file.read_text()).get("admin", "?") if password_file.exists() else "?"
    print(
        f"""
Airflow UI:  {state.api_url}   (user admin, password {password})
S3 server:   {state.s3_endpoint}   MongoDB: {state.mongo_uri}
Local data:  {DATA_DIR}   logs: {paths.logs}
Command line: scripts/rawvault.sh verify | restore <raw file id> <folder>  ({ENV_FILE.relative_to(REPO_ROOT)})
Stop everything:  bash scripts/run_local.sh --stop
"""
    )
    return all_good


def _exists(client: object, bucket: str, key: str) -> bool:
    try:
        client.head_object(Bucket=bucket, Key=key)  # type: ignore[attr-defined]
    except Exception:
        return False
    return True


def start(timeout: float, stop_after: bool) -> int:
    """Run the demo end to end; return the process exit code."""
    paths = StackPaths(RUN_DIR)
    if stopped := stop_stack(paths):
        _say(f"stopped the previous run's {', '.join(stopped)}")
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    shutil.rmtree(DATA_DIR, ignore_errors=True)
    try:
        _say("starting the MongoDB wire server and the S3 server")
        mongo, s3 = start_data_servers(paths)
        api_port = 8080 if _port_free(8080) else free_port()  # 8080 when it is free: the address users expect
        state = StackState(mongo_uri=mongo.uri, s3_endpoint=s3.endpoint_url, api_port=api_port)
        rawvault_env = {"RAWVAULT_ENV": "local", "RAWVAULT_DATA_DIR": str(DATA_DIR)}
        env = airflow_env(paths, state, rawvault_env=rawvault_env)
        os.environ.update({**rawvault_env, "RAWVAULT_MONGO_URI": state.mongo_uri})
        if not stop_after:
            write_cli_env(state, rawvault_env)
            _say(f"the command line's settings of this stack are in {ENV_FILE.relative_to(REPO_ROOT)} "
                 "(scripts/rawvault.sh reads it when no environment is set)")  # fmt: skip
        settings = get_settings()
        create_project(DEMO_PROJECT, description="demo project of the local run")
        _say("preparing the Airflow metadata DB and the s3_upload_pool")
        run_airflow(paths, env, "db", "migrate")
        run_airflow(paths, env, "pools", "set", "s3_upload_pool", "4", "rawvault S3 uploads")
        files = _demo_files({iid: inst.path for iid, inst in settings.instruments.items()})
        _say("demo acquisitions: " + ", ".join(str(f.relative_to(REPO_ROOT)) for f in files))
        _say(f"starting Airflow (standalone, LocalExecutor) on {state.api_url}")
        start_process(paths, "airflow", [str(Path(sys.executable).parent / "airflow"), "standalone"], env)
        # 180 s is plenty on an idle machine; on two cores shared with other work the api-server took longer.
        wait_for_http(f"{state.api_url}/api/v2/monitor/health", timeout=600, what="the Airflow api-server")
        _say("Airflow is up; the watchers run every minute")
        raw_files = _wait_for_backups(expected=len(files), timeout=timeout, api_url=state.api_url)
        ok = _print_summary(raw_files, state, paths, stopping=stop_after)
    except BaseException:
        stop_stack(paths)
        raise
    if stop_after:
        stop_stack(paths)
        _say("stopped everything")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="run_local", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stop", action="store_true", help="stop a running local stack and exit")
    parser.add_argument("--stop-after", action="store_true", help="stop the stack after the summary")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for the backups (default 900)")
    args = parser.parse_args(argv)
    if args.stop:
        stopped = stop_stack(StackPaths(RUN_DIR))
        ENV_FILE.unlink(missing_ok=True)  # it would point the command line at servers that are gone
        _say(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")
        return 0
    return start(args.timeout, args.stop_after)


if __name__ == "__main__":
    sys.exit(main())
