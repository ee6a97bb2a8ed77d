"""Every check before the purge deletes one set, each re-read from the data itself, and the evidence it leaves.

The ``RawFile`` says what should be true; the share, the local backup and S3
must show it now. In this order (cheap looks first, so a set that fails one
is kept before gigabytes are read):

1. ``record``: the raw file is ``moved``, has ``file_info``, and its backup
   status is ``upload_done`` (S3 required) or a verified local copy (local);
2. ``share``: the folders from the instrument folder down to the set are real
   folders (no symlink), and the set is exactly the recorded files with their
   sizes (:mod:`rawvault.recorded_set`);
3. ``local`` (when required): every recorded file is in the local backup, a
   regular file with the recorded size;
4. ``s3`` (when required): :mod:`rawvault.purge_s3` (manifest, HEAD of every object);
5. ``local``: a fresh MD5 of every backup copy equals the recorded one, and
   no copy is the share's own file (a hard link or a folder symlink is no copy);
6. ``share``: a fresh MD5 of every file on the share equals the recorded one.

A failed check raises :class:`~rawvault.purge_errors.PurgeBlockedError`. A purge
that a crash interrupted is checked with ``resume``: recorded files gone from
the share are the ones it deleted; what is left must still pass every check.
No database, no Airflow.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rawvault.checksum import FileChangedError
from rawvault.locations import backup_folder, instrument_folder, move_target_folder
from rawvault.purge_errors import Check, PurgeBlockedError
from rawvault.purge_fs import Identity
from rawvault.purge_s3 import check_s3_copy
from rawvault.recorded_set import FileFacts, Verify, check_recorded_set, hash_no_follow, record_of, safe_relative
from rawvault.s3.client import S3Client
from shared.db.models import BackupStatus, RawFile, RawFileStatus
from shared.instrument_types import INSTRUMENT_TYPES, shown
from shared.settings import PurgePolicy, Settings


@dataclass(frozen=True)
class S3Target:
    """Where rawvault backs a raw file up in S3, and a way to get a client (made only when needed)."""

    bucket: str
    key_prefix: str
    client: Callable[[], S3Client]


@dataclass
class CheckedSet:
    """A set whose every check passed: where it is, its files as checked, and the evidence."""

    raw_file_id: str
    within: tuple[str, ...]  # folders from the instrument folder to the set's folder: Backup/<YYYY_MM>[/<id>]
    top_names: list[str]  # the set's entries in that folder
    files: dict[str, FileFacts] = field(default_factory=dict)  # on the share now, MD5 checked
    missing: list[str] = field(default_factory=list)  # deleted by the purge that a crash interrupted
    folder_exists: bool = True
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def identities(self) -> dict[str, Identity]:
        return {path: facts.identity for path, facts in self.files.items()}

    @property
    def allocated_bytes(self) -> int:
        """What deleting the files frees on the share."""
        return sum(facts.allocated for facts in self.files.values())


def _check_record(raw_file: RawFile, policy: PurgePolicy) -> None:
    if raw_file.status != RawFileStatus.MOVED.value:
        raise PurgeBlockedError(Check.RECORD, f"status is {raw_file.status!r}, not 'moved'")
    if not raw_file.file_info:
        raise PurgeBlockedError(Check.RECORD, "no file_info is recorded: nothing proves what the set holds")
    if policy.requires_s3 and raw_file.backup_status != BackupStatus.UPLOAD_DONE.value:
        raise PurgeBlockedError(
            Check.RECORD, f"backup_status is {raw_file.backup_status!r}: the S3 copy is not verified (upload_done)"
        )
    if policy.requires_s3 and not (raw_file.s3_backup_key and raw_file.s3_etag):
        raise PurgeBlockedError(Check.RECORD, "no s3_backup_key and s3_etag recorded: the S3 copy is unrecorded")
    if policy.requires_local and raw_file.backup_status not in BackupStatus.LOCAL_COPY_VERIFIED:
        raise PurgeBlockedError(Check.RECORD, f"backup_status is {raw_file.backup_status!r}: no verified local copy")


def _within(raw_file: RawFile, settings: Settings) -> tuple[tuple[str, ...], bool]:
    """The folders below the instrument folder to the set's folder, each checked to be a real folder."""
    root = instrument_folder(raw_file, settings)
    within = move_target_folder(raw_file, settings).relative_to(root).parts
    path = root
    for name in within:
        path = path / name
        try:
            info = path.lstat()
        except FileNotFoundError:
            return within, False
        if not stat.S_ISDIR(info.st_mode):
            what = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a folder"
            raise PurgeBlockedError(Check.SHARE, f"{shown(path)} is {what}: the purge never deletes through one")
    return within, True


def _local_copies(raw_file: RawFile, settings: Settings) -> dict[str, os.stat_result]:
    """Every recorded file in the local backup: a regular file (not a symlink) with the recorded size."""
    root = backup_folder(raw_file, settings)
    found = {}
    for relative, entry in sorted(raw_file.file_info.items()):
        path = root / safe_relative(relative)
        try:
            info = path.lstat()
        except FileNotFoundError:
            raise PurgeBlockedError(Check.LOCAL, f"the local backup copy {shown(path)} is missing") from None
        except OSError as error:
            reason = f"the local backup copy {shown(path)} cannot be read: {error}"
            raise PurgeBlockedError(Check.LOCAL, reason) from None
        if not stat.S_ISREG(info.st_mode):
            what = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a regular file"
            raise PurgeBlockedError(Check.LOCAL, f"the local backup copy {shown(path)} is {what}, so it is no copy")
        if info.st_size != int(entry[0]):
            raise PurgeBlockedError(
                Check.LOCAL, f"the local backup copy {shown(path)} is {info.st_size} bytes, {entry[0]} recorded"
            )
        found[relative] = info
    return found


def _hash_local_copies(raw_file: RawFile, settings: Settings, listed: dict[str, os.stat_result]) -> dict[str, Any]:
    root = backup_folder(raw_file, settings)
    files = []
    for relative, info in sorted(listed.items()):
        path = root / relative
        try:
            md5, _after = hash_no_follow(path, info)
        except (FileChangedError, OSError) as error:
            reason = f"the local backup copy {shown(path)} cannot be verified: {error}"
            raise PurgeBlockedError(Check.LOCAL, reason) from None
        recorded = raw_file.file_info[relative][1]
        if md5 != recorded:
            raise PurgeBlockedError(
                Check.LOCAL, f"the local backup copy {shown(path)} is corrupted: MD5 {md5}, {recorded} recorded"
            )
        files.append({"path": relative, "size": info.st_size, "md5": md5})
    return {"folder": str(root), "files": files}


def _not_the_same_files(raw_file: RawFile, settings: Settings, share: CheckedSet, local: dict[str, Any]) -> None:
    for relative, info in local.items():
        facts = share.files.get(relative)
        if facts is not None and facts.identity[:2] == (info.st_dev, info.st_ino):
            raise PurgeBlockedError(
                Check.LOCAL,
                f"the local backup copy {shown(backup_folder(raw_file, settings) / relative)} is the very file on the "
                "share (a hard link, or a folder symlink between them): it is no second copy",
            )


def _share(raw_file: RawFile, settings: Settings, verify: Verify, resume: bool) -> CheckedSet:
    within, exists = _within(raw_file, settings)
    instrument_type = INSTRUMENT_TYPES[settings.instruments[raw_file.instrument_id].type]
    main_file = instrument_type.main_file(Path(raw_file.original_name)).as_posix()
    record = record_of(raw_file, main_file)
    tops = sorted({relative.split("/", 1)[0] for relative in record.file_info})
    found = CheckedSet(raw_file.id, within, tops, folder_exists=exists)
    if not exists:
        if not resume:
            raise PurgeBlockedError(Check.SHARE, f"{shown(move_target_folder(raw_file, settings))} is missing")
        found.missing = sorted(record.file_info)
        return found
    folder = move_target_folder(raw_file, settings)
    check = check_recorded_set(
        folder, record, verify=verify, instrument_type=instrument_type, raw_file_name=raw_file.original_name,
        missing_ok=resume,
    )  # fmt: skip
    if not check.ok:
        raise PurgeBlockedError(Check.SHARE, check.summary())
    found.files, found.missing = check.files, check.missing
    return found


def check_set(
    raw_file: RawFile, settings: Settings, policy: PurgePolicy, *, s3: S3Target | None, resume: bool, now: datetime
) -> CheckedSet:
    """Run every check on one set (module doc); the set and its evidence, or :class:`PurgeBlockedError`."""
    _check_record(raw_file, policy)
    _share(raw_file, settings, Verify.SIZE, resume)
    listed = _local_copies(raw_file, settings) if policy.requires_local else {}
    s3_evidence = None
    if policy.requires_s3:
        if s3 is None:
            raise PurgeBlockedError(Check.S3, "S3 is required (purge.require) but backup.backup_type is not 's3'")
        s3_evidence = check_s3_copy(s3.client(), raw_file, s3.bucket, s3.key_prefix)
    local_evidence = _hash_local_copies(raw_file, settings, listed) if policy.requires_local else None
    checked = _share(raw_file, settings, Verify.REHASH, resume)
    _not_the_same_files(raw_file, settings, checked, listed)
    checked.evidence = {
        "checked_at": now,
        "require": sorted(policy.require),
        "resumed": resume,
        "share": {
            "folder": str(move_target_folder(raw_file, settings)),
            "files": [
                {"path": path, "size": facts.size, "md5": facts.md5, "mtime_ns": facts.mtime_ns}
                for path, facts in sorted(checked.files.items())
            ],
            "already_deleted": checked.missing,
        },
        "local": local_evidence,
        "s3": s3_evidence,
    }
    return checked
