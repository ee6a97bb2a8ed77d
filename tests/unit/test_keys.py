"""rawvault.keys: DAG ids and run ids Airflow accepts, deterministic, one per raw file."""

from __future__ import annotations

import ast
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rawvault import keys

KEYS_SOURCE = Path(keys.__file__)


# No deadline: the first example imports Airflow. No example database: nothing written into the worktree.
examples = settings(deadline=None, database=None)


def airflow_accepts_run_id(run_id: str) -> bool:
    """Whether Airflow's own DagRun validation (pattern, no '..') and its column width take ``run_id``."""
    from airflow.models.base import ID_LEN
    from airflow.models.dagrun import DagRun

    try:
        DagRun.validate_run_id(DagRun(), "run_id", run_id)
    except ValueError:
        return False
    return len(run_id) <= ID_LEN


raw_file_ids = st.text(min_size=1, max_size=400)


@examples
@given(raw_file_ids)
def test_run_ids_are_valid_airflow_run_ids(raw_file_id: str) -> None:
    assert airflow_accepts_run_id(keys.run_id_for(raw_file_id))
    assert airflow_accepts_run_id(keys.retry_run_id(raw_file_id, 10**6, 10**6))


@pytest.mark.parametrize(
    "raw_file_id",
    ["a..raw", "x...d", "..", "20261122 ä/..b.wiff", "a" * 179 + "..raw", "plain.raw", "NAME.d"],
)
def test_run_ids_of_awkward_names_are_valid(raw_file_id: str) -> None:
    # Airflow refuses '..' in a run id (path traversal): a raw file named "a..raw" once could not be started.
    assert airflow_accepts_run_id(keys.run_id_for(raw_file_id))


@examples
@given(raw_file_ids, raw_file_ids)
def test_distinct_raw_files_get_distinct_run_ids(first: str, second: str) -> None:
    assert (keys.run_id_for(first) == keys.run_id_for(second)) == (first == second)


def test_run_ids_are_deterministic_and_readable() -> None:
    assert keys.run_id_for("20261122_a.raw") == keys.run_id_for("20261122_a.raw")
    assert keys.run_id_for("20261122_a.raw").startswith("rawvault__20261122_a.raw__")
    # Names Airflow would refuse keep a readable part and differ by their hash.
    assert keys.run_id_for("a b.raw") != keys.run_id_for("a_b.raw")


def test_retry_run_ids_name_the_attempt_and_the_round() -> None:
    base = keys.run_id_for("x.raw")
    assert keys.retry_run_id("x.raw", 0) == f"{base}__attempt1"
    assert keys.retry_run_id("x.raw", 2, 1) == f"{base}__attempt3__1"
    assert len({keys.retry_run_id("x.raw", attempts, r) for attempts in range(3) for r in range(3)}) == 9


def test_dag_ids_per_instrument() -> None:
    assert keys.watcher_dag_id("tims1") == "instrument_watcher.tims1"
    assert keys.handler_dag_id("tims1") == "acquisition_handler.tims1"
    assert keys.file_mover_dag_id("tims1") == "file_mover.tims1"
    assert keys.file_remover_dag_id("tims1") == "file_remover.tims1"


def test_contract_names() -> None:
    # DESIGN.md: other tools trigger these DAGs and read these task ids.
    assert (keys.SWEEPER_DAG_ID, keys.UPLOAD_RETRY_DAG_ID, keys.VERIFIER_DAG_ID) == (
        "backup_sweeper",
        "s3_upload_retry",
        "backup_verifier",
    )
    handler_tasks = [
        keys.MONITOR_ACQUISITION_TASK,
        keys.COMPUTE_CHECKSUM_TASK,
        keys.COPY_RAW_FILE_TASK,
        keys.UPLOAD_TO_S3_TASK,
        keys.START_FILE_MOVER_TASK,
    ]
    assert handler_tasks == [
        "monitor_acquisition",
        "compute_checksum",
        "copy_raw_file",
        "upload_to_s3",
        "start_file_mover",
    ]
    assert keys.RAW_FILE_ID_KEY == "raw_file_id"
    assert keys.RAW_FILE_ID_TEMPLATE == "{{ params.raw_file_id }}"
    assert keys.RUN_ID_TEMPLATE == "{{ run_id_for(params.raw_file_id) }}"


def test_task_ids_are_distinct() -> None:
    task_ids = [value for name, value in vars(keys).items() if name.endswith("_TASK")]
    assert len(task_ids) == len(set(task_ids))


def test_keys_imports_no_airflow() -> None:
    tree = ast.parse(KEYS_SOURCE.read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    # shared.s3_limits is plain constants (the upload retry cap lives there, beside the S3 limits).
    imported -= {"shared.s3_limits"}
    assert not {name for name in imported if name.split(".")[0] in {"airflow", "rawvault", "shared"}}


def test_upload_retry_delay_cap_is_defined_once_in_shared() -> None:
    # Issue 15 item 5: the lifecycle check (shared.settings) and the sweeper/Airflow retry cap (keys) are one value.
    from shared import s3_limits
    from shared.settings import s3_compat

    assert "UPLOAD_BACKOFF_CAP_HOURS" in KEYS_SOURCE.read_text()
    assert s3_compat.UPLOAD_BACKOFF_CAP_HOURS is s3_limits.UPLOAD_BACKOFF_CAP_HOURS
    assert timedelta(hours=s3_limits.UPLOAD_BACKOFF_CAP_HOURS) == keys.MAX_UPLOAD_RETRY_DELAY


def test_upload_retry_delay_cap_is_shared_by_the_sweeper() -> None:
    from rawvault import sweeper

    assert sweeper.MAX_BACKOFF is keys.MAX_UPLOAD_RETRY_DELAY
    assert sweeper.backoff(20, 1) == keys.MAX_UPLOAD_RETRY_DELAY
