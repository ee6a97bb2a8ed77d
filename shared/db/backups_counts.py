"""Counts of raw files per backup status without reading the collection: the Backups page's chips, the digest.

Nearly every raw file ends in one backup status (``upload_done`` with S3,
``copying_done`` without: :func:`~shared.db.predicates.terminal_status`).
Every *other* status is a small group, counted exactly by one aggregate
whose ``$match`` an index bounds (``backup_status $in``, after the filter's
leading field); the same pass counts the stuck and the unprotected rows
among them (both are in the small groups by definition). The total is the
collection's metadata count without a filter (``estimated_document_count``)
or, with one, a count through the index that starts with the filtered
field; the terminal status is the total minus the small groups.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.db.backups_view import NOT_STARTED, RawFileQuery, ViewContext, filter_query, merge
from shared.db.models import RawFile
from shared.db.predicates import (
    ALL_BACKUP_STATUSES,
    PIPELINE_ERROR_STATUS,
    stuck_expression,
    terminal_status,
    unprotected_expression,
)


@dataclass(frozen=True)
class BackupStatusCounts:
    """Raw files per ``backup_status`` (``not_started``: none yet) and the overlapping counts."""

    total: int
    counts: dict[str, int] = field(default_factory=dict)
    stuck: int = 0
    pipeline_error: int = 0
    unprotected: int = 0
    estimated: bool = False  # the total is the collection's metadata count (MongoDB may be a little off)


def count(query: Mapping[str, Any]) -> int:
    """Documents matching ``query`` (through the index that bounds it); ``{}``: the metadata count."""
    collection = RawFile._get_collection()
    if not query:
        return int(collection.estimated_document_count())
    return int(collection.count_documents(dict(query)))


def small_group_counts(base: Mapping[str, Any], ctx: ViewContext) -> dict[str | None, dict[str, int]]:
    """Per backup status but the terminal one: rows, stuck, unprotected, pipeline errors (one aggregate)."""
    small = [status for status in ALL_BACKUP_STATUSES if status != terminal_status(ctx.s3)]
    match = merge(base, {"backup_status": {"$in": small}})
    if match is None:
        return {}
    group = {
        "_id": "$backup_status",
        "n": {"$sum": 1},
        "stuck": {"$sum": stuck_expression(ctx.cutoff)},
        "unprotected": {"$sum": unprotected_expression(s3=ctx.s3, overdue_before=ctx.overdue_before)},
        "error": {"$sum": {"$cond": [{"$eq": ["$status", PIPELINE_ERROR_STATUS]}, 1, 0]}},
    }
    rows = RawFile._get_collection().aggregate([{"$match": match}, {"$group": group}])
    return {row["_id"]: {key: int(row[key]) for key in ("n", "stuck", "unprotected", "error")} for row in rows}


def backup_status_counts(filters: RawFileQuery, ctx: ViewContext) -> BackupStatusCounts:
    """Counts honouring every filter but ``backup_status``; ``stuck``, ``pipeline_error``, ``unprotected`` overlap."""
    counts = dict.fromkeys((*(s for s in ALL_BACKUP_STATUSES if s), NOT_STARTED), 0)
    base = filter_query(filters, ctx)
    if base is None:
        return BackupStatusCounts(total=0, counts=counts)
    small = small_group_counts(base, ctx)
    total = count(base)
    terminal = terminal_status(ctx.s3)
    errors_in_terminal = merge(base, {"status": PIPELINE_ERROR_STATUS, "backup_status": terminal})
    for status, row in small.items():
        key = status or NOT_STARTED
        counts[key] = counts.get(key, 0) + row["n"]
    counts[terminal] = max(0, total - sum(row["n"] for row in small.values()))
    errors = sum(row["error"] for row in small.values()) + (count(errors_in_terminal) if errors_in_terminal else 0)
    return BackupStatusCounts(
        total=total,
        counts=counts,
        stuck=sum(row["stuck"] for row in small.values()),
        pipeline_error=errors,
        unprotected=sum(row["unprotected"] for row in small.values()),
        estimated=not base,
    )


def projects_of_instruments(instruments: Iterable[str]) -> list[str]:
    """The projects of these instruments' raw files (a distinct scan of ``(instrument_id, project_id)``)."""
    found = RawFile._get_collection().distinct("project_id", {"instrument_id": {"$in": sorted(instruments)}})
    return sorted(str(project) for project in found if project)


__all__ = ["BackupStatusCounts", "backup_status_counts", "count", "projects_of_instruments", "small_group_counts"]
