"""THE rule "unprotected": a raw file acquired before the deadline without a verified backup, as a query.

A raw file is *unprotected* when it was first seen (``created_at``) more than
``backup.deadline_hours`` ago and its backup status is not one that counts as a
verified backup (:func:`protected_statuses`: with S3 a verified S3 copy; local
only, a verified local copy), unless it was purged (deleted from the share
after its backup was checked again). The coverage command, the alerts'
deadline rule and the Backups page's count use this one rule.

The query is bounded by the ``backup_status`` index (``$in`` of the
unprotected statuses, ``None`` included: no backup started yet) and a range
on ``created_at``; :func:`is_unprotected` decides for a document already read.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from shared.db.interface import connect_db
from shared.db.models import BackupStatus, RawFile

PURGED_STATUS = "purged"  # RawFile.status of a raw file deleted from the share after a re-checked backup
ALL_BACKUP_STATUSES: tuple[str | None, ...] = (None, *(status.value for status in BackupStatus))
COVERAGE_FIELDS = (
    "id",
    "instrument_id",
    "project_id",
    "created_at",
    "status",
    "status_details",
    "backup_status",
    "backup_status_details",
    "redrive_count",
    "error_transient",
)


def protected_statuses(s3: bool) -> frozenset[str]:
    """Backup statuses that count as a verified backup: ``upload_done`` with S3, a verified local copy without."""
    if s3:
        return frozenset({BackupStatus.UPLOAD_DONE.value, BackupStatus.SKIPPED.value})
    return frozenset(BackupStatus.LOCAL_COPY_VERIFIED | {BackupStatus.SKIPPED.value})


def unprotected_statuses(s3: bool) -> list[str | None]:
    """Backup statuses without a verified backup (None: not started yet), for ``$in``."""
    protected = protected_statuses(s3)
    return [status for status in ALL_BACKUP_STATUSES if status not in protected]


def unprotected_query(*, s3: bool, overdue_before: datetime) -> dict[str, Any]:
    """The index-bounded filter of the unprotected raw files (purged ones too: :func:`is_unprotected` decides)."""
    return {"backup_status": {"$in": unprotected_statuses(s3)}, "created_at": {"$lte": overdue_before}}


def is_unprotected(raw_file: RawFile, *, s3: bool, overdue_before: datetime) -> bool:
    """Whether a raw file read from the database is unprotected."""
    created = raw_file.created_at
    if created is None or created > overdue_before or raw_file.status == PURGED_STATUS:
        return False
    return raw_file.backup_status not in protected_statuses(s3)


def unprotected_raw_files(*, s3: bool, overdue_before: datetime, instrument: str | None = None) -> list[RawFile]:
    """Every unprotected raw file (of one instrument, if given), oldest first, with the fields a report shows."""
    connect_db()
    query = unprotected_query(s3=s3, overdue_before=overdue_before)
    if instrument:
        query["instrument_id"] = instrument
    found: Iterable[RawFile] = RawFile.objects(__raw__=query).only(*COVERAGE_FIELDS)
    rows = [raw_file for raw_file in found if is_unprotected(raw_file, s3=s3, overdue_before=overdue_before)]
    return sorted(rows, key=lambda raw_file: (raw_file.created_at, raw_file.id))
