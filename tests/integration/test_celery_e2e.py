"""End to end with the CeleryExecutor, as deployed: Redis broker, PostgreSQL metadata DB, three Celery workers.

One worker serves the instrument queues and the file mover, one only
``<prefix>s3_uploader``, one only ``<prefix>rawvault_maintenance`` (sweeper,
re-drive, verifier, alerts). S3 is reached through a TCP proxy that can slow
uploads down (``devtools.proxy``). One stack serves every test of this module
(they run in file order; the last one stops it).

The stack runs with distinctive secrets: the AWS secret access key of
``aws_default``, a MongoDB password (SecantusDB with ``--auth``: every client
must log in with it), the Fernet key, the JWT and API secret keys, the UI
password, a webhook URL in an environment connection and a password in a
connection created through the REST API.

1. A Thermo acquisition goes through the watcher, the acquisition handler and
   the file mover. Its bucket does not exist (and ``auto_create_buckets`` is
   off), so ``upload_to_s3`` fails visibly while the file mover still runs; the
   task instances show which worker ran which task. Then the bucket is created
   and the failed task is cleared through the REST API, as the UI's "Clear"
   does, and the rerun uploads the file.
2. Two slow uploads fill ``s3_upload_pool`` (and the uploader worker) for
   minutes; meanwhile ``backup_sweeper`` runs twice to the end on the
   maintenance worker: housekeeping never waits behind uploads.
3. ``backup_verifier`` runs on the maintenance worker; then the CLI runs
   ``verify``, ``restore`` and ``verify`` with a wrong MongoDB password.
4. No secret ever reaches a log (issue 13, item 8): after the stack has
   stopped, every log file it wrote (task logs, scheduler, dag-processor,
   workers, api-server, servers, the CLI's stdout and stderr) is scanned for
   each secret, as is, URL-encoded and base64-encoded; a hit fails naming the
   file and line.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.celery_e2e_fixtures")  # imported before pytest rewrites it

from rawvault import keys  # noqa: E402
from rawvault.keys import FILE_MOVER_QUEUE, MAINTENANCE_QUEUE, S3_UPLOAD_POOL, S3_UPLOADER_QUEUE  # noqa: E402
from rawvault.locations import move_target_folder  # noqa: E402
from rawvault.s3.buckets import bucket_name  # noqa: E402
from shared.db import interface  # noqa: E402
from shared.db.models import RawFile  # noqa: E402
from tests.celery_e2e_fixtures import (  # noqa: E402
    BUCKET_PREFIX,
    E2E,
    FINISHED_RUN_STATES,
    HANDLER,
    INSTRUMENT,
    INSTRUMENT_TASKS,
    MOVER,
    PROJECT,
    SLOW_UPLOAD_BYTES_PER_SECOND,
    WATCHER,
    assert_nothing_left,
    assert_ran_on,
    dag_known,
    describe_run,
    raw_file_of,
    register_copied,
    run_for,
    run_state,
    task_instances,
    trigger,
    wait_for,
)
from tests.data_factory import MIB, make_thermo  # noqa: E402
from tests.integration.secret_scan import log_files, scan  # noqa: E402

pytest_plugins = ["tests.celery_e2e_fixtures"]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

CLI = Path(__file__).resolve().parents[2] / "scripts" / "rawvault.sh"


def test_celery_routes_by_queue_and_a_cleared_upload_reruns(e2e: E2E) -> None:
    api, settings = e2e.stack.api, e2e.pipeline.settings
    bucket = bucket_name(BUCKET_PREFIX, PROJECT)
    phase = time.monotonic()

    def timing(label: str) -> None:
        nonlocal phase
        print(f"{label}: {time.monotonic() - phase:.0f} s")
        phase = time.monotonic()

    # 1. The DAGs are parsed; a Thermo acquisition appears; the watcher is triggered through the REST API.
    wait_for(e2e, "the dag-processor to serialise the DAGs", lambda: all(
        dag_known(e2e, dag_id) for dag_id in (WATCHER, HANDLER, MOVER)), 120, lambda: "")  # fmt: skip
    raw_path = make_thermo(e2e.pipeline.instrument_path(INSTRUMENT), f"20261122_{INSTRUMENT}_{PROJECT}_HeLa.raw")
    raw_file_id = raw_path.name
    api.post(f"/api/v2/dags/{WATCHER}/dagRuns", {"logical_date": None, "note": "celery e2e test"})
    timing("DAGs parsed, watcher triggered")

    # 2. The handler's run finishes: the upload fails (no bucket), the file mover is started and moves the file.
    handler_run = wait_for(
        e2e,
        f"{HANDLER} to finish for {raw_file_id}",
        lambda: (run := run_for(e2e, HANDLER, raw_file_id)) and run["state"] in FINISHED_RUN_STATES and run,
        300,
        lambda: describe_run(e2e, HANDLER, (run_for(e2e, HANDLER, raw_file_id) or {}).get("dag_run_id"), raw_file_id),
    )
    run_id = handler_run["dag_run_id"]
    mover_run = wait_for(
        e2e,
        f"{MOVER} to finish for {raw_file_id}",
        lambda: (run := run_for(e2e, MOVER, raw_file_id)) and run["state"] in FINISHED_RUN_STATES and run,
        120,
        lambda: describe_run(e2e, MOVER, (run_for(e2e, MOVER, raw_file_id) or {}).get("dag_run_id"), raw_file_id),
    )
    timing("handler and file mover finished")
    tis = task_instances(e2e, HANDLER, run_id)
    mover_tis = task_instances(e2e, MOVER, mover_run["dag_run_id"])

    # 3. Routing, from the task instances: each worker ran only its queues.
    assert_ran_on(tis, ["upload_to_s3"], settings.queue(S3_UPLOADER_QUEUE), e2e.s3_worker)
    assert tis["upload_to_s3"]["pool"] == S3_UPLOAD_POOL, tis["upload_to_s3"]
    assert_ran_on(tis, list(INSTRUMENT_TASKS), settings.queue(INSTRUMENT), e2e.instrument_worker)
    assert_ran_on(mover_tis, list(mover_tis), settings.queue(FILE_MOVER_QUEUE), e2e.instrument_worker)
    watcher_runs = api.get(f"/api/v2/dags/{WATCHER}/dagRuns")["dag_runs"]
    for watcher_run in watcher_runs:
        watcher_tis = task_instances(e2e, WATCHER, watcher_run["dag_run_id"])
        ran = [task_id for task_id, ti in watcher_tis.items() if ti["hostname"]]
        assert_ran_on(watcher_tis, ran, settings.queue(INSTRUMENT), e2e.instrument_worker)

    # The failed upload is visible and did not block the file mover.
    describe = describe_run(e2e, HANDLER, run_id, raw_file_id)
    assert {task_id: tis[task_id]["state"] for task_id in (*INSTRUMENT_TASKS, "upload_to_s3")} == {
        **dict.fromkeys(INSTRUMENT_TASKS, "success"),
        "upload_to_s3": "failed",
    }, describe
    assert handler_run["state"] == "failed", describe
    assert mover_run["state"] == "success", describe_run(e2e, MOVER, mover_run["dag_run_id"], raw_file_id)
    raw_file = raw_file_of(raw_file_id)
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

    retried = wait_for(
        e2e,
        "the cleared upload_to_s3 to finish",
        lambda: (
            (ti := task_instances(e2e, HANDLER, run_id)["upload_to_s3"])["try_number"] >= 2
            and ti["state"] in ("success", "failed")
            and ti
        ),
        180,
        lambda: describe_run(e2e, HANDLER, run_id, raw_file_id),
    )
    describe = describe_run(e2e, HANDLER, run_id, raw_file_id)
    assert retried["state"] == "success", describe
    assert_ran_on({"upload_to_s3": retried}, ["upload_to_s3"], settings.queue(S3_UPLOADER_QUEUE), e2e.s3_worker)
    handler_run = wait_for(
        e2e,
        f"{HANDLER} run {run_id} to be successful",
        lambda: (run := api.get(f"/api/v2/dags/{HANDLER}/dagRuns/{run_id}"))["state"] in FINISHED_RUN_STATES and run,
        60,
        lambda: describe,
    )
    assert handler_run["state"] == "success", describe
    timing("cleared upload succeeded")

    raw_file = raw_file_of(raw_file_id)
    assert raw_file.backup_status == "upload_done", describe
    assert raw_file.s3_backup_key and raw_file.s3_backup_key.startswith(f"s3://{bucket}/"), describe
    key_prefix = raw_file.s3_backup_key[len(f"s3://{bucket}/") :]
    size, _md5, etag = raw_file.file_info[raw_file_id]
    head = e2e.s3.head_object(Bucket=bucket, Key=f"{key_prefix}{raw_file_id}")
    assert head["ContentLength"] == size == 12 * MIB
    assert head["ETag"].strip('"') == raw_file.s3_etag.strip('"') == etag.strip('"'), (head["ETag"], describe)


def _first_retry_of_the_instrument(e2e: E2E) -> None:
    """One s3_upload_retry run of the instrument, alone: it makes Airflow associate the alias with its asset.

    Airflow 3.3 does that on the alias's first event for the asset by check-then-insert
    (``AssetManager._add_asset_alias_association``): two retries of one instrument that finish in the
    same instant both insert, and the loser's task is set failed although its upload was done
    (UniqueViolation on ``asset_alias_asset_pkey``, seen once in this test). In production any earlier
    retry of the instrument has made the association; this test is about the pool, not that race.
    """
    name = register_copied(e2e.pipeline.settings, f"20261122_{INSTRUMENT}_{PROJECT}_first.raw", MIB, 4)
    run_id = trigger(e2e, keys.UPLOAD_RETRY_DAG_ID, {"raw_file_id": name})
    wait_for(e2e, f"the first retry ({name}) to finish", lambda: run_state(
        e2e, keys.UPLOAD_RETRY_DAG_ID, run_id) in FINISHED_RUN_STATES, 180, lambda: "")  # fmt: skip
    assert run_state(e2e, keys.UPLOAD_RETRY_DAG_ID, run_id) == "success", describe_run(
        e2e, keys.UPLOAD_RETRY_DAG_ID, run_id, name
    )


def test_the_sweep_runs_to_the_end_while_two_uploads_fill_the_upload_pool(e2e: E2E) -> None:
    settings = e2e.pipeline.settings
    bucket = bucket_name(BUCKET_PREFIX, PROJECT)
    if bucket not in {b["Name"] for b in e2e.s3.list_buckets()["Buckets"]}:
        e2e.s3.create_bucket(Bucket=bucket)
    wait_for(e2e, "the DAGs to be serialised", lambda: all(dag_known(e2e, d) for d in (
        keys.UPLOAD_RETRY_DAG_ID, keys.SWEEPER_DAG_ID)), 120, lambda: "")  # fmt: skip
    _first_retry_of_the_instrument(e2e)
    names = [register_copied(settings, f"20261122_{INSTRUMENT}_{PROJECT}_slow{n}.raw", 8 * MIB, n) for n in (1, 2)]
    assert e2e.proxy is not None and e2e.maintenance_worker is not None
    e2e.proxy.throttle(SLOW_UPLOAD_BYTES_PER_SECOND)
    try:
        upload_runs = {name: trigger(e2e, keys.UPLOAD_RETRY_DAG_ID, {"raw_file_id": name}) for name in names}

        def uploading() -> bool:
            states = [task_instances(e2e, keys.UPLOAD_RETRY_DAG_ID, run_id).get(keys.UPLOAD_TO_S3_TASK, {})
                      for run_id in upload_runs.values()]  # fmt: skip
            return all(ti.get("state") == "running" for ti in states)

        def describe_uploads() -> str:
            return "\n".join(
                describe_run(e2e, keys.UPLOAD_RETRY_DAG_ID, run, name) for name, run in upload_runs.items()
            )

        wait_for(e2e, "both uploads to run", uploading, 180, describe_uploads)
        pool = e2e.stack.api.get(f"/api/v2/pools/{S3_UPLOAD_POOL}")
        assert (pool["slots"], pool["running_slots"], pool["open_slots"]) == (2, 2, 0), pool
        started = time.monotonic()

        sweeps = []
        for _ in range(2):  # two whole runs (max_active_runs is 1): each ends while the pool stays full
            run_id = trigger(e2e, keys.SWEEPER_DAG_ID)
            wait_for(e2e, f"{keys.SWEEPER_DAG_ID} run {run_id} to finish", lambda run_id=run_id: run_state(
                e2e, keys.SWEEPER_DAG_ID, run_id) in FINISHED_RUN_STATES, 180, lambda: "")  # fmt: skip
            sweeps.append(run_id)
            assert uploading(), "an upload ended before the sweeps: slow the proxy down further"
        print(f"two sweeps ran in {time.monotonic() - started:.0f} s while both uploads held the pool")
        for run_id in sweeps:
            tis = task_instances(e2e, keys.SWEEPER_DAG_ID, run_id)
            assert run_state(e2e, keys.SWEEPER_DAG_ID, run_id) == "success", tis
            assert_ran_on(tis, [keys.FIND_BACKUPS_TO_RETRY_TASK], settings.queue(MAINTENANCE_QUEUE),
                           e2e.maintenance_worker)  # fmt: skip
        for name in names:  # the sweeps left the live uploads alone
            assert raw_file_of(name).backup_status == "upload_in_progress"
    finally:
        e2e.proxy.throttle(None)

    for name, run_id in upload_runs.items():
        wait_for(e2e, f"the upload of {name} to finish", lambda run_id=run_id: run_state(
            e2e, keys.UPLOAD_RETRY_DAG_ID, run_id) in FINISHED_RUN_STATES, 300, lambda: "")  # fmt: skip
        describe = describe_run(e2e, keys.UPLOAD_RETRY_DAG_ID, run_id, name)
        assert run_state(e2e, keys.UPLOAD_RETRY_DAG_ID, run_id) == "success", describe
        assert_ran_on(task_instances(e2e, keys.UPLOAD_RETRY_DAG_ID, run_id), [keys.UPLOAD_TO_S3_TASK],
                       settings.queue(S3_UPLOADER_QUEUE), e2e.s3_worker)  # fmt: skip
        raw_file = raw_file_of(name)
        assert raw_file.backup_status == "upload_done", describe
        head = e2e.s3.head_object(Bucket=bucket, Key=f"{raw_file.backup_base_path}/{name}")
        assert head["ETag"].strip('"') == raw_file.file_info[name][2] == raw_file.s3_etag


def _uploaded_raw_files(e2e: E2E) -> list[str]:
    """The upload_done raw files; with none (this test run alone) one is registered and uploaded first."""
    uploaded = [raw_file.id for raw_file in RawFile.objects(backup_status="upload_done").order_by("id")]
    if uploaded:
        return uploaded
    bucket = bucket_name(BUCKET_PREFIX, PROJECT)
    if bucket not in {b["Name"] for b in e2e.s3.list_buckets()["Buckets"]}:
        e2e.s3.create_bucket(Bucket=bucket)
    name = register_copied(e2e.pipeline.settings, f"20261122_{INSTRUMENT}_{PROJECT}_verify.raw", 6 * MIB, 3)
    wait_for(e2e, "the DAGs to be serialised", lambda: dag_known(e2e, keys.UPLOAD_RETRY_DAG_ID), 120, lambda: "")
    run_id = trigger(e2e, keys.UPLOAD_RETRY_DAG_ID, {"raw_file_id": name})
    wait_for(e2e, f"the upload of {name}", lambda: run_state(e2e, keys.UPLOAD_RETRY_DAG_ID, run_id) in
             FINISHED_RUN_STATES, 300, lambda: describe_run(e2e, keys.UPLOAD_RETRY_DAG_ID, run_id, name))  # fmt: skip
    assert raw_file_of(name).backup_status == "upload_done", describe_run(e2e, keys.UPLOAD_RETRY_DAG_ID, run_id, name)
    return [name]


def _run_cli(e2e: E2E, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``scripts/rawvault.sh ARGS`` as a user runs it; stdout and stderr kept as log files for the scan."""
    cli_env = {key: value for key, value in e2e.stack.env.items() if not key.startswith("AIRFLOW__CELERY")}
    result = subprocess.run(["bash", str(CLI), *args], env={**cli_env, **(env or {})}, capture_output=True,
                            text=True, timeout=300, check=False)  # fmt: skip
    assert e2e.cli_logs is not None
    e2e.cli_logs.mkdir(parents=True, exist_ok=True)
    (e2e.cli_logs / f"{name}.stdout.log").write_text(result.stdout, encoding="utf-8")
    (e2e.cli_logs / f"{name}.stderr.log").write_text(result.stderr, encoding="utf-8")
    return result


def test_the_verifier_and_the_cli_check_and_restore_the_uploads(e2e: E2E) -> None:
    """backup_verifier on the maintenance worker; the CLI's verify, restore, and verify with a wrong password."""
    uploaded = _uploaded_raw_files(e2e)
    api = e2e.stack.api
    wait_for(e2e, "the DAGs to be serialised", lambda: dag_known(e2e, keys.VERIFIER_DAG_ID), 120, lambda: "")
    run_id = trigger(e2e, keys.VERIFIER_DAG_ID, {"sample": 0})

    def verify_log() -> str:
        return e2e.stack.task_log(keys.VERIFIER_DAG_ID, run_id, keys.VERIFY_BACKUPS_TASK)

    wait_for(e2e, f"{keys.VERIFIER_DAG_ID} to finish", lambda: run_state(e2e, keys.VERIFIER_DAG_ID, run_id) in
             FINISHED_RUN_STATES, 240, verify_log)  # fmt: skip
    assert api.get(f"/api/v2/dags/{keys.VERIFIER_DAG_ID}/dagRuns/{run_id}")["state"] == "success", verify_log()
    tis = task_instances(e2e, keys.VERIFIER_DAG_ID, run_id)
    assert e2e.maintenance_worker is not None
    assert_ran_on(tis, list(tis), e2e.pipeline.settings.queue(MAINTENANCE_QUEUE), e2e.maintenance_worker)

    verify = _run_cli(e2e, "verify", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"checked {len(uploaded)} raw file(s)" in verify.stdout, verify.stdout
    assert e2e.cli_logs is not None
    restore = _run_cli(e2e, "restore", "restore", uploaded[0], str(e2e.cli_logs / "restored"))
    assert restore.returncode == 0, restore.stdout + restore.stderr
    uri = e2e.stack.env[interface.ENV_VAR_MONGO_URI]
    wrong_uri = uri.replace(e2e.secrets["MongoDB password"], e2e.secrets["MongoDB password given wrongly to the CLI"])
    assert wrong_uri != uri
    wrong = _run_cli(e2e, "verify-wrong-password", "verify", env={interface.ENV_VAR_MONGO_URI: wrong_uri})
    assert wrong.returncode == 2 and "uthentication failed" in wrong.stderr, wrong.stdout + wrong.stderr


def test_no_secret_reaches_any_log(e2e: E2E) -> None:
    """Stops the stack, then scans every log it and the CLI wrote for every secret.

    Runs last (pytest runs a module's tests in file order) and needs the earlier tests' logs: at
    least 8 task logs come from their DAG runs, the CLI's logs from the verifier test.
    """
    paths = e2e.stack.paths
    e2e.stack.api.close()
    report = e2e.stop()
    assert_nothing_left(report, e2e.pids_at_stop)

    assert e2e.cli_logs is not None
    files = log_files(paths.logs, paths.airflow_home / "logs", e2e.cli_logs)
    task_logs = [path for path in files if "dag_id=" in str(path)]
    names = {path.name for path in files}
    assert len(task_logs) >= 8 and {"airflow-scheduler.log", "airflow-api-server.log"} <= names, sorted(map(str, files))
    assert any("dag_processor" in str(path) for path in files) or "airflow-dag-processor.log" in names
    leaks = scan(files, e2e.secrets)
    megabytes = sum(path.stat().st_size for path in files) / 1e6
    print(f"scanned {len(files)} log files ({megabytes:.1f} MB) for {len(e2e.secrets)} secrets")
    assert not leaks, f"{len(leaks)} line(s) of the logs hold a secret:\n" + "\n".join(map(str, leaks[:40]))
