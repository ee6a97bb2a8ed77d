"""THE rules "failed", "stuck", "unprotected" and the Backups page's groups, for queries and for rows read.

Each rule exists twice, side by side, and nowhere else: as the part of a
MongoDB filter an index can bound (equalities, ``$in``, ranges on indexed
fields) and as a Python test of a document already read (raw ``dict`` from
``as_pymongo`` or a ``RawFile``). Queries carry only the bounding part; the
Python test decides (a ``$ne``/``$not`` never bounds an index, and the
MongoDB wire server of the tests plans a filter with several operators as a
full scan). The alert rules (``rawvault.alerts.raw_files``), the Backups page
and the digest use these.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from shared.db.models import BackupStatus, RawFileStatus

PIPELINE_ERROR_STATUS = RawFileStatus.ERROR.value  # a pipeline step failed (monitor, checksum, move)
PURGED_STATUS = "purged"  # deleted from the share after a re-checked backup: protected whatever its backup status
# Every backup status a document can have; None: no backup started yet (the field is unset).
ALL_BACKUP_STATUSES: tuple[str | None, ...] = (None, *(status.value for status in BackupStatus))

FAILED_GROUP, STUCK_GROUP, REST_GROUP = 0, 1, 2
GROUPS = (FAILED_GROUP, STUCK_GROUP, REST_GROUP)


def _get(row: Any, name: str) -> Any:
    if isinstance(row, Mapping):
        return row.get("_id" if name == "id" else name)
    return getattr(row, name, None)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def protected_statuses(s3: bool) -> frozenset[str]:
    """Backup statuses that count as a verified backup: a verified S3 copy with S3, a verified local copy without."""
    return BackupStatus.PROTECTED_S3 if s3 else BackupStatus.PROTECTED_LOCAL


def unprotected_statuses(s3: bool) -> list[str | None]:
    """Backup statuses without a verified backup (None: not started), for ``$in``."""
    protected = protected_statuses(s3)
    return [status for status in ALL_BACKUP_STATUSES if status not in protected]


def terminal_status(s3: bool) -> str:
    """The backup status nearly every raw file ends in: counted by subtraction, never one by one."""
    return BackupStatus.UPLOAD_DONE.value if s3 else BackupStatus.COPYING_DONE.value


# --- failed -------------------------------------------------------------------------------------------


def is_failed(row: Any) -> bool:
    """The local copy or the upload failed, or a pipeline step did (status error)."""
    return _get(row, "backup_status") in BackupStatus.FAILED or _get(row, "status") == PIPELINE_ERROR_STATUS


def failed_queries() -> list[dict[str, Any]]:
    """The failed raw files as disjoint bounded filters: a failed backup; status error with any other backup status."""
    others = [status for status in ALL_BACKUP_STATUSES if status not in BackupStatus.FAILED]
    return [
        {"backup_status": {"$in": sorted(BackupStatus.FAILED)}},
        {"status": PIPELINE_ERROR_STATUS, "backup_status": {"$in": others}},
    ]


# --- stuck --------------------------------------------------------------------------------------------


def is_stuck(row: Any, cutoff: datetime) -> bool:
    """A copy or upload in progress without an update since ``cutoff`` (a failed one is failed, not stuck)."""
    if _get(row, "backup_status") not in BackupStatus.IN_PROGRESS or _get(row, "status") == PIPELINE_ERROR_STATUS:
        return False
    updated = _utc(_get(row, "db_updated_at"))
    return updated is None or updated < cutoff


def in_progress_query() -> dict[str, Any]:
    """Bounds the stuck raw files (and every other copy or upload in progress): decide with :func:`is_stuck`."""
    return {"backup_status": {"$in": sorted(BackupStatus.IN_PROGRESS)}}


def stuck_expression(cutoff: datetime) -> dict[str, Any]:
    """:func:`is_stuck` as an aggregation expression (1 or 0 per document), for counting the in-progress group."""
    backup_status = {"$ifNull": ["$backup_status", None]}
    return {
        "$cond": [
            {
                "$and": [
                    {"$in": [backup_status, sorted(BackupStatus.IN_PROGRESS)]},
                    {"$ne": ["$status", PIPELINE_ERROR_STATUS]},
                    {"$not": [{"$gte": ["$db_updated_at", cutoff]}]},  # a missing update time is stuck too
                ]
            },
            1,
            0,
        ]
    }


# --- unprotected (backup.deadline_hours) ---------------------------------------------------------------


def is_unprotected(row: Any, *, s3: bool, overdue_before: datetime) -> bool:
    """Created before ``overdue_before`` without a verified backup, and not purged (its backup was checked)."""
    created = _utc(_get(row, "created_at"))
    if created is None or created > overdue_before or _get(row, "status") == PURGED_STATUS:
        return False
    return _get(row, "backup_status") not in protected_statuses(s3)


def unprotected_query(*, s3: bool, overdue_before: datetime) -> dict[str, Any]:
    """Bounds the unprotected raw files (every one is in it; purged ones too): decide with :func:`is_unprotected`."""
    return {"backup_status": {"$in": unprotected_statuses(s3)}, "created_at": {"$lte": overdue_before}}


def unprotected_expression(*, s3: bool, overdue_before: datetime) -> dict[str, Any]:
    """:func:`is_unprotected` as an aggregation expression (1 or 0 per document)."""
    backup_status = {"$ifNull": ["$backup_status", None]}
    return {
        "$cond": [
            {
                "$and": [
                    {"$in": [backup_status, unprotected_statuses(s3)]},
                    {"$lte": ["$created_at", overdue_before]},
                    {"$ne": ["$status", PURGED_STATUS]},
                ]
            },
            1,
            0,
        ]
    }


# --- the Backups page's groups -------------------------------------------------------------------------


def group_of(row: Any, cutoff: datetime) -> int:
    """The Backups page's group of a raw file: failed, stuck (in progress, no update since ``cutoff``), the rest."""
    if is_failed(row):
        return FAILED_GROUP
    if is_stuck(row, cutoff):
        return STUCK_GROUP
    return REST_GROUP


__all__ = [
    "ALL_BACKUP_STATUSES",
    "FAILED_GROUP",
    "GROUPS",
    "PIPELINE_ERROR_STATUS",
    "PURGED_STATUS",
    "REST_GROUP",
    "STUCK_GROUP",
    "failed_queries",
    "group_of",
    "in_progress_query",
    "is_failed",
    "is_stuck",
    "is_unprotected",
    "protected_statuses",
    "stuck_expression",
    "terminal_status",
    "unprotected_expression",
    "unprotected_query",
    "unprotected_statuses",
]
