"""End to end with the CeleryExecutor, as deployed: Redis broker, PostgreSQL metadata DB, three Celery workers.

One worker serves the instrument queues and the file mover, one only
``<prefix>s3_uploader``, one only ``<prefix>rawvault_maintenance`` (sweeper,
re-drive, verifier, alerts). S3 is reached through a TCP proxy that can slow
uploads down (``devtools.proxy``).

1. A Thermo acquisition goes through the watcher, the acquisition handler and
   the file mover. Its bucket does not exist (and ``auto_create_buckets`` is
   off), so ``upload_to_s3`` fails visibly while the file mover still runs; the
   task instances show which worker ran which task. Then the bucket is created
   and the failed task is cleared through the REST API, as the UI's "Clear"
   does, and the rerun uploads the file.
2. Two slow uploads fill ``s3_upload_pool`` (and the uploader worker) for
   minutes; meanwhile ``backup_sweeper`` runs twice to the end on the
   maintenance worker: housekeeping never waits behind uploads.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from devtools.celery_stack import (
    ApiError,
    CeleryStack,
    CeleryWorker,
    rawvault_workers,
    recorded_pids,
    start_celery_stack,
    stop_celery_stack,
)
from devtools.local_stack import StackPaths, StackState, start_data_servers
from devtools.proxy import TcpProxy
from devtools.servers import free_port, local_s3_client
from rawvault import keys
from rawvault.keys import FILE_MOVER_QUEUE, MAINTENANCE_QUEUE, S3_UPLOAD_POOL, S3_UPLOADER_QUEUE
from rawvault.locations import move_target_folder
from rawvault.s3.buckets import bucket_name
from shared.db import interface
from shared.db.interface import create_raw_file
from shared.db.models import RawFile
from shared.settings import load_settings
from tests.data_factory import MIB, make_thermo, write_bytes
from tests.pipeline_env import PipelineEnv, write_pipeline_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

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


@dataclass
class E2E:
    stack: CeleryStack
    pipeline: PipelineEnv
    s3: Any  # a client of the S3 server itself (not through the proxy)
    instrument_worker: CeleryWorker
    s3_worker: CeleryWorker
    maintenance_worker: CeleryWorker | None = None
    proxy: TcpProxy | None = None  # between the stack and the S3 server

    @property
    def workers(self) -> list[CeleryWorker]:
        return [w for w in (self.instrument_worker, self.s3_worker, self.maintenance_worker) if w is not None]


def _write_settings(root: Path) -> PipelineEnv:
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
        acquisition={"poke_interval_seconds": 1, "size_stable_seconds": 1, "timeout_hours": 0.25},
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


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    """The whole stack, shared by this module's tests; stopped afterwards, with a check that no process is left."""
    tmp_path = tmp_path_factory.mktemp("e2e")
    paths = StackPaths(tmp_path / "run")
    proxy: TcpProxy | None = None
    with pytest.MonkeyPatch.context() as monkeypatch:
        try:
            mongo, s3_server = start_data_servers(paths)
            proxy = TcpProxy(s3_server.port).start()
            pipeline = _write_settings(tmp_path / "env")
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
                rawvault_env={"RAWVAULT_CONFIG": str(pipeline.config_path)},
                workers=[instrument_worker, s3_worker, maintenance_worker],
                pools={S3_UPLOAD_POOL: 2},
            )
            print(f"celery stack ready in {time.monotonic() - started:.0f} s ({paths.run_dir})")
            s3 = local_s3_client(s3_server.endpoint_url)
            yield E2E(stack, pipeline, s3, instrument_worker, s3_worker, maintenance_worker, proxy)
            stack.api.close()
        finally:
            if proxy is not None:
                proxy.stop()
            pids = recorded_pids(paths)
            stopping = time.monotonic()
            report = stop_celery_stack(paths)
            print(f"stack stopped in {time.monotonic() - stopping:.0f} s")
            interface.reset_connection()
            left = {name: pid for name, pid in pids.items() if _group_alive(pid)}
            assert not left, f"processes of the stack still run after stopping it: {left}"
            assert not report.survivors, f"processes outlived the stop of their process group: {report.survivors}"
            assert set(report.stopped) == set(pids), f"stopped {report.stopped}, recorded {sorted(pids)}"


# ---------------------------------------------------------------- helpers


def _wait(e2e: E2E, what: str, probe: Callable[[], T | None], timeout: float, details: Callable[[], str]) -> T:
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


def _dag_known(e2e: E2E, dag_id: str) -> bool:
    try:
        e2e.stack.api.get(f"/api/v2/dags/{dag_id}")
        return True
    except ApiError as error:
        if error.status == 404:
            return False
        raise


def _run_for(e2e: E2E, dag_id: str, raw_file_id: str) -> dict[str, Any] | None:
    """The DAG run of ``dag_id`` whose conf names ``raw_file_id``."""
    runs = e2e.stack.api.get(f"/api/v2/dags/{dag_id}/dagRuns", limit=100)["dag_runs"]
    matching = [run for run in runs if (run.get("conf") or {}).get("raw_file_id") == raw_file_id]
    return matching[-1] if matching else None


def _task_instances(e2e: E2E, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
    """Task id -> task instance (REST, with state, queue, hostname, try_number); mapped ones by ``id[i]``."""
    tis = e2e.stack.api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=100)["task_instances"]
    return {ti["task_id"] + (f"[{ti['map_index']}]" if ti.get("map_index", -1) >= 0 else ""): ti for ti in tis}


def _describe(e2e: E2E, dag_id: str, run_id: str | None, raw_file_id: str) -> str:
    lines = []
    if run_id:
        for task_id, ti in _task_instances(e2e, dag_id, run_id).items():
            lines.append(
                f"  {dag_id}/{task_id}: {ti['state']} try {ti['try_number']} queue {ti['queue']} on {ti['hostname']}"
            )
            if ti["state"] in ("failed", "up_for_retry", "upstream_failed"):
                lines.append(e2e.stack.task_log(dag_id, run_id, ti["task_id"]))
    raw_file = RawFile.objects(id=raw_file_id).first()
    lines.append(f"  RawFile: {raw_file.to_mongo().to_dict() if raw_file else 'not registered'}")
    return "\n".join(lines)


def _raw_file(raw_file_id: str) -> RawFile:
    raw_file = RawFile.objects(id=raw_file_id).first()
    assert raw_file is not None, f"{raw_file_id} was never registered"
    return raw_file


def _assert_ran_on(tis: dict[str, dict[str, Any]], task_ids: list[str], queue: str, worker: CeleryWorker) -> None:
    for task_id in task_ids:
        ti = tis[task_id]
        assert (ti["queue"], ti["hostname"]) == (queue, worker.node), (
            f"{task_id} ran on queue {ti['queue']!r} on {ti['hostname']!r}; expected {queue!r} on {worker.node!r}"
        )


# ---------------------------------------------------------------- the test


def test_celery_routes_by_queue_and_a_cleared_upload_reruns(e2e: E2E) -> None:
    api, settings = e2e.stack.api, e2e.pipeline.settings
    bucket = bucket_name(BUCKET_PREFIX, PROJECT)
    phase = time.monotonic()

    def timing(label: str) -> None:
        nonlocal phase
        print(f"{label}: {time.monotonic() - phase:.0f} s")
        phase = time.monotonic()

    # 1. The DAGs are parsed; a Thermo acquisition appears; the watcher is triggered through the REST API.
    _wait(e2e, "the dag-processor to serialise the DAGs", lambda: all(
        _dag_known(e2e, dag_id) for dag_id in (WATCHER, HANDLER, MOVER)), 120, lambda: "")  # fmt: skip
    raw_path = make_thermo(e2e.pipeline.instrument_path(INSTRUMENT), f"20261122_{INSTRUMENT}_{PROJECT}_HeLa.raw")
    raw_file_id = raw_path.name
    api.post(f"/api/v2/dags/{WATCHER}/dagRuns", {"logical_date": None, "note": "celery e2e test"})
    timing("DAGs parsed, watcher triggered")

    # 2. The handler's run finishes: the upload fails (no bucket), the file mover is started and moves the file.
    handler_run = _wait(
        e2e,
        f"{HANDLER} to finish for {raw_file_id}",
        lambda: (run := _run_for(e2e, HANDLER, raw_file_id)) and run["state"] in FINISHED_RUN_STATES and run,
        300,
        lambda: _describe(e2e, HANDLER, (_run_for(e2e, HANDLER, raw_file_id) or {}).get("dag_run_id"), raw_file_id),
    )
    run_id = handler_run["dag_run_id"]
    mover_run = _wait(
        e2e,
        f"{MOVER} to finish for {raw_file_id}",
        lambda: (run := _run_for(e2e, MOVER, raw_file_id)) and run["state"] in FINISHED_RUN_STATES and run,
        120,
        lambda: _describe(e2e, MOVER, (_run_for(e2e, MOVER, raw_file_id) or {}).get("dag_run_id"), raw_file_id),
    )
    timing("handler and file mover finished")
    tis = _task_instances(e2e, HANDLER, run_id)
    mover_tis = _task_instances(e2e, MOVER, mover_run["dag_run_id"])

    # 3. Routing, from the task instances: each worker ran only its queues.
    _assert_ran_on(tis, ["upload_to_s3"], settings.queue(S3_UPLOADER_QUEUE), e2e.s3_worker)
    assert tis["upload_to_s3"]["pool"] == S3_UPLOAD_POOL, tis["upload_to_s3"]
    _assert_ran_on(tis, list(INSTRUMENT_TASKS), settings.queue(INSTRUMENT), e2e.instrument_worker)
    _assert_ran_on(mover_tis, list(mover_tis), settings.queue(FILE_MOVER_QUEUE), e2e.instrument_worker)
    watcher_runs = api.get(f"/api/v2/dags/{WATCHER}/dagRuns")["dag_runs"]
    for watcher_run in watcher_runs:
        watcher_tis = _task_instances(e2e, WATCHER, watcher_run["dag_run_id"])
        ran = [task_id for task_id, ti in watcher_tis.items() if ti["hostname"]]
        _assert_ran_on(watcher_tis, ran, settings.queue(INSTRUMENT), e2e.instrument_worker)

    # The failed upload is visible and did not block the file mover.
    describe = _describe(e2e, HANDLER, run_id, raw_file_id)
    assert {task_id: tis[task_id]["state"] for task_id in (*INSTRUMENT_TASKS, "upload_to_s3")} == {
        **dict.fromkeys(INSTRUMENT_TASKS, "success"),
        "upload_to_s3": "failed",
    }, describe
    assert handler_run["state"] == "failed", describe
    assert mover_run["state"] == "success", _describe(e2e, MOVER, mover_run["dag_run_id"], raw_file_id)
    raw_file = _raw_file(raw_file_id)
    assert raw_file.status == "moved", describe
    moved_to = move_target_folder(raw_file, settings) / raw_path.name
    assert not raw_path.exists() and moved_to.is_file(), f"{raw_path} was not moved to {moved_to}\n{describe}"
    assert raw_file.backup_status == "upload_failed", describe
    assert bucket in (raw_file.backup_status_details or ""), (
        f"backup_status_details should name the missing bucket {bucket!r}: {raw_file.backup_status_details!r}"
    )

    # 4. Create the bucket, clear the failed upload as the UI does (preview, then clear), and it succeeds.
    e2e.s3.create_bucket(Bucket=bucket)
    clear = {
        "dag_run_id": run_id,
        "task_ids": ["upload_to_s3"],
        "only_failed": True,
        "include_upstream": False,
        "include_downstream": False,
        "include_future": False,
        "include_past": False,
    }
    preview = api.post(f"/api/v2/dags/{HANDLER}/clearTaskInstances", {**clear, "dry_run": True})
    assert [ti["task_id"] for ti in preview["task_instances"]] == ["upload_to_s3"], preview
    cleared = api.post(f"/api/v2/dags/{HANDLER}/clearTaskInstances", {**clear, "dry_run": False})
    assert [ti["task_id"] for ti in cleared["task_instances"]] == ["upload_to_s3"], cleared
    timing("checked the failure, cleared upload_to_s3")

    retried = _wait(
        e2e,
        "the cleared upload_to_s3 to finish",
        lambda: (
            (ti := _task_instances(e2e, HANDLER, run_id)["upload_to_s3"])["try_number"] >= 2
            and ti["state"] in ("success", "failed")
            and ti
        ),
        180,
        lambda: _describe(e2e, HANDLER, run_id, raw_file_id),
    )
    describe = _describe(e2e, HANDLER, run_id, raw_file_id)
    assert retried["state"] == "success", describe
    _assert_ran_on({"upload_to_s3": retried}, ["upload_to_s3"], settings.queue(S3_UPLOADER_QUEUE), e2e.s3_worker)
    handler_run = _wait(
        e2e,
        f"{HANDLER} run {run_id} to be successful",
        lambda: (run := api.get(f"/api/v2/dags/{HANDLER}/dagRuns/{run_id}"))["state"] in FINISHED_RUN_STATES and run,
        60,
        lambda: describe,
    )
    assert handler_run["state"] == "success", describe
    timing("cleared upload succeeded")

    raw_file = _raw_file(raw_file_id)
    assert raw_file.backup_status == "upload_done", describe
    assert raw_file.s3_backup_key and raw_file.s3_backup_key.startswith(f"s3://{bucket}/"), describe
    key_prefix = raw_file.s3_backup_key[len(f"s3://{bucket}/") :]
    size, _md5, etag = raw_file.file_info[raw_file_id]
    head = e2e.s3.head_object(Bucket=bucket, Key=f"{key_prefix}{raw_file_id}")
    assert head["ContentLength"] == size == 12 * MIB
    assert head["ETag"].strip('"') == raw_file.s3_etag.strip('"') == etag.strip('"'), (head["ETag"], describe)


# ---------------------------------------------------------------- housekeeping beside full uploads

SLOW_UPLOAD_BYTES_PER_SECOND = 96 * 1024  # two 8 MiB uploads share it: about three minutes


def _register_copied(settings: Any, name: str, size: int, seed: int) -> str:
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


def _trigger(e2e: E2E, dag_id: str, conf: dict[str, Any] | None = None) -> str:
    run = e2e.stack.api.post(f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})
    return run["dag_run_id"]


def _run_state(e2e: E2E, dag_id: str, run_id: str) -> str:
    return e2e.stack.api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]


def test_the_sweep_runs_to_the_end_while_two_uploads_fill_the_upload_pool(e2e: E2E) -> None:
    settings = e2e.pipeline.settings
    bucket = bucket_name(BUCKET_PREFIX, PROJECT)
    if bucket not in {b["Name"] for b in e2e.s3.list_buckets()["Buckets"]}:
        e2e.s3.create_bucket(Bucket=bucket)
    _wait(e2e, "the DAGs to be serialised", lambda: all(_dag_known(e2e, d) for d in (
        keys.UPLOAD_RETRY_DAG_ID, keys.SWEEPER_DAG_ID)), 120, lambda: "")  # fmt: skip
    names = [_register_copied(settings, f"20261122_{INSTRUMENT}_{PROJECT}_slow{n}.raw", 8 * MIB, n) for n in (1, 2)]
    assert e2e.proxy is not None and e2e.maintenance_worker is not None
    e2e.proxy.throttle(SLOW_UPLOAD_BYTES_PER_SECOND)
    try:
        upload_runs = {name: _trigger(e2e, keys.UPLOAD_RETRY_DAG_ID, {"raw_file_id": name}) for name in names}

        def uploading() -> bool:
            states = [_task_instances(e2e, keys.UPLOAD_RETRY_DAG_ID, run_id).get(keys.UPLOAD_TO_S3_TASK, {})
                      for run_id in upload_runs.values()]  # fmt: skip
            return all(ti.get("state") == "running" for ti in states)

        def describe_uploads() -> str:
            return "\n".join(_describe(e2e, keys.UPLOAD_RETRY_DAG_ID, run, name) for name, run in upload_runs.items())

        _wait(e2e, "both uploads to run", uploading, 180, describe_uploads)
        pool = e2e.stack.api.get(f"/api/v2/pools/{S3_UPLOAD_POOL}")
        assert (pool["slots"], pool["running_slots"], pool["open_slots"]) == (2, 2, 0), pool
        started = time.monotonic()

        sweeps = []
        for _ in range(2):  # two whole runs (max_active_runs is 1): each ends while the pool stays full
            run_id = _trigger(e2e, keys.SWEEPER_DAG_ID)
            _wait(e2e, f"{keys.SWEEPER_DAG_ID} run {run_id} to finish", lambda run_id=run_id: _run_state(
                e2e, keys.SWEEPER_DAG_ID, run_id) in FINISHED_RUN_STATES, 180, lambda: "")  # fmt: skip
            sweeps.append(run_id)
            assert uploading(), "an upload ended before the sweeps: slow the proxy down further"
        print(f"two sweeps ran in {time.monotonic() - started:.0f} s while both uploads held the pool")
        for run_id in sweeps:
            tis = _task_instances(e2e, keys.SWEEPER_DAG_ID, run_id)
            assert _run_state(e2e, keys.SWEEPER_DAG_ID, run_id) == "success", tis
            _assert_ran_on(tis, [keys.FIND_BACKUPS_TO_RETRY_TASK], settings.queue(MAINTENANCE_QUEUE),
                           e2e.maintenance_worker)  # fmt: skip
        for name in names:  # the sweeps left the live uploads alone
            assert _raw_file(name).backup_status == "upload_in_progress"
    finally:
        e2e.proxy.throttle(None)

    for name, run_id in upload_runs.items():
        _wait(e2e, f"the upload of {name} to finish", lambda run_id=run_id: _run_state(
            e2e, keys.UPLOAD_RETRY_DAG_ID, run_id) in FINISHED_RUN_STATES, 300, lambda: "")  # fmt: skip
        describe = _describe(e2e, keys.UPLOAD_RETRY_DAG_ID, run_id, name)
        assert _run_state(e2e, keys.UPLOAD_RETRY_DAG_ID, run_id) == "success", describe
        _assert_ran_on(_task_instances(e2e, keys.UPLOAD_RETRY_DAG_ID, run_id), [keys.UPLOAD_TO_S3_TASK],
                       settings.queue(S3_UPLOADER_QUEUE), e2e.s3_worker)  # fmt: skip
        raw_file = _raw_file(name)
        assert raw_file.backup_status == "upload_done", describe
        head = e2e.s3.head_object(Bucket=bucket, Key=f"{raw_file.backup_base_path}/{name}")
        assert head["ETag"].strip('"') == raw_file.file_info[name][2] == raw_file.s3_etag
