"""Reads of the ``raw_file`` collection for alerts and the daily digest (projections only: no full documents)."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime

from mongoengine import Q

from shared.db.interface import connect_db
from shared.db.models import BackupStatus, RawFile, RawFileStatus, ScrubStatus

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


def _failed_query() -> Q:
    return Q(status=RawFileStatus.ERROR.value) | Q(
        backup_status__in=[BackupStatus.COPYING_FAILED.value, BackupStatus.UPLOAD_FAILED.value]
    )


def count_failed() -> int:
    """Raw files whose pipeline or backup failed (status error, copying_failed, upload_failed)."""
    connect_db()
    return RawFile.objects(_failed_query()).count()


def raw_files_needing_attention(
    *, overdue_before: datetime, lease_expired_before: datetime, protected: Collection[str]
) -> list[RawFile]:
    """Raw files that may be in a bad state: failed, stuck, held back, drifted, or overdue and unprotected.

    Held back: the purge keeps the set because a check failed; drifted: a scrub found the data differs.

    ``protected`` are the backup statuses that count as a verified backup;
    purged raw files count as protected (their backup was checked before).
    The alert rules decide from these which state each one is in.
    """
    connect_db()
    failed = _failed_query()
    stuck = Q(backup_status=BackupStatus.UPLOAD_IN_PROGRESS.value) & Q(
        upload_claim_expires_at__lte=lease_expired_before
    )
    overdue = (
        Q(created_at__lte=overdue_before) & Q(backup_status__nin=sorted(protected)) & Q(status__ne="purged")
    )  # $nin also matches raw files without a backup_status yet
    purge_blocked = Q(purge_blocked_reason__nin=[None, ""])
    drift = Q(scrub_status=ScrubStatus.DRIFT.value)
    return list(RawFile.objects(failed | stuck | overdue | purge_blocked | drift).only(*ALERT_FIELDS))


def raw_files_by_id(raw_file_ids: Iterable[str]) -> dict[str, RawFile]:
    """The raw files of these ids that exist (alert fields only), by id."""
    connect_db()
    ids = list(raw_file_ids)
    found: dict[str, RawFile] = {}
    for start in range(0, len(ids), _ID_CHUNK):
        chunk = RawFile.objects(id__in=ids[start : start + _ID_CHUNK]).only(*ALERT_FIELDS)
        found.update({raw_file.id: raw_file for raw_file in chunk})
    return found


def count_by(field: str) -> dict[str, int]:
    """How many raw files have each value of ``field`` (``status`` or ``backup_status``; unset: ``"none"``)."""
    connect_db()
    rows = RawFile.objects.aggregate([{"$group": {"_id": f"${field}", "n": {"$sum": 1}}}])
    return {str(row["_id"]) if row["_id"] is not None else "none": int(row["n"]) for row in rows}


def oldest_unprotected(protected: Collection[str]) -> RawFile | None:
    """The unprotected raw file acquired first (not purged, backup status not in ``protected``)."""
    connect_db()
    query = Q(backup_status__nin=sorted(protected)) & Q(status__ne="purged")
    return RawFile.objects(query).only(*ALERT_FIELDS).order_by("created_at").first()


@dataclass(frozen=True)
class BackedUp:
    """Raw files and bytes one instrument backed up in a period."""

    raw_files: int
    bytes: int


def backed_up_since(since: datetime, *, s3: bool) -> dict[str, BackedUp]:
    """Per instrument, the raw files whose backup completed since ``since`` and their bytes.

    S3: ``upload_done`` whose successful attempt started since then
    (``s3_upload_attempted_at``; the document records no completion time).
    Local only: ``copying_done`` acquired since then (``created_at``).
    """
    connect_db()
    if s3:
        query = Q(backup_status=BackupStatus.UPLOAD_DONE.value) & Q(s3_upload_attempted_at__gte=since)
    else:
        query = Q(backup_status=BackupStatus.COPYING_DONE.value) & Q(created_at__gte=since)
    totals: dict[str, list[int]] = {}
    for raw_file in RawFile.objects(query).only("instrument_id", "size"):
        entry = totals.setdefault(raw_file.instrument_id, [0, 0])
        entry[0] += 1
        entry[1] += raw_file.size or 0
    return {instrument: BackedUp(count, size) for instrument, (count, size) in sorted(totals.items())}


__all__ = [
    "ALERT_FIELDS",
    "BackedUp",
    "backed_up_since",
    "count_by",
    "count_failed",
    "oldest_unprotected",
    "raw_files_by_id",
    "raw_files_needing_attention",
]
