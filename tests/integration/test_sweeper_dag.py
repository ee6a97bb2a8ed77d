"""backup_sweeper in a real DAG run (dag.test): stale and failed uploads are retried, capped ones reported."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devtools.local_stack import aws_connection_uri
from devtools.servers import S3Server, local_s3_client
from shared.db.interface import create_raw_file, get_raw_file, utc_now
from shared.settings import get_settings
from tests.airflow_harness import init_airflow_db, load_dags, run_dag
from tests.data_factory import MIB, write_bytes
from tests.pipeline_env import activate, write_pipeline_env

pytestmark = pytest.mark.timeout(600)

CREATED = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
BASE = "thermo1/2026_11"


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    with S3Server() as server:
        yield server


def _backup(**s3: Any) -> dict[str, Any]:
    return {
        "backup_type": "s3",
        "s3": {
            "region": "us-east-1",
            "bucket_prefix": "rv-sweep",
            "part_size_mb": 5,
            "auto_create_buckets": True,
            "upload_retry_delay_minutes": 1,
            "max_upload_attempts": 3,
            "stale_upload_minutes": 5,
            **s3,
        },
    }


def _raw_file(backup_root: Path, name: str, size: int, **fields: Any) -> None:
    """A raw file with its local backup copy and recorded checksums, in the given upload state."""
    from tests.s3_fixtures import file_info_of

    write_bytes(backup_root / BASE / name, size, seed=size)
    create_raw_file(
        name,
        instrument_id="thermo1",
        created_at=CREATED,
        file_info=file_info_of(backup_root / BASE, [name]),
        etag_part_size=5 * MIB,
        backup_base_path=BASE,
        **fields,
    )


def test_sweeper_dag_retries_failed_and_stale_uploads(
    tmp_path: Path, mongo_uri: str, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    init_airflow_db()
    env = write_pipeline_env(tmp_path, backup=_backup())
    activate(env, monkeypatch)
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", aws_connection_uri(s3_server.endpoint_url))
    long_ago = utc_now() - timedelta(hours=1)
    _raw_file(env.backup_root, "failed.raw", 7 * MIB, backup_status="upload_failed", s3_upload_attempts=1,
              s3_upload_attempted_at=long_ago, backup_status_details="upload to S3 failed: S3 was down")  # fmt: skip
    _raw_file(env.backup_root, "stale.raw", 300 * 1024, backup_status="upload_in_progress", s3_upload_attempts=1,
              s3_upload_attempted_at=long_ago, upload_claim_owner="worker-2:4711:dead",
              upload_claim_expires_at=long_ago + timedelta(minutes=5))  # fmt: skip
    _raw_file(env.backup_root, "capped.raw", 1024, backup_status="upload_failed", s3_upload_attempts=3,
              s3_upload_attempted_at=long_ago, backup_status_details="upload to S3 failed: denied")  # fmt: skip
    _raw_file(env.backup_root, "recent.raw", 1024, backup_status="upload_failed", s3_upload_attempts=1,
              s3_upload_attempted_at=utc_now())  # fmt: skip

    sweeper = load_dags()["backup_sweeper"]
    assert sweeper.schedule == "*/15 * * * *" and sweeper.max_active_runs == 1  # backup.s3.sweep_schedule default
    retry = sweeper.get_task("retry_upload_to_s3")
    assert (retry.queue, retry.pool, retry.retries) == ("test_s3_uploader", "s3_upload_pool", 0)
    states = run_dag(sweeper)
    assert states["__dagrun__"] == "success", states
    assert states["find_backups_to_retry"] == "success"

    s3 = local_s3_client(s3_server.endpoint_url)
    for name in ("failed.raw", "stale.raw"):
        raw_file = get_raw_file(name)
        assert raw_file.backup_status == "upload_done", raw_file.backup_status_details
        assert raw_file.s3_upload_attempts == 2 and raw_file.upload_claim_owner is None
        head = s3.head_object(Bucket="rv-sweep-fallback", Key=f"{BASE}/{name}")
        assert head["ETag"].strip('"') == raw_file.file_info[name][2] == raw_file.s3_etag
    capped = get_raw_file("capped.raw")
    assert capped.backup_status == "upload_failed" and capped.s3_upload_attempts == 3
    assert capped.backup_status_details.startswith("gave up after 3 attempts; clear upload_to_s3 to retry by hand")
    recent = get_raw_file("recent.raw")
    assert recent.backup_status == "upload_failed" and recent.s3_upload_attempts == 1  # its backoff has not passed
    get_settings.cache_clear()


def test_no_sweeper_without_s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    activate(write_pipeline_env(tmp_path), monkeypatch)  # backup_type: local
    assert "backup_sweeper" not in load_dags()
    get_settings.cache_clear()
