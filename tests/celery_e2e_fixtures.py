"""The Celery stack of the end-to-end tests (``tests/integration/test_celery_e2e.py``).

Use from a test module with ``pytest_plugins = ["tests.celery_e2e_fixtures"]`` for the module's
``e2e`` stack (Redis, PostgreSQL, Celery workers as deployed) with distinctive secrets in it
(:func:`distinctive_secrets`: the AWS secret access key, a MongoDB that requires its password,
a webhook URL, a connection password, and the stack's own keys); the helpers wait for DAG
runs, describe them and register raw files.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from devtools.celery_stack import (
    ADMIN_USER,
    ApiError,
    CeleryStack,
    CeleryWorker,
    StopReport,
    rawvault_workers,
    recorded_pids,
    start_celery_stack,
    stop_celery_stack,
)
from devtools.local_stack import StackPaths, StackState, aws_connection_uri, start_data_servers
from devtools.proxy import TcpProxy
from devtools.servers import free_port, local_s3_client
from rawvault.keys import S3_UPLOAD_POOL
from shared.db import interface
from shared.db.interface import create_raw_file
from shared.db.models import RawFile
from shared.settings import load_settings
from tests.data_factory import MIB, write_bytes
from tests.pipeline_env import PipelineEnv, write_pipeline_env

INSTRUMENT = "thermo1"
PREFIX = "e2e_"
PROJECT = "PRJ1"
BUCKET_PREFIX = "rv-e2e"
WATCHER = f"instrument_watcher.{INSTRUMENT}"
HANDLER = f"acquisition_handler.{INSTRUMENT}"
MOVER = f"file_mover.{INSTRUMENT}"
INSTRUMENT_TASKS = ("monitor_acquisition", "compute_checksum", "copy_raw_file", "start_file_mover")
FINISHED_RUN_STATES = {"success", "failed"}

T = TypeVar("T")


ACCESS_KEY_ID = "AKIARAWVAULTLOGTEST1"  # not a secret: it is sent with every request
REST_CONNECTION_SECRET = "password of a connection made through the REST API"


@dataclass
class E2E:
    stack: CeleryStack
    pipeline: PipelineEnv
    s3: Any  # a client of the S3 server itself (not through the proxy)
    instrument_worker: CeleryWorker
    s3_worker: CeleryWorker
    maintenance_worker: CeleryWorker | None = None
    proxy: TcpProxy | None = None  # between the stack and the S3 server
    secrets: dict[str, str] = field(default_factory=dict)  # name -> value: no log may hold one
    cli_logs: Path | None = None  # where tests keep the CLI's stdout and stderr (scanned with the stack's logs)
    stop_report: StopReport | None = None
    pids_at_stop: dict[str, int] = field(default_factory=dict)

    @property
    def workers(self) -> list[CeleryWorker]:
        return [w for w in (self.instrument_worker, self.s3_worker, self.maintenance_worker) if w is not None]

    def stop(self) -> StopReport:
        """Stop the stack once (the proxy too); later calls return the first stop's report."""
        if self.stop_report is None:
            self.stop_report = stop_stack_of(self.stack.paths, self.proxy, self.pids_at_stop)
        return self.stop_report


def stop_stack_of(paths: StackPaths, proxy: TcpProxy | None, pids: dict[str, int]) -> StopReport:
    """Stop the proxy and every process recorded under ``paths``; ``pids`` gets what was recorded."""
    if proxy is not None:
        proxy.stop()
    pids.update(recorded_pids(paths))
    stopping = time.monotonic()
    report = stop_celery_stack(paths)
    print(f"stack stopped in {time.monotonic() - stopping:.0f} s")
    return report


def assert_nothing_left(report: StopReport, pids: dict[str, int]) -> None:
    left = {name: pid for name, pid in pids.items() if group_alive(pid)}
    assert not left, f"processes of the stack still run after stopping it: {left}"
    assert not report.survivors, f"processes outlived the stop of their process group: {report.survivors}"
    assert set(report.stopped) == set(pids), f"stopped {report.stopped}, recorded {sorted(pids)}"


def distinctive_secrets() -> dict[str, str]:
    """Secrets no log may hold, each easy to find (the stack adds its own keys once started)."""

    def distinctive(label: str) -> str:
        return f"rv{label}{secrets.token_hex(10)}"

    token = distinctive("Hook")
    return {
        "AWS secret access key": distinctive("AwsSecret"),
        "MongoDB password": distinctive("MongoPw"),
        "MongoDB password given wrongly to the CLI": distinctive("WrongMongoPw"),
        "webhook URL": f"https://hooks.example.invalid/services/T0RAWVAULT/B0RAWVAULT/{token}",
        "webhook token": token,
        REST_CONNECTION_SECRET: distinctive("ConnPw"),
    }


def stack_secrets(env: dict[str, str]) -> dict[str, str]:
    """The secrets the Celery stack generated for itself."""
    passwords = json.loads(Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).read_text())
    return {
        "Fernet key": env["AIRFLOW__CORE__FERNET_KEY"],
        "JWT secret": env["AIRFLOW__API_AUTH__JWT_SECRET"],
        "API secret key": env["AIRFLOW__API__SECRET_KEY"],
        "UI password": passwords[ADMIN_USER],
    }


def secret_connections(s3_endpoint: str, secret: dict[str, str]) -> dict[str, str]:
    """``aws_default`` with the secret access key, and a webhook URL in an environment connection."""
    aws = aws_connection_uri(
        s3_endpoint, access_key_id=ACCESS_KEY_ID, secret_access_key=secret["AWS secret access key"]
    )
    webhook = json.dumps({"conn_type": "http", "host": secret["webhook URL"]})
    return {"AIRFLOW_CONN_AWS_DEFAULT": aws, "AIRFLOW_CONN_RAWVAULT_ALERTS_WEBHOOK": webhook}


def write_settings(root: Path) -> PipelineEnv:
    """Settings for this test: one Thermo instrument, S3 without bucket creation, no retries, fast polls."""
    pipeline = write_pipeline_env(
        root,
        backup={
            "backup_type": "s3",
            "s3": {
                "region": "us-east-1",
                "bucket_prefix": BUCKET_PREFIX,
                "part_size_mb": 5,
                "auto_create_buckets": False,
                "upload_retries": 0,
                "max_concurrency": 2,
            },
        },
        # 5 s, not 1: a reschedule shorter than the scheduler's event processing lets it see the poke's
        # "success" after the next try is already scheduled and mark the sensor failed (seen at load 3).
        acquisition={"poke_interval_seconds": 5, "size_stable_seconds": 1, "timeout_hours": 0.25},
        # Once a year: only the REST trigger (and the one catch-up run of a new DAG) list the folder.
        watcher={"schedule": "0 0 1 1 *"},
        airflow={"queue_prefix": PREFIX, "task_retries": 0, "retry_delay_minutes": 0},
        file_mover={"delay_minutes": 0},
    )
    # write_pipeline_env merges mappings: drop the other instruments so only thermo1 has DAGs and queues.
    raw = yaml.safe_load(pipeline.config_path.read_text())
    raw["instruments"] = {INSTRUMENT: raw["instruments"][INSTRUMENT]}
    pipeline.config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return PipelineEnv(root=root, config_path=pipeline.config_path, settings=load_settings(pipeline.config_path))


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    """The whole stack with distinctive secrets, shared by this module's tests.

    Stopped afterwards (a no-op if a test stopped it already), with a check that no process is left.
    """
    tmp_path = tmp_path_factory.mktemp("e2e")
    paths = StackPaths(tmp_path / "run")
    proxy: TcpProxy | None = None
    e2e: E2E | None = None
    pids: dict[str, int] = {}
    with pytest.MonkeyPatch.context() as monkeypatch:
        try:
            secret = distinctive_secrets()
            mongo, s3_server = start_data_servers(paths, mongo_credentials=("rawvault", secret["MongoDB password"]))
            proxy = TcpProxy(s3_server.port).start()
            pipeline = write_settings(tmp_path / "env")
            monkeypatch.setenv("RAWVAULT_CONFIG", str(pipeline.config_path))
            monkeypatch.setenv(interface.ENV_VAR_MONGO_URI, mongo.uri)
            interface.connect_db(mongo.uri)
            interface.create_project(PROJECT)
            state = StackState(mongo_uri=mongo.uri, s3_endpoint=proxy.endpoint_url, api_port=free_port())
            instrument_worker, s3_worker, maintenance_worker = rawvault_workers(pipeline.settings)
            started = time.monotonic()
            stack = start_celery_stack(
                paths,
                state,
                rawvault_env={
                    "RAWVAULT_CONFIG": str(pipeline.config_path),
                    **secret_connections(proxy.endpoint_url, secret),
                },
                workers=[instrument_worker, s3_worker, maintenance_worker],
                pools={S3_UPLOAD_POOL: 2},
            )
            print(f"celery stack ready in {time.monotonic() - started:.0f} s ({paths.run_dir})")
            secret.update(stack_secrets(stack.env))
            stack.api.post(
                "/api/v2/connections",
                {"connection_id": "rawvault_webhook_db", "conn_type": "http", "host": "hooks.example.invalid",
                 "login": "rawvault", "password": secret[REST_CONNECTION_SECRET]},
            )  # fmt: skip
            s3 = local_s3_client(s3_server.endpoint_url)
            e2e = E2E(stack, pipeline, s3, instrument_worker, s3_worker, maintenance_worker, proxy, secret)
            e2e.cli_logs = paths.run_dir / "cli"
            yield e2e
            stack.api.close()
        finally:
            if e2e is not None:
                report, pids = e2e.stop(), e2e.pids_at_stop
            else:
                report = stop_stack_of(paths, proxy, pids)
            interface.reset_connection()
            assert_nothing_left(report, pids)


# ---------------------------------------------------------------- helpers


def wait_for(e2e: E2E, what: str, probe: Callable[[], T | None], timeout: float, details: Callable[[], str]) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` with ``details()`` and log tails."""
    deadline = time.monotonic() + timeout
    while True:
        e2e.stack.check_alive()
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(
                f"timed out after {timeout:.0f} s waiting for {what}\n{details()}\n"
                + e2e.stack.log_tails(["airflow-scheduler", *(w.process_name for w in e2e.workers)]),
                pytrace=False,
            )
        time.sleep(2)


def dag_known(e2e: E2E, dag_id: str) -> bool:
    try:
        e2e.stack.api.get(f"/api/v2/dags/{dag_id}")
        return True
    except ApiError as error:
        if error.status == 404:
            return False
        raise


def run_for(e2e: E2E, dag_id: str, raw_file_id: str) -> dict[str, Any] | None:
    """The DAG run of ``dag_id`` whose conf names ``raw_file_id``."""
    runs = e2e.stack.api.get(f"/api/v2/dags/{dag_id}/dagRuns", limit=100)["dag_runs"]
    matching = [run for run in runs if (run.get("conf") or {}).get("raw_file_id") == raw_file_id]
    return matching[-1] if matching else None


def task_instances(e2e: E2E, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
    """Task id -> task instance (REST, with state, queue, hostname, try_number); mapped ones by ``id[i]``."""
    tis = e2e.stack.api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=100)["task_instances"]
    return {ti["task_id"] + (f"[{ti['map_index']}]" if ti.get("map_index", -1) >= 0 else ""): ti for ti in tis}


def describe_run(e2e: E2E, dag_id: str, run_id: str | None, raw_file_id: str) -> str:
    lines = []
    if run_id:
        for task_id, ti in task_instances(e2e, dag_id, run_id).items():
            lines.append(
                f"  {dag_id}/{task_id}: {ti['state']} try {ti['try_number']} queue {ti['queue']} on {ti['hostname']}"
            )
            if ti["state"] in ("failed", "up_for_retry", "upstream_failed"):
                lines.append(e2e.stack.task_log(dag_id, run_id, ti["task_id"]))
    raw_file = RawFile.objects(id=raw_file_id).first()
    lines.append(f"  RawFile: {raw_file.to_mongo().to_dict() if raw_file else 'not registered'}")
    return "\n".join(lines)


def raw_file_of(raw_file_id: str) -> RawFile:
    raw_file = RawFile.objects(id=raw_file_id).first()
    assert raw_file is not None, f"{raw_file_id} was never registered"
    return raw_file


def assert_ran_on(tis: dict[str, dict[str, Any]], task_ids: list[str], queue: str, worker: CeleryWorker) -> None:
    for task_id in task_ids:
        ti = tis[task_id]
        assert (ti["queue"], ti["hostname"]) == (queue, worker.node), (
            f"{task_id} ran on queue {ti['queue']!r} on {ti['hostname']!r}; expected {queue!r} on {worker.node!r}"
        )


# ---------------------------------------------------------------- the test


SLOW_UPLOAD_BYTES_PER_SECOND = 96 * 1024  # two 8 MiB uploads share it: about three minutes


def register_copied(settings: Any, name: str, size: int, seed: int) -> str:
    """A raw file with its verified local copy and recorded checksums, as copy_raw_file leaves it."""
    from datetime import UTC, datetime

    from tests.s3_fixtures import file_info_of

    created = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    folder = settings.locations.backup / INSTRUMENT / "2026_11"
    write_bytes(folder / name, size, seed=seed)
    create_raw_file(
        name,
        instrument_id=INSTRUMENT,
        created_at=created,
        project_id=PROJECT,
        file_info=file_info_of(folder, [name]),
        etag_part_size=5 * MIB,
        backup_status="copying_done",
    )
    return name


def trigger(e2e: E2E, dag_id: str, conf: dict[str, Any] | None = None) -> str:
    run = e2e.stack.api.post(f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})
    return run["dag_run_id"]


def run_state(e2e: E2E, dag_id: str, run_id: str) -> str:
    return e2e.stack.api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]
