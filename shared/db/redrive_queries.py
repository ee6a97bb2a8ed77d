"""Reads of the ``raw_file`` collection for ``acquisition_redrive`` (projections only, bounded by indexes)."""

from __future__ import annotations

from mongoengine import Q

from shared.db.interface import connect_db
from shared.db.models import BackupStatus, RawFile, RawFileStatus

# A raw file the acquisition handler has not finished with: its monitor, checksum or local copy has not
# ended (the status index bounds these), or it failed (status error).
HANDLER_OPEN_STATUSES = (
    RawFileStatus.QUEUED.value,
    RawFileStatus.MONITORING_ACQUISITION.value,
    RawFileStatus.MONITORING_DONE.value,
    RawFileStatus.CHECKSUMMING.value,
    RawFileStatus.ERROR.value,
)
# Checksummed but without a verified local copy yet (the backup_status index bounds these; None: not started).
COPY_OPEN_BACKUP_STATUSES = (None, BackupStatus.COPYING_IN_PROGRESS.value, BackupStatus.COPYING_FAILED.value)
REDRIVE_FIELDS = (
    "id",
    "instrument_id",
    "status",
    "status_details",
    "backup_status",
    "created_at",
    "error_step",
    "error_at",
    "error_transient",
    "redrive_count",
    "redriven_at",
    "db_created_at",
    "db_updated_at",
)


def handler_unfinished() -> list[RawFile]:
    """Raw files whose acquisition handler has not finished (or failed), oldest first; the caller decides.

    Two index-bounded branches: ``status`` in :data:`HANDLER_OPEN_STATUSES`,
    or ``backup_status`` in :data:`COPY_OPEN_BACKUP_STATUSES` (a raw file
    checksummed whose copy never ended). Moved or purged ones have a verified
    copy and are never in the second.
    """
    connect_db()
    query = Q(status__in=list(HANDLER_OPEN_STATUSES)) | Q(backup_status__in=list(COPY_OPEN_BACKUP_STATUSES))
    found = list(RawFile.objects(query).only(*REDRIVE_FIELDS))
    return sorted(found, key=lambda raw_file: (raw_file.created_at, raw_file.id))  # few: no index sort needed


def redrive_counts(raw_file_ids: list[str]) -> dict[str, int]:
    """The re-drive count of each of these raw files that has been re-driven (the others: 0)."""
    if not raw_file_ids:
        return {}
    connect_db()
    redriven = RawFile.objects(id__in=raw_file_ids, redrive_count__gt=0).only("id", "redrive_count")
    return {raw_file.id: raw_file.redrive_count for raw_file in redriven}
