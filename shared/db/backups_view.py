"""The Backups page's MongoDB queries: raw files in three groups, one page of them, counts per backup status.

The groups, each sorted newest first, so what needs attention is on the first page:

1. failed: ``backup_status`` in :attr:`BackupStatus.FAILED`, or the pipeline
   failed before the backup (``status`` is ``error``: a failed monitor,
   checksum or move);
2. stuck: ``backup_status`` in :attr:`BackupStatus.IN_PROGRESS` and the
   document not updated since the cutoff, unless it is in the failed group;
3. everything else (also raw files whose backup has not started yet).

Paging walks the three groups as one list; each group is a count and at
most one ``skip``/``limit`` query on the ``created_at`` index, never a sort of
the whole collection in memory. The caller connects (:func:`shared.db.interface.connect_db`)
and turns the raw documents into rows (``rawvault.ui.queries``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol

from mongoengine import Q

from shared.db.models import BackupStatus, RawFile, RawFileStatus

# Pseudo values of the backup_status filter and of the counts, besides the BackupStatus values.
STUCK = "stuck"
NOT_STARTED = "not_started"
PIPELINE_ERROR = "pipeline_error"  # status=error: the monitor, checksum or move failed
PSEUDO_BACKUP_STATUSES = (STUCK, NOT_STARTED, PIPELINE_ERROR)
PIPELINE_ERROR_STATUS = RawFileStatus.ERROR.value
STUCK_GROUP = 1


class RawFileQuery(Protocol):
    """What the page filters on (``rawvault.ui.queries.RawFileFilter``); empty fields do not filter."""

    @property
    def backup_status(self) -> tuple[str, ...]: ...  # BackupStatus values and PSEUDO_BACKUP_STATUSES
    @property
    def status(self) -> tuple[str, ...]: ...
    @property
    def instrument(self) -> tuple[str, ...]: ...
    @property
    def project(self) -> tuple[str, ...]: ...
    @property
    def created_from(self) -> date | None: ...  # inclusive, UTC day
    @property
    def created_to(self) -> date | None: ...  # inclusive, UTC day
    @property
    def search(self) -> str: ...  # part of the raw file id, case-insensitive


@dataclass(frozen=True)
class BackupStatusCounts:
    """Raw files per ``backup_status`` (``not_started``: none yet), the overlapping counts, the filter choices."""

    total: int
    counts: dict[str, int]
    stuck: int
    pipeline_error: int
    instruments: list[str]
    projects: list[str]


def _base_query(filters: RawFileQuery) -> Q:
    """Every filter except ``backup_status``."""
    query = Q()
    if filters.status:
        query &= Q(status__in=list(filters.status))
    if filters.instrument:
        query &= Q(instrument_id__in=list(filters.instrument))
    if filters.project:
        query &= Q(project_id__in=list(filters.project))
    if filters.created_from:
        query &= Q(created_at__gte=datetime.combine(filters.created_from, time.min, tzinfo=UTC))
    if filters.created_to:
        query &= Q(created_at__lt=datetime.combine(filters.created_to + timedelta(days=1), time.min, tzinfo=UTC))
    if filters.search.strip():
        query &= Q(id__icontains=filters.search.strip())  # mongoengine escapes regex characters
    return query


def _stuck_query(cutoff: datetime) -> Q:
    in_progress = sorted(BackupStatus.IN_PROGRESS)
    return Q(backup_status__in=in_progress) & (Q(db_updated_at__lt=cutoff) | Q(db_updated_at=None))


def _failed_query() -> Q:
    return Q(backup_status__in=sorted(BackupStatus.FAILED)) | Q(status=PIPELINE_ERROR_STATUS)


def _backup_status_query(values: tuple[str, ...], cutoff: datetime) -> Q:
    """Rows whose backup status is any of ``values`` (``stuck`` and ``not_started`` included)."""
    query: Q | None = None
    real = [v for v in values if v not in PSEUDO_BACKUP_STATUSES]
    parts = [Q(backup_status__in=real)] if real else []
    if STUCK in values:
        parts.append(_stuck_query(cutoff) & Q(status__ne=PIPELINE_ERROR_STATUS))
    if NOT_STARTED in values:
        parts.append(Q(backup_status=None))
    if PIPELINE_ERROR in values:
        parts.append(Q(status=PIPELINE_ERROR_STATUS))
    for part in parts:
        query = part if query is None else query | part
    return query or Q()


def _groups(cutoff: datetime) -> list[Q]:
    """The three sort groups (failed, stuck, the rest): disjoint, and together every document."""
    in_progress = sorted(BackupStatus.IN_PROGRESS)
    not_failed = Q(backup_status__nin=sorted(BackupStatus.FAILED)) & Q(status__ne=PIPELINE_ERROR_STATUS)
    stuck = not_failed & _stuck_query(cutoff)
    recent = Q(backup_status__in=in_progress) & Q(db_updated_at__gte=cutoff)
    rest = not_failed & (Q(backup_status__nin=in_progress) | recent)
    return [_failed_query(), stuck, rest]


def page_of_raw_files(
    filters: RawFileQuery, *, cutoff: datetime, offset: int, limit: int
) -> tuple[int, list[tuple[dict[str, Any], bool]]]:
    """All rows matching ``filters`` (their number) and the raw documents of rows ``[offset, offset + limit)``.

    Failed first, then stuck (in progress, not updated since ``cutoff``), then
    the rest, newest first within each; each document with whether it is stuck.
    """
    base = _base_query(filters)
    if filters.backup_status:
        base &= _backup_status_query(filters.backup_status, cutoff)
    documents: list[tuple[dict[str, Any], bool]] = []
    total = 0
    for index, group in enumerate(_groups(cutoff)):
        queryset = RawFile.objects(base & group)
        count = queryset.count()
        # Which part of this group falls into [offset, offset + limit) of the whole list.
        start = max(0, offset - total)
        wanted = limit - len(documents)
        if wanted > 0 and start < count:
            for doc in queryset.order_by("-created_at", "id").skip(start).limit(wanted).as_pymongo():
                documents.append((doc, index == STUCK_GROUP))
        total += count
    return total, documents


def backup_status_counts(filters: RawFileQuery, *, cutoff: datetime) -> BackupStatusCounts:
    """Counts per ``backup_status`` honouring every filter except ``backup_status``, and the filter choices.

    ``stuck`` and ``pipeline_error`` overlap the per-status counts; the
    instruments and projects are every value in the collection.
    """
    base = _base_query(filters)
    counts = dict.fromkeys((*(s.value for s in BackupStatus), NOT_STARTED), 0)
    total = 0
    for row in RawFile.objects(base).aggregate([{"$group": {"_id": "$backup_status", "n": {"$sum": 1}}}]):
        key = row["_id"] or NOT_STARTED
        counts[key] = counts.get(key, 0) + row["n"]
        total += row["n"]
    return BackupStatusCounts(
        total=total,
        counts=counts,
        stuck=RawFile.objects(base & _stuck_query(cutoff) & Q(status__ne=PIPELINE_ERROR_STATUS)).count(),
        pipeline_error=RawFile.objects(base & Q(status=PIPELINE_ERROR_STATUS)).count(),
        instruments=sorted(v for v in RawFile.objects.distinct("instrument_id") if v),
        projects=sorted(v for v in RawFile.objects.distinct("project_id") if v),
    )
