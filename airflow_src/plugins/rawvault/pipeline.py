"""The acquisition handler's steps as plain functions of a raw file id and the settings."""

from __future__ import annotations

import logging
from pathlib import Path

from rawvault.file_mover import move_raw_file
from rawvault.local_backup import discard_staged_set, publish_raw_file_set, stage_raw_file_set
from rawvault.locations import backup_folder, instrument_folder, raw_file_path
from rawvault.recorded_set import confirm_mtimes, mtimes_of
from rawvault.staging import new_staging_token
from shared.db.interface import get_raw_file, update_raw_file
from shared.db.models import BackupStatus, RawFile, RawFileStatus
from shared.instrument_types import INSTRUMENT_TYPES
from shared.s3_limits import MIB
from shared.settings import Settings

log = logging.getLogger(__name__)


class FileInfoMismatchError(RuntimeError):
    """The files on the share differ from the ones checksummed before."""


def checksum_raw_file(raw_file_id: str, settings: Settings) -> dict[str, list]:
    """Read every file of the set once: record ``file_info``, stage the local copy from the same buffers.

    Each file's size, MD5 and ETag are computed while its staged copy is
    written into the local backup (:func:`rawvault.local_backup.stage_raw_file_set`);
    the run's staging token is recorded with ``file_info``, so ``copy_raw_file``
    publishes exactly these staged copies after verifying them. A retry that
    finds the same ``file_info`` recorded stages again; a different one means
    the files changed, which fails (and discards the new staged copies)
    instead of overwriting.
    """
    raw_file = get_raw_file(raw_file_id)
    _refuse_checksum(raw_file, settings)
    instrument_type = INSTRUMENT_TYPES[settings.instruments[raw_file.instrument_id].type]
    source_root = instrument_folder(raw_file, settings)
    target = backup_folder(raw_file, settings)
    token = new_staging_token()
    update_raw_file(raw_file_id, status=RawFileStatus.CHECKSUMMING.value)
    relative_paths: list[str] = []
    try:
        members = instrument_type.files_in_set(raw_file_path(raw_file, settings))
        relative_paths = [member.relative_to(source_root).as_posix() for member in members]
        mtimes_before = mtimes_of(source_root, relative_paths)
        staged = stage_raw_file_set(
            source_root, relative_paths, target, settings.part_size_bytes, token, backup_root=settings.locations.backup
        )
        # The times the content had while it was read: the file mover compares them (rawvault.recorded_set).
        source_mtimes = confirm_mtimes(source_root, mtimes_before)
        main_file = instrument_type.main_file(raw_file_path(raw_file, settings))
        main_mtime_ns = main_file.stat().st_mtime_ns if main_file.exists() else None
    except Exception as error:
        # None of this run's staged copies is ever used.
        discard_staged_set(target, relative_paths, token, backup_root=settings.locations.backup)
        update_raw_file(raw_file_id, status=RawFileStatus.ERROR.value, status_details=f"compute_checksum: {error}")
        raise
    file_info = staged.file_info
    if raw_file.file_info and raw_file.file_info != file_info:
        discard_staged_set(target, file_info, token, backup_root=settings.locations.backup)
        _fail_changed(raw_file, file_info)
    update_raw_file(
        raw_file_id,
        file_info=file_info,
        source_mtimes=source_mtimes,
        etag_part_size=settings.part_size_bytes,
        staging_token=token,
        source_mtime_ns=raw_file.source_mtime_ns or main_mtime_ns,
        size=sum(size for size, _md5, _etag in file_info.values()),
        status=RawFileStatus.CHECKSUMMING_DONE.value,
        status_details=None,
    )
    log.info(
        "%s: %d files read once from the share (%d bytes), %d staged in %s, %d already there",
        raw_file_id,
        len(file_info),
        staged.bytes_read,
        len(staged.staged),
        target,
        len(staged.hashed_only),
    )
    return file_info


def _refuse_checksum(raw_file: RawFile, settings: Settings) -> None:
    """Refuse a raw file moved off the share, or one recorded with another part size (before reading)."""
    if raw_file.status in (RawFileStatus.MOVED.value, RawFileStatus.PURGED.value):
        raise FileInfoMismatchError(
            f"raw file {raw_file.id!r} was moved off the instrument share already; its recorded file_info stands "
            "(nothing to checksum again)"
        )
    if raw_file.file_info and raw_file.etag_part_size and raw_file.etag_part_size != settings.part_size_bytes:
        _fail_checksum(
            raw_file.id,
            f"raw file {raw_file.id!r} was checksummed with {raw_file.etag_part_size} byte parts but the settings now "
            f"say {settings.part_size_bytes}: set backup.s3.part_size_mb back to "
            f"{raw_file.etag_part_size // MIB} while this raw file is backed up",
        )


def _fail_changed(raw_file: RawFile, file_info: dict[str, list]) -> None:
    differing = _differences(raw_file.file_info, file_info)
    _fail_checksum(
        raw_file.id,
        f"the files of raw file {raw_file.id!r} differ from the ones checksummed before ({', '.join(differing[:5])}"
        f"{' ...' if len(differing) > 5 else ''}); the recorded file_info was not overwritten. If the "
        "acquisition was rewritten on purpose, register it as a new raw file",
    )


def _fail_checksum(raw_file_id: str, message: str) -> None:
    update_raw_file(raw_file_id, status=RawFileStatus.ERROR.value, status_details=f"compute_checksum: {message}")
    raise FileInfoMismatchError(message)


def _differences(old: dict[str, list], new: dict[str, list]) -> list[str]:
    changed = [path for path in sorted(set(old) | set(new)) if old.get(path) != new.get(path)]
    return [f"{path}: {_describe(old.get(path))} -> {_describe(new.get(path))}" for path in changed]


def _describe(entry: list | None) -> str:
    return "absent" if entry is None else f"{entry[0]} bytes"


def copy_to_local_backup(raw_file_id: str, settings: Settings) -> Path:
    """Verify the staged copies and publish them in the local backup; record ``backup_status``; return the folder."""
    raw_file = get_raw_file(raw_file_id)
    if not raw_file.file_info:
        raise FileInfoMismatchError(f"raw file {raw_file_id!r} has no file_info: run compute_checksum first")
    target = backup_folder(raw_file, settings)
    # Copy statuses never replace an upload status: a concurrent or earlier upload run owns those.
    not_uploading = {"backup_status__nin": sorted(BackupStatus.PAST_LOCAL_COPY)}
    update_raw_file(
        raw_file_id,
        expected=not_uploading,
        backup_status=BackupStatus.COPYING_IN_PROGRESS.value,
        backup_status_details=None,
    )
    try:
        result = publish_raw_file_set(
            instrument_folder(raw_file, settings),
            raw_file.file_info,
            target,
            raw_file.staging_token,
            backup_root=settings.locations.backup,
        )
    except Exception as error:
        update_raw_file(
            raw_file_id,
            expected=not_uploading,
            backup_status=BackupStatus.COPYING_FAILED.value,
            backup_status_details=str(error),
        )
        raise
    update_raw_file(raw_file_id, expected=not_uploading, backup_status=BackupStatus.COPYING_DONE.value)
    log.info(
        "%s: %d files published (%d bytes; %d of them copied from the share again), %d already in the backup, in %s",
        raw_file_id,
        len(result.copied),
        result.bytes_copied,
        len(result.from_share),
        len(result.skipped),
        target,
    )
    return target


def move_on_share(raw_file_id: str, settings: Settings) -> None:
    """Move the acquisition aside on the instrument share; record ``status=moved``."""
    raw_file = get_raw_file(raw_file_id)
    if raw_file.status in (RawFileStatus.MOVED.value, RawFileStatus.PURGED.value):
        log.info("%s was %s already", raw_file_id, raw_file.status)
        return
    update_raw_file(raw_file_id, status=RawFileStatus.MOVING.value)
    try:
        move_raw_file(raw_file, settings)
    except Exception as error:
        update_raw_file(raw_file_id, status=RawFileStatus.ERROR.value, status_details=f"file mover: {error}")
        raise
    update_raw_file(raw_file_id, status=RawFileStatus.MOVED.value, status_details=None)
