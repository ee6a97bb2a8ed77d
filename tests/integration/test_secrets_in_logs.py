"""No secret ever reaches a log (issue 13, item 8): a full run on the Celery stack and the CLI, every log scanned.

The stack of the Celery end-to-end test (Redis, PostgreSQL, scheduler, dag-processor,
api-server, an instrument worker and an ``s3_uploader`` worker) runs with distinctive
secrets: the AWS secret access key of ``aws_default``, a MongoDB password (SecantusDB with
``--auth``: every client must log in with it), the Fernet key, the JWT and API secret
keys, the UI password, a webhook URL in an environment connection and a password in a
connection created through the REST API. A Thermo acquisition goes through the watcher,
the acquisition handler (its upload fails first: no bucket; cleared, it succeeds), the
file mover and ``backup_verifier``; then the CLI runs ``verify`` (also with a wrong
MongoDB password) and ``restore``. After the stack has stopped, every log file it wrote
(task logs, scheduler, dag-processor, workers, api-server, servers, the CLI's stdout and
stderr) is scanned for each secret, as is, URL-encoded and base64-encoded; a hit fails
naming the file and line.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from pathlib import Path

import mongoengine
import pytest

from devtools.celery_stack import ADMIN_USER, CeleryWorker, node_name, start_celery_stack, stop_celery_stack
from devtools.local_stack import StackPaths, StackState, aws_connection_uri, start_data_servers
from devtools.servers import free_port, local_s3_client
from rawvault.keys import FILE_MOVER_QUEUE, MAINTENANCE_QUEUE, S3_UPLOAD_POOL, S3_UPLOADER_QUEUE
from rawvault.s3.buckets import bucket_name
from shared.db import interface
from tests.celery_e2e_fixtures import (
    BUCKET_PREFIX,
    E2E,
    FINISHED_RUN_STATES,
    HANDLER,
    INSTRUMENT,
    MOVER,
    PROJECT,
    WATCHER,
    dag_known,
    describe_run,
    run_for,
    task_instances,
    wait_for,
    write_settings,
)
from tests.data_factory import make_thermo
from tests.integration.secret_scan import log_files, scan

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

REPO_ROOT = Path(__file__).resolve().parents[2]
CLI = REPO_ROOT / "scripts" / "rawvault.sh"
VERIFIER = "backup_verifier"
ACCESS_KEY_ID = "AKIARAWVAULTLOGTEST1"  # not a secret: it is sent with every request


def _distinctive(label: str) -> str:
    return f"rv{label}{secrets.token_hex(10)}"


def _secrets() -> dict[str, str]:
    token = _distinctive("Hook")
    return {
        "AWS secret access key": _distinctive("AwsSecret"),
        "MongoDB password": _distinctive("MongoPw"),
        "MongoDB password given wrongly to the CLI": _distinctive("WrongMongoPw"),
        "webhook URL": f"https://hooks.example.invalid/services/T0RAWVAULT/B0RAWVAULT/{token}",
        "webhook token": token,
        "password of a connection made through the REST API": _distinctive("ConnPw"),
    }


def _stack_secrets(env: dict[str, str]) -> dict[str, str]:
    """The secrets the Celery stack generated for itself."""
    passwords = json.loads(Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).read_text())
    return {
        "Fernet key": env["AIRFLOW__CORE__FERNET_KEY"],
        "JWT secret": env["AIRFLOW__API_AUTH__JWT_SECRET"],
        "API secret key": env["AIRFLOW__API__SECRET_KEY"],
        "UI password": passwords[ADMIN_USER],
    }


def _run_the_pipeline(e2e: E2E, raw_file_id: str) -> None:
    """Watcher, handler (upload fails: no bucket), file mover; bucket created, upload cleared and done."""
    api = e2e.stack.api
    api.post(f"/api/v2/dags/{WATCHER}/dagRuns", {"logical_date": None})
    handler_run = wait_for(
        e2e,
        f"{HANDLER} to finish for {raw_file_id}",
        lambda: (run := run_for(e2e, HANDLER, raw_file_id)) and run["state"] in FINISHED_RUN_STATES and run,
        300,
        lambda: describe_run(e2e, HANDLER, (run_for(e2e, HANDLER, raw_file_id) or {}).get("dag_run_id"), raw_file_id),
    )
    run_id = handler_run["dag_run_id"]
    wait_for(e2e, f"{MOVER} to finish", lambda: (run := run_for(e2e, MOVER, raw_file_id)) and
          run["state"] in FINISHED_RUN_STATES and run, 120, lambda: "")  # fmt: skip
    assert task_instances(e2e, HANDLER, run_id)["upload_to_s3"]["state"] == "failed"

    e2e.s3.create_bucket(Bucket=bucket_name(BUCKET_PREFIX, PROJECT))
    clear = {
        "dag_run_id": run_id,
        "task_ids": ["upload_to_s3"],
        "only_failed": True,
        "dry_run": False,
        **dict.fromkeys(("include_upstream", "include_downstream", "include_future", "include_past"), False),
    }
    api.post(f"/api/v2/dags/{HANDLER}/clearTaskInstances", clear)
    retried = wait_for(
        e2e,
        "the cleared upload_to_s3 to finish",
        lambda: (
            (ti := task_instances(e2e, HANDLER, run_id)["upload_to_s3"])["try_number"] >= 2
            and ti["state"] in ("success", "failed")
            and ti
        ),
        240,
        lambda: describe_run(e2e, HANDLER, run_id, raw_file_id),
    )
    assert retried["state"] == "success", describe_run(e2e, HANDLER, run_id, raw_file_id)


def _run_the_verifier(e2e: E2E) -> None:
    api = e2e.stack.api
    run = api.post(f"/api/v2/dags/{VERIFIER}/dagRuns", {"logical_date": None, "conf": {"sample": 0}})
    finished = wait_for(
        e2e,
        f"{VERIFIER} to finish",
        lambda: (
            (r := api.get(f"/api/v2/dags/{VERIFIER}/dagRuns/{run['dag_run_id']}"))["state"] in FINISHED_RUN_STATES and r
        ),
        240,
        lambda: e2e.stack.task_log(VERIFIER, run["dag_run_id"], "verify_backups"),
    )
    assert finished["state"] == "success", e2e.stack.task_log(VERIFIER, run["dag_run_id"], "verify_backups")


def _run_cli(env: dict[str, str], out_dir: Path, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``scripts/rawvault.sh ARGS`` as a user runs it; stdout and stderr kept as log files to scan."""
    result = subprocess.run(
        ["bash", str(CLI), *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.stdout.log").write_text(result.stdout, encoding="utf-8")
    (out_dir / f"{name}.stderr.log").write_text(result.stderr, encoding="utf-8")
    return result


def _run_the_cli(stack_env: dict[str, str], out_dir: Path, raw_file_id: str, wrong_mongo_uri: str) -> None:
    env = {key: value for key, value in stack_env.items() if not key.startswith("AIRFLOW__CELERY")}
    verify = _run_cli(env, out_dir, "verify", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "checked 1 raw file(s)" in verify.stdout, verify.stdout
    restore = _run_cli(env, out_dir, "restore", "restore", raw_file_id, str(out_dir / "restored"))
    assert restore.returncode == 0, restore.stdout + restore.stderr
    wrong = _run_cli({**env, interface.ENV_VAR_MONGO_URI: wrong_mongo_uri}, out_dir, "verify-wrong-password", "verify")
    assert wrong.returncode == 2 and "uthentication failed" in wrong.stderr, wrong.stdout + wrong.stderr


def _start_stack(paths: StackPaths, root: Path, monkeypatch: pytest.MonkeyPatch, secret: dict[str, str]) -> E2E:
    """The Celery e2e stack with ``secret``'s values in its connections and a MongoDB that requires its password."""
    mongo, s3_server = start_data_servers(paths, mongo_credentials=("rawvault", secret["MongoDB password"]))
    pipeline = write_settings(root / "env")
    monkeypatch.setenv("RAWVAULT_CONFIG", str(pipeline.config_path))
    monkeypatch.setenv(interface.ENV_VAR_MONGO_URI, mongo.uri)
    interface.connect_db(mongo.uri)
    interface.create_project(PROJECT)
    state = StackState(mongo_uri=mongo.uri, s3_endpoint=s3_server.endpoint_url, api_port=free_port())
    settings = pipeline.settings
    instrument_worker = CeleryWorker(
        name="instrument",
        node=node_name("instrument-worker"),
        queues=(settings.queue(INSTRUMENT), settings.queue(FILE_MOVER_QUEUE)),
    )
    # backup_verifier runs on the maintenance queue: this stack's S3 worker serves it too (one worker less).
    s3_queues = (settings.queue(S3_UPLOADER_QUEUE), settings.queue(MAINTENANCE_QUEUE))
    s3_worker = CeleryWorker(name="s3", node=node_name("s3-worker"), queues=s3_queues)
    aws = aws_connection_uri(
        s3_server.endpoint_url, access_key_id=ACCESS_KEY_ID, secret_access_key=secret["AWS secret access key"]
    )
    stack = start_celery_stack(
        paths,
        state,
        rawvault_env={
            "RAWVAULT_CONFIG": str(pipeline.config_path),
            "AIRFLOW_CONN_AWS_DEFAULT": aws,
            "AIRFLOW_CONN_RAWVAULT_ALERTS_WEBHOOK": json.dumps({"conn_type": "http", "host": secret["webhook URL"]}),
        },
        workers=[instrument_worker, s3_worker],
        pools={S3_UPLOAD_POOL: 2},
    )
    secret.update(_stack_secrets(stack.env))
    stack.api.post(
        "/api/v2/connections",
        {"connection_id": "rawvault_webhook_db", "conn_type": "http", "host": "hooks.example.invalid",
         "login": "rawvault", "password": secret["password of a connection made through the REST API"]},
    )  # fmt: skip
    return E2E(stack, pipeline, local_s3_client(state.s3_endpoint), instrument_worker, s3_worker)


def test_no_secret_reaches_any_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths, cli_logs = StackPaths(tmp_path / "run"), tmp_path / "run" / "cli"
    secret = _secrets()
    try:
        e2e = _start_stack(paths, tmp_path, monkeypatch, secret)
        wait_for(e2e, "the DAGs to be parsed", lambda: all(dag_known(e2e, d) for d in (WATCHER, HANDLER, VERIFIER)),
              120, lambda: "")  # fmt: skip
        raw_path = make_thermo(e2e.pipeline.instrument_path(INSTRUMENT), f"20261122_{INSTRUMENT}_{PROJECT}_logs.raw")
        started = time.monotonic()
        _run_the_pipeline(e2e, raw_path.name)
        _run_the_verifier(e2e)
        print(f"DAG runs done in {time.monotonic() - started:.0f} s")
        uri = e2e.stack.env[interface.ENV_VAR_MONGO_URI]
        wrong_uri = uri.replace(secret["MongoDB password"], secret["MongoDB password given wrongly to the CLI"])
        _run_the_cli(e2e.stack.env, cli_logs, raw_path.name, wrong_uri)
        e2e.stack.api.close()
    finally:
        report = stop_celery_stack(paths)
        mongoengine.disconnect_all()
        interface._connected = None
    assert not report.survivors, report.survivors

    files = log_files(paths.logs, paths.airflow_home / "logs", cli_logs)
    task_logs = [path for path in files if "dag_id=" in str(path)]
    names = {path.name for path in files}
    assert len(task_logs) >= 8 and {"airflow-scheduler.log", "airflow-api-server.log"} <= names, sorted(map(str, files))
    assert any("dag_processor" in str(path) for path in files) or "airflow-dag-processor.log" in names
    leaks = scan(files, secret)
    megabytes = sum(path.stat().st_size for path in files) / 1e6
    print(f"scanned {len(files)} log files ({megabytes:.1f} MB) for {len(secret)} secrets")
    assert not leaks, f"{len(leaks)} line(s) of the logs hold a secret:\n" + "\n".join(map(str, leaks[:40]))
