"""The ``upload_to_s3`` step: upload one raw file's local backup copy and record the outcome on its ``RawFile``.

- Bucket: ``<bucket_prefix>-<normalised project id>`` (the fallback project
  when the raw file has none); a project id that shares its bucket with
  another project fails.
- Key prefix: ``<backup_base_path>/``, mirroring the local backup
  (``<instrument_id>/<YYYY_MM>/``, plus ``<raw_file_id>/`` for a renamed raw
  file); see :mod:`rawvault.s3.keys`.
- Status: ``upload_in_progress`` while running (claimed with a
  compare-and-set from ``copying_done``, ``upload_failed``,
  ``upload_in_progress`` or ``upload_done``); ``upload_done`` with
  ``s3_backup_key = s3://<bucket>/<key_prefix>`` and ``s3_etag`` only when
  every file is uploaded and verified and the manifest is written; otherwise
  ``upload_failed`` with the reason in ``backup_status_details``, and the
  error is raised again so the task fails visibly.
- ``s3_etag``: for a raw file of one file (Thermo ``.raw``) the ETag S3
  reports for that object; for a set of several files (Bruker ``.d``, Sciex)
  the ETag S3 reports for the set's manifest object
  (``<key_prefix><raw_file_id>.rawvault-manifest.json``), which lists every
  file's key, size, MD5 and ETag.
- A retry is idempotent: verified objects are skipped, a complete set
  (manifest present and matching) uploads nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rawvault.s3.buckets import bucket_name, check_no_bucket_collisions, ensure_bucket
from rawvault.s3.errors import BucketNameError, FileInfoError, PartSizeMismatchError, S3BackupError, S3PermanentError
from rawvault.s3.keys import key_prefix_for
from rawvault.s3.progress import DEFAULT_INTERVAL_SECONDS
from rawvault.s3.upload import ObjectSettings, UploadResult, upload_file_set
from shared.db.interface import get_projects, get_raw_file, update_raw_file
from shared.db.models import BackupStatus, RawFile
from shared.settings import Settings

log = logging.getLogger(__name__)

CLAIMABLE_STATUSES = (
    BackupStatus.COPYING_DONE.value,
    BackupStatus.UPLOAD_FAILED.value,
    BackupStatus.UPLOAD_IN_PROGRESS.value,
    BackupStatus.UPLOAD_DONE.value,
)
MAX_DETAILS_CHARS = 2000


class UploadNotReadyError(S3PermanentError):
    """The raw file cannot be uploaded yet (no verified local copy) or another run claimed it."""


def project_bucket(settings: Settings, project_id: str | None, known_project_ids: list[str]) -> str:
    """The bucket of ``project_id`` (or the fallback project), refusing names shared with another project."""
    s3 = settings.backup.s3
    assert s3 is not None
    project_id = project_id or settings.watcher.fallback_project_id
    name = bucket_name(s3.bucket_prefix, project_id)
    sharing = [project_id]
    for other in {*known_project_ids, settings.watcher.fallback_project_id} - {project_id}:
        try:
            if bucket_name(s3.bucket_prefix, other) == name:
                sharing.append(other)
        except BucketNameError:
            continue  # that project has problems of its own, reported when its raw files upload
    check_no_bucket_collisions(s3.bucket_prefix, sharing)
    return name


def _backup_base_path(raw_file: RawFile) -> str:
    if raw_file.backup_base_path:
        return raw_file.backup_base_path
    from rawvault.local_backup import backup_base_path  # the same rule the copy step used

    return backup_base_path(raw_file.instrument_id, raw_file.created_at, raw_file.id, raw_file.original_name)


def _normalised(file_info: dict[str, Any]) -> dict[str, list]:
    return {path: list(entry) if isinstance(entry, list | tuple) else entry for path, entry in file_info.items()}


def _resolve_file_info(raw_file: RawFile, file_info: dict[str, Any] | None) -> dict[str, list]:
    recorded = _normalised(dict(raw_file.file_info or {}))
    if file_info is None:
        if not recorded:
            raise FileInfoError(f"raw file {raw_file.id!r} has no file_info: run compute_checksum first")
        return recorded
    given = _normalised(file_info)
    if recorded and given != recorded:
        raise FileInfoError(
            f"the file info passed to upload_to_s3 (XCom of compute_checksum) differs from the file_info recorded "
            f"for raw file {raw_file.id!r}: re-run compute_checksum and copy_raw_file for this raw file"
        )
    return given


def _resolve_part_size(raw_file: RawFile, settings: Settings, part_size: int | None) -> int:
    recorded = getattr(raw_file, "etag_part_size", None)
    chosen = part_size or recorded or settings.part_size_bytes
    if recorded and chosen != recorded:
        raise PartSizeMismatchError(
            f"raw file {raw_file.id!r} was checksummed with {recorded} byte parts, but the upload was asked to use "
            f"{chosen}: upload with the part size of compute_checksum"
        )
    return chosen


def _reason(error: BaseException) -> str:
    text = str(error) if isinstance(error, S3BackupError) else f"{type(error).__name__}: {error}"
    text = f"upload to S3 failed: {text}"
    return text if len(text) <= MAX_DETAILS_CHARS else text[: MAX_DETAILS_CHARS - 3] + "..."


def _claim(raw_file: RawFile) -> None:
    status = raw_file.backup_status
    if status not in CLAIMABLE_STATUSES:
        raise UploadNotReadyError(
            f"raw file {raw_file.id!r} has backup_status {status!r}: the upload needs a verified local copy "
            f"(backup_status one of {', '.join(CLAIMABLE_STATUSES)}); run copy_raw_file first"
        )
    attempt = (raw_file.s3_upload_attempts or 0) + 1
    claimed = update_raw_file(
        raw_file.id,
        expected={"backup_status": status},
        backup_status=BackupStatus.UPLOAD_IN_PROGRESS.value,
        backup_status_details=f"uploading to S3 (attempt {attempt})",
        s3_upload_attempts=attempt,
    )
    if not claimed:
        raise UploadNotReadyError(
            f"the backup_status of raw file {raw_file.id!r} changed while the upload was starting (another run?); "
            "retry the task once that run has finished"
        )


def upload_raw_file_to_s3(
    raw_file_id: str,
    file_info: dict[str, Any] | None,
    backup_folder: Path | None,
    settings: Settings,
    client: Any = None,
    *,
    part_size: int | None = None,
    progress_interval: float = DEFAULT_INTERVAL_SECONDS,
) -> UploadResult:
    """Upload raw file ``raw_file_id`` from its local backup folder to S3 and record the outcome.

    ``file_info`` and ``part_size`` come from compute_checksum's XCom (``None``:
    the recorded ones); ``backup_folder`` from copy_raw_file's (``None``:
    ``<locations.backup>/<backup_base_path>``). ``client`` defaults to one
    from the Airflow connection ``backup.s3.aws_conn_id``. Raises the
    :class:`~rawvault.s3.errors.S3BackupError` (or other error) after
    recording ``upload_failed``.
    """
    s3 = settings.backup.s3
    if not settings.s3_enabled or s3 is None:
        raise S3PermanentError("backup.backup_type is not 's3': there is nothing to upload to S3")
    raw_file = get_raw_file(raw_file_id)
    _claim(raw_file)
    try:
        files = _resolve_file_info(raw_file, file_info)
        chosen_part_size = _resolve_part_size(raw_file, settings, part_size)
        base_path = _backup_base_path(raw_file)
        key_prefix = key_prefix_for(base_path)
        bucket = project_bucket(settings, raw_file.project_id, [project.id for project in get_projects()])
        source_folder = backup_folder or settings.locations.backup / base_path
        if client is None:
            from rawvault.s3.client import s3_client_from_connection

            client = s3_client_from_connection(s3.aws_conn_id, s3.region, s3.max_concurrency + 4)
        ensure_bucket(
            client,
            bucket,
            s3.region,
            s3.auto_create_buckets,
            server_side_encryption=s3.server_side_encryption,
            kms_key_id=s3.kms_key_id,
        )
        result = upload_file_set(
            client,
            bucket=bucket,
            key_prefix=key_prefix,
            source_folder=Path(source_folder),
            file_info=files,
            part_size=chosen_part_size,
            raw_file_id=raw_file.id,
            object_settings=ObjectSettings.from_settings(s3),
            metadata={
                "raw-file-id": raw_file.id,
                "instrument-id": raw_file.instrument_id,
                "project-id": raw_file.project_id or settings.watcher.fallback_project_id,
            },
            progress_interval=progress_interval,
        )
        update_raw_file(
            raw_file_id,
            backup_status=BackupStatus.UPLOAD_DONE.value,
            backup_status_details=(
                f"in {result.s3_backup_key}: {len(result.uploaded)} file(s) uploaded, {len(result.skipped)} "
                f"already there, all verified; manifest {result.manifest_key}"
            ),
            s3_backup_key=result.s3_backup_key,
            s3_etag=result.s3_etag,
        )
    except BaseException as error:
        reason = _reason(error)
        log.error("%s: %s", raw_file_id, reason)
        try:
            update_raw_file(raw_file_id, backup_status=BackupStatus.UPLOAD_FAILED.value, backup_status_details=reason)
        except Exception as db_error:
            log.error("%s: could not record upload_failed: %s", raw_file_id, db_error)
        raise
    log.info("%s: upload_done, s3_backup_key %s, s3_etag %s", raw_file_id, result.s3_backup_key, result.s3_etag)
    return result
