"""Reads of the ``raw_file`` collection for alerts and the daily digest (projections only: no full documents).

Each is bounded by an index (tests/integration/test_query_shapes.py); the
rules (failed, unprotected) are :mod:`shared.db.predicates`, the same the
Backups page counts with, and counts per status never read the collection:
the status nearly every raw file ends in is the total minus the others.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from shared.db.backups_counts import count
from shared.db.interface import connect_db
from shared.db.models import BackupStatus, RawFile, RawFileStatus, ScrubStatus
from shared.db.predicates import (
    ALL_BACKUP_STATUSES,
    PURGED_STATUS,
    failed_queries,
    is_unprotected,
    terminal_status,
    unprotected_query,
    unprotected_statuses,
)

# What the alert rules read of a raw file; everything else stays in the database.
ALERT_FIELDS = (
    "id",
    "instrument_id",
    "project_id",
    "original_name",
    "size",
    "status",
    "status_details",
    "redrive_count",  # the link to a re-driven handler's latest run
    "error_transient",  # a transient pipeline error is re-driven: the hint says so
    "created_at",
    "backup_status",
    "backup_status_details",
    "s3_upload_attempts",
    "s3_upload_failed_at",
    "upload_claim_owner",
    "upload_claim_expires_at",
    "db_updated_at",
    "purge_blocked_reason",
    "scrub_status",
    "scrub_details",
    "scrubbed_at",
)
_ID_CHUNK = 500
# The status nearly every raw file ends in: counted as the total minus the others.
_TERMINAL_STATUS = RawFileStatus.MOVED.value


def count_failed() -> int:
    """Raw files whose pipeline or backup failed (status error, copying_failed, upload_failed)."""
    connect_db()
    return sum(count(query) for query in failed_queries())


def raw_files_needing_attention(*, overdue_before: datetime, lease_expired_before: datetime, s3: bool) -> list[RawFile]:
    """Raw files that may be in a bad state: failed, stuck, held back, drifted, or overdue and unprotected.

    Held back: the purge keeps the set because a check failed; drifted: a scrub found the data differs.

    Unprotected: without a verified backup (``s3``: a verified S3 copy), not
    purged (its backup was checked before). The alert rules decide from these
    which state each one is in.
    """
    connect_db()
    found: dict[str, RawFile] = {}
    for query in failed_queries():
        found.update((raw_file.id, raw_file) for raw_file in RawFile.objects(__raw__=query).only(*ALERT_FIELDS))
    stuck = RawFile.objects(
        backup_status=BackupStatus.UPLOAD_IN_PROGRESS.value, upload_claim_expires_at__lte=lease_expired_before
    ).only(*ALERT_FIELDS)
    found.update((raw_file.id, raw_file) for raw_file in stuck)
    overdue = RawFile.objects(__raw__=unprotected_query(s3=s3, overdue_before=overdue_before)).only(*ALERT_FIELDS)
    for raw_file in overdue:
        if is_unprotected(raw_file, s3=s3, overdue_before=overdue_before):
            found.setdefault(raw_file.id, raw_file)
    # Both fields are set on few raw files and indexed sparse: "$gt ''" (a string, not empty) reads only those.
    for query in ({"purge_blocked_reason": {"$gt": ""}}, {"scrub_status": ScrubStatus.DRIFT.value}):
        for raw_file in RawFile.objects(__raw__=query).only(*ALERT_FIELDS):
            found.setdefault(raw_file.id, raw_file)
    return list(found.values())


def raw_files_by_id(raw_file_ids: Iterable[str]) -> dict[str, RawFile]:
    """The raw files of these ids that exist (alert fields only), by id."""
    connect_db()
    ids = list(raw_file_ids)
    found: dict[str, RawFile] = {}
    for start in range(0, len(ids), _ID_CHUNK):
        chunk = RawFile.objects(id__in=ids[start : start + _ID_CHUNK]).only(*ALERT_FIELDS)
        found.update({raw_file.id: raw_file for raw_file in chunk})
    return found


def _counts(field: str, small: Sequence[str | None], terminal: str) -> dict[str, int]:
    """Raw files per value of ``field``: the ``small`` values counted, ``terminal`` the total minus them."""
    pipeline = [{"$match": {field: {"$in": list(small)}}}, {"$group": {"_id": f"${field}", "n": {"$sum": 1}}}]
    found = {str(row["_id"]) if row["_id"] is not None else "none": int(row["n"])
             for row in RawFile._get_collection().aggregate(pipeline)}  # fmt: skip
    found[terminal] = max(0, count({}) - sum(found.values()))
    return {name: n for name, n in found.items() if n}


def counts_by_status() -> dict[str, int]:
    """How many raw files have each ``status`` (``moved``: the total minus the others)."""
    connect_db()
    small = [status.value for status in RawFileStatus if status.value != _TERMINAL_STATUS]
    return _counts("status", small, _TERMINAL_STATUS)


def counts_by_backup_status(*, s3: bool) -> dict[str, int]:
    """How many raw files have each ``backup_status`` (unset: ``"none"``; the terminal one by subtraction)."""
    connect_db()
    terminal = terminal_status(s3)
    return _counts("backup_status", [status for status in ALL_BACKUP_STATUSES if status != terminal], terminal)


def oldest_unprotected(*, s3: bool) -> RawFile | None:
    """The unprotected raw file acquired first (not purged, no verified backup), read from the oldest on."""
    connect_db()
    query = {"backup_status": {"$in": unprotected_statuses(s3)}}
    oldest = RawFile.objects(__raw__=query).only(*ALERT_FIELDS).order_by("created_at", "id")
    return next((raw_file for raw_file in oldest if raw_file.status != PURGED_STATUS), None)


@dataclass(frozen=True)
class BackedUp:
    """Raw files and bytes one instrument backed up in a period."""

    raw_files: int
    bytes: int


def backed_up_since(since: datetime, *, s3: bool) -> dict[str, BackedUp]:
    """Per instrument, the raw files whose backup completed since ``since`` and their bytes.

    S3: ``upload_done`` whose successful attempt started since then
    (``s3_upload_attempted_at``; the document records no completion time),
    read among those updated since then (a finished upload was). Local only:
    ``copying_done`` acquired since then (``created_at``).
    """
    connect_db()
    if s3:
        recent = RawFile.objects(backup_status=BackupStatus.UPLOAD_DONE.value, db_updated_at__gte=since)
        done = [r for r in recent.only("instrument_id", "size", "s3_upload_attempted_at")
                if r.s3_upload_attempted_at is not None and r.s3_upload_attempted_at >= since]  # fmt: skip
    else:
        done = list(
            RawFile.objects(backup_status=BackupStatus.COPYING_DONE.value, created_at__gte=since).only(
                "instrument_id", "size"
            )
        )
    totals: dict[str, list[int]] = {}
    for raw_file in done:
        entry = totals.setdefault(raw_file.instrument_id, [0, 0])
        entry[0] += 1
        entry[1] += raw_file.size or 0
    return {instrument: BackedUp(n, size) for instrument, (n, size) in sorted(totals.items())}


__all__ = [
    "ALERT_FIELDS",
    "BackedUp",
    "backed_up_since",
    "count_failed",
    "counts_by_backup_status",
    "counts_by_status",
    "oldest_unprotected",
    "raw_files_by_id",
    "raw_files_needing_attention",
]
