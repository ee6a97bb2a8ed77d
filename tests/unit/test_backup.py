"""The "back up to S3" use case on mongomock and moto's in-process S3: one target per run, the part size rule."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rawvault import backup
from rawvault.backup import UploadTarget, XcomFileInfo, upload_raw_file, upload_target
from rawvault.s3.errors import PartSizeMismatchError
from shared.db.interface import create_raw_file, get_raw_file
from shared.s3_limits import MIB
from shared.settings import Settings
from tests.s3_fixtures import make_settings

pytest_plugins = ["tests.unit.fakes"]

PART = 5 * MIB
CREATED = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, "rvunit", auto_create_buckets=True, max_concurrency=2)


def register(settings: Settings, **fields: Any) -> str:
    data = b"acquisition" * 100
    folder = settings.locations.backup / "thermo1/2026_11"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a.raw").write_bytes(data)
    md5 = hashlib.md5(data).hexdigest()
    fields.setdefault("backup_status", "copying_done")
    create_raw_file(
        "a.raw", instrument_id="thermo1", created_at=CREATED, file_info={"a.raw": [len(data), md5, md5]},
        etag_part_size=PART, **fields,
    )  # fmt: skip
    return "a.raw"


def test_upload_target_of_a_raw_file(fake_db: None, settings: Settings) -> None:
    raw_file = get_raw_file(register(settings, project_id=None))
    target = upload_target(raw_file, settings, XcomFileInfo())
    assert target == UploadTarget(
        bucket="rvunit-fallback",
        key_prefix="thermo1/2026_11/",
        part_size=PART,
        source_folder=settings.locations.backup / "thermo1/2026_11",
        metadata={"raw-file-id": "a.raw", "instrument-id": "thermo1", "project-id": "_FALLBACK"},
    )


def test_the_recorded_part_size_is_the_truth(fake_db: None, settings: Settings) -> None:
    raw_file = get_raw_file(register(settings))
    assert upload_target(raw_file, settings, XcomFileInfo(part_size=PART)).part_size == PART
    with pytest.raises(PartSizeMismatchError, match="checksummed with 5242880 byte parts"):
        upload_target(raw_file, settings, XcomFileInfo(part_size=8 * MIB))


def test_the_target_is_worked_out_once_per_run(
    fake_db: None, fake_s3: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # upload_done, but S3 holds nothing: the run confirms it first, then uploads again, with one target.
    raw_file_id = register(settings, backup_status="upload_done", s3_backup_key="s3://x/y/", s3_etag="e")
    calls: list[str] = []
    real = backup.upload_target

    def counting(*args: Any, **kwargs: Any) -> UploadTarget:
        calls.append("target")
        return real(*args, **kwargs)

    monkeypatch.setattr(backup, "upload_target", counting)
    result = upload_raw_file(raw_file_id, settings, client=fake_s3)
    assert calls == ["target"]
    done = get_raw_file(raw_file_id)
    assert done.backup_status == "upload_done" and done.s3_backup_key == "s3://rvunit-fallback/thermo1/2026_11/"
    assert done.s3_etag == result.s3_etag and done.upload_claim_owner is None


def test_a_problem_with_the_target_is_recorded_as_a_failed_upload(
    fake_db: None, fake_s3: Any, settings: Settings
) -> None:
    raw_file_id = register(settings)
    with pytest.raises(PartSizeMismatchError):
        upload_raw_file(raw_file_id, settings, xcom=XcomFileInfo(part_size=8 * MIB), client=fake_s3)
    failed = get_raw_file(raw_file_id)
    assert failed.backup_status == "upload_failed" and "checksummed with 5242880 byte parts" in (
        failed.backup_status_details
    )
    assert failed.upload_claim_owner is None and failed.s3_upload_attempts == 1


def test_the_xcom_file_info_is_read_from_what_compute_checksum_and_copy_raw_file_pushed(tmp_path: Path) -> None:
    checksum = {"file_info": {"a.raw": [1, "m", "e"]}, "part_size": PART}
    assert XcomFileInfo.from_pushed(checksum, {"backup_folder": str(tmp_path)}) == XcomFileInfo(
        checksum["file_info"], PART, tmp_path
    )
    assert XcomFileInfo.from_pushed({}, {}) == XcomFileInfo()
