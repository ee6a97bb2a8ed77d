"""Totals per instrument and project (raw files, bytes, and how much of it is verified), for the Backups page.

Summing an instrument's raw files reads every one of them, far too much for a page load at 300,000 raw
files: the alert check (on the maintenance queue) computes them at most once an hour per instrument, one
aggregation per instrument bounded by the ``(instrument_id, ...)`` indexes, and records them here; the
page shows the last snapshot with its time and never aggregates. One document per instrument, replaced
at each computation; read by ``_id`` only.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import datetime
from typing import Any

from mongoengine import DateTimeField, DictField, Document, ListField, StringField

from shared.db.interface import connect_db
from shared.db.models import RawFile


class InstrumentTotals(Document):
    """One instrument's totals per project when the alert check last computed them."""

    id = StringField(primary_key=True)  # the instrument id
    # One row per project: project_id, raw_files, bytes, verified_raw_files, verified_bytes.
    projects = ListField(DictField())
    verified_by = StringField(required=True)  # "s3" (upload_done) or "local" (a verified local copy)
    measured_at = DateTimeField(required=True)

    meta = {"collection": "instrument_totals", "strict": False}


def totals_groups(instrument_id: str) -> list[dict[str, Any]]:
    """Raw files and bytes of one instrument per (project, backup status).

    One aggregation bounded by the instrument (the ``instrument_id``-first indexes); a few dozen groups
    whatever the collection's size.
    """
    connect_db()
    pipeline = [
        {"$match": {"instrument_id": instrument_id}},
        {
            "$group": {
                "_id": {"project_id": "$project_id", "backup_status": "$backup_status"},
                "raw_files": {"$sum": 1},
                "bytes": {"$sum": "$size"},
            }
        },
    ]
    return [
        {**group["_id"], "raw_files": int(group["raw_files"]), "bytes": int(group["bytes"] or 0)}
        for group in RawFile._get_collection().aggregate(pipeline)
    ]


def fold_totals(groups: Iterable[Mapping[str, Any]], verified_statuses: Collection[str]) -> list[dict[str, Any]]:
    """Rows per project from the groups per (project, backup status), sorted by project (no project last).

    A raw file is verified when its backup status is one of ``verified_statuses``.
    """
    rows: dict[str | None, dict[str, Any]] = {}
    for group in groups:
        project = group.get("project_id")
        row = rows.setdefault(
            project,
            {"project_id": project, "raw_files": 0, "bytes": 0, "verified_raw_files": 0, "verified_bytes": 0},
        )
        raw_files, size = int(group.get("raw_files") or 0), int(group.get("bytes") or 0)
        row["raw_files"] += raw_files
        row["bytes"] += size
        if group.get("backup_status") in verified_statuses:
            row["verified_raw_files"] += raw_files
            row["verified_bytes"] += size
    return sorted(rows.values(), key=lambda row: (row["project_id"] is None, row["project_id"] or ""))


def record_totals(instrument_id: str, projects: list[dict[str, Any]], *, verified_by: str, now: datetime) -> None:
    """Replace one instrument's totals."""
    connect_db()
    document = {"projects": projects, "verified_by": verified_by, "measured_at": now}
    InstrumentTotals._get_collection().replace_one({"_id": instrument_id}, document, upsert=True)


def latest_totals(instrument_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The last totals of each of these instruments (by id); instruments never computed are left out."""
    connect_db()
    found = InstrumentTotals._get_collection().find({"_id": {"$in": list(instrument_ids)}})
    return {doc.pop("_id"): doc for doc in found}


__all__ = ["InstrumentTotals", "fold_totals", "latest_totals", "record_totals", "totals_groups"]
