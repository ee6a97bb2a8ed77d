"""The outcome of the load run (``bench/load_celery.py``): final states, checks against S3, figures."""

from __future__ import annotations

from collections import Counter
from typing import Any

from devtools.celery_stack import CeleryStack
from devtools.servers import local_s3_client
from rawvault import keys
from shared.db.models import RawFile

FINAL_BACKUP = "upload_done"


def final_state(raw_file: RawFile) -> str | None:
    """The raw file's final state, or None while it is still on its way."""
    if raw_file.backup_status == FINAL_BACKUP and raw_file.status == "moved":
        return "upload_done"
    if raw_file.status == "error" and raw_file.error_transient is False:
        return "error (permanent)"
    if raw_file.status == "error" and "gave up after" in (raw_file.status_details or ""):
        return "error (re-drives given up)"
    if raw_file.backup_status == "upload_failed" and "gave up after" in (raw_file.backup_status_details or ""):
        return "upload_failed (given up)"
    return None


def all_final(expected: int) -> bool:
    raw_files = list(RawFile.objects)
    return len(raw_files) == expected and all(final_state(raw_file) for raw_file in raw_files)


def metadata_figures(stack: CeleryStack) -> dict[str, Any]:
    """Task and DAG run counts from the metadata DB (read by this script, never by a task)."""
    import psycopg2

    with psycopg2.connect(host="127.0.0.1", port=stack.postgres.port, user="airflow", dbname="airflow") as db:
        cursor = db.cursor()
        cursor.execute(
            "SELECT split_part(dag_id, '.', 1), count(*), coalesce(sum(try_number), 0), "
            "coalesce(sum(greatest(try_number - 1, 0)), 0) FROM task_instance GROUP BY 1 ORDER BY 1"
        )
        tasks = {row[0]: {"task instances": row[1], "tries": row[2], "retries": row[3]} for row in cursor.fetchall()}
        cursor.execute("SELECT split_part(dag_id, '.', 1), count(*) FROM dag_run GROUP BY 1 ORDER BY 1")
        runs = dict(cursor.fetchall())
        cursor.execute("SELECT count(*) FROM dag_run WHERE run_id LIKE %s", (f"%{keys.REDRIVE_SUFFIX}%",))
        redrive_runs = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM task_reschedule")
        pokes = cursor.fetchone()[0]
    return {"tasks": tasks, "dag runs": runs, "redrive runs": redrive_runs, "sensor reschedules": pokes}


def check_outcome(expected_states: dict[str, str], s3_endpoint: str) -> list[str]:
    """What did not end in its expected state (raw file id -> final state); upload_done ones verified in S3."""
    client = local_s3_client(s3_endpoint)
    problems = []
    for raw_file_id, expected in expected_states.items():
        raw_file = RawFile.objects(id=raw_file_id).first()
        state = final_state(raw_file) if raw_file else None
        if state != expected:
            details = raw_file.to_mongo().to_dict() if raw_file else "never registered"
            problems.append(f"{raw_file_id}: {state or 'not final'} (expected {expected}): {details}")
            continue
        if state == "upload_done":
            bucket = raw_file.s3_backup_key.removeprefix("s3://").split("/", 1)[0]
            for path, (size, _md5, etag) in raw_file.file_info.items():
                head = client.head_object(Bucket=bucket, Key=f"{raw_file.backup_base_path}/{path}")
                if (head["ContentLength"], head["ETag"].strip('"')) != (size, etag):
                    problems.append(f"{raw_file_id}: s3 object {path} differs from file_info")
    return problems


def report(instruments: int, fault_log: list[str], wall: float, figures: dict[str, Any]) -> None:
    """Print the figures of the run: outcome, faults, re-drives, upload attempts, DAG runs, task runs."""
    raw_files = list(RawFile.objects)
    states = Counter(final_state(raw_file) or "not final" for raw_file in raw_files)
    print(f"\n{len(raw_files)} acquisitions on {instruments} instruments: {dict(states)}; wall time {wall:.0f} s")
    print("faults:\n  " + "\n  ".join(fault_log))
    print(f"re-drives: {sum(r.redrive_count or 0 for r in raw_files)} ({figures['redrive runs']} handler runs "
          f"__redrive<N>) for {sum(1 for r in raw_files if r.redrive_count)} raw file(s)")  # fmt: skip
    attempts = [r.s3_upload_attempts or 0 for r in raw_files]
    print(f"upload attempts: {sum(attempts)} for {sum(1 for a in attempts if a)} uploads "
          f"({sum(max(a - 1, 0) for a in attempts)} retried)")  # fmt: skip
    print(f"DAG runs: {figures['dag runs']}; sensor reschedules (pokes): {figures['sensor reschedules']}")
    total = {k: sum(t[k] for t in figures["tasks"].values()) for k in ("task instances", "tries", "retries")}
    print(f"task runs: {total} by DAG:")
    for dag, numbers in figures["tasks"].items():
        print(f"  {dag:22} {numbers}")
