"""Helpers of the fault suites (``tests/integration/test_faults*.py``): settings, raw files, checks.

The TCP proxy between the client and S3 is :class:`devtools.proxy.TcpProxy` (the Celery tests' proxy too).

The child-process functions live here too: spawned processes import them by this module's name.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from rawvault.backup import upload_raw_file
from shared.db import interface
from shared.db.interface import connect_db, create_raw_file, get_raw_file
from shared.db.models import RawFile
from shared.settings import Settings, load_settings
from tests.s3_fixtures import (
    PART,
    REGION,
    CallCounter,
    after_upload_part,
    file_info_of,
    make_client,
    multipart_uploads,
    write_file,
)

CREATED_BASE = "thermo1/2026_11"


# --- helpers --------------------------------------------------------------------------------------------


def write_env(root: Path, **s3: Any) -> tuple[Path, Settings]:
    """A settings YAML (for this process and child processes) with S3 backups to a fresh bucket prefix."""
    raw = {
        "instruments": {"thermo1": {"type": "thermo", "path": str(root / "instruments" / "thermo1")}},
        "locations": {"backup": str(root / "backup")},
        "file_mover": {"delay_minutes": 0, "target_folder": "Backup"},
        "backup": {
            "backup_type": "s3",
            "s3": {
                "region": REGION,
                "bucket_prefix": f"rv{uuid.uuid4().hex[:10]}",
                "part_size_mb": 5,
                "auto_create_buckets": True,
                "max_concurrency": 2,
                "upload_retry_delay_minutes": 0,
                "upload_retries": 0,  # these tests retry by hand (a lease must be shorter than a retry delay)
                **s3,
            },
        },
    }
    root.mkdir(parents=True, exist_ok=True)
    path = root / "rawvault.faults.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    settings = load_settings(path)
    settings.instruments["thermo1"].path.mkdir(parents=True, exist_ok=True)
    return path, settings


def register(settings: Settings, name: str, size: int) -> list:
    """A raw file with its verified local backup copy, as copy_raw_file leaves it; returns [size, md5, etag]."""
    folder = settings.locations.backup / CREATED_BASE
    write_file(folder / name, size, seed=size)
    info = file_info_of(folder, [name])
    create_raw_file(
        name,
        instrument_id="thermo1",
        created_at=datetime(2026, 11, 22, 10, 0, tzinfo=UTC),
        file_info=info,
        etag_part_size=PART,
        backup_status="copying_done",
    )
    return info[name]


def bucket_of(settings: Settings) -> str:
    return f"{settings.backup.s3.bucket_prefix}-fallback"


def stored_parts(client: Any, bucket: str, key: str) -> int:
    (upload,) = [u for u in multipart_uploads(client, bucket) if u["Key"] == key]
    return len(client.list_parts(Bucket=bucket, Key=key, UploadId=upload["UploadId"]).get("Parts", []))


def assert_backed_up(settings: Settings, raw_file_id: str, client: Any, entry: list) -> RawFile:
    """upload_done with key and ETag, claim released, and S3 holds exactly the recorded object."""
    raw_file = get_raw_file(raw_file_id)
    assert raw_file.backup_status == "upload_done", raw_file.backup_status_details
    assert raw_file.s3_backup_key == f"s3://{bucket_of(settings)}/{raw_file.backup_base_path}/"
    assert raw_file.s3_etag == entry[2]
    assert raw_file.upload_claim_owner is None and raw_file.upload_claim_expires_at is None
    assert raw_file.s3_multipart_uploads == {}
    head = client.head_object(Bucket=bucket_of(settings), Key=f"{raw_file.backup_base_path}/{raw_file.id}")
    assert (head["ContentLength"], head["ETag"].strip('"')) == (entry[0], entry[2])
    client.head_object(
        Bucket=bucket_of(settings), Key=f"{raw_file.backup_base_path}/{raw_file.id}.rawvault-manifest.json"
    )
    assert [u for u in multipart_uploads(client, bucket_of(settings)) if raw_file.id in u["Key"]] == []
    return raw_file


# --- child processes (spawned: they import this module) --------------------------------------------------


def _connect_child(mongo_uri: str) -> None:
    os.environ[interface.ENV_VAR_MONGO_URI] = mongo_uri
    connect_db(mongo_uri)


def child_upload_until_killed(
    config: str, mongo_uri: str, endpoint: str, raw_file_id: str, after: int, marker: str
) -> None:
    """Upload; after ``after`` stored parts, say so in ``marker`` and hang until the parent SIGKILLs us."""
    _connect_child(mongo_uri)
    client = make_client(endpoint)
    stored = [0]
    lock = threading.Lock()

    def hang(**_kwargs: Any) -> None:
        with lock:
            stored[0] += 1
            if stored[0] == after:
                Path(marker).write_text(str(os.getpid()))
        if stored[0] >= after:
            time.sleep(3600)

    after_upload_part(client, hang)
    upload_raw_file(raw_file_id, load_settings(Path(config)), client=client, progress_interval=1)


def child_upload_racing(
    config: str, mongo_uri: str, endpoint: str, raw_file_id: str, barrier: Any, results: Any
) -> None:
    """One of two runs for the same raw file, released together; reports its outcome and S3 writes."""
    _connect_child(mongo_uri)
    settings = load_settings(Path(config))
    client = make_client(endpoint)
    counter = CallCounter(client)
    barrier.wait()
    try:
        result = upload_raw_file(raw_file_id, settings, client=client)
        outcome = ("already_complete" if result.already_complete else "uploaded", "")
    except Exception as error:
        outcome = (type(error).__name__, str(error))
    results.put((*outcome, counter.writes))


_worker: dict[str, Any] = {}


def burst_worker_init(config: str, mongo_uri: str, endpoint: str) -> None:
    """Each pool process: its own MongoDB connection, settings and S3 client."""
    _connect_child(mongo_uri)
    _worker["settings"] = load_settings(Path(config))
    _worker["client"] = make_client(endpoint, max_attempts=5)


def burst_local_backup(raw_file_id: str) -> str:
    """compute_checksum and copy_raw_file of one raw file."""
    from rawvault import pipeline

    pipeline.checksum_raw_file(raw_file_id, _worker["settings"])
    pipeline.copy_to_local_backup(raw_file_id, _worker["settings"])
    return raw_file_id


def burst_upload(raw_file_id: str) -> str:
    """upload_to_s3 of one raw file."""
    upload_raw_file(raw_file_id, _worker["settings"], client=_worker["client"], progress_interval=60)
    return raw_file_id


def burst_move(raw_file_id: str) -> str:
    """The file mover of one raw file (runs beside its upload, like start_file_mover)."""
    from rawvault import pipeline

    pipeline.move_on_share(raw_file_id, _worker["settings"])
    return raw_file_id


# --- the faults -----------------------------------------------------------------------------------------
