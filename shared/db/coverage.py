"""The raw files "unprotected": acquired before the deadline without a verified backup (coverage report).

A raw file is *unprotected* when it was first seen (``created_at``) more than
``backup.deadline_hours`` ago and its backup status is not one that counts as a
verified backup (:func:`protected_statuses`: with S3 a verified S3 copy; local
only, a verified local copy), unless it was purged (deleted from the share
after its backup was checked again). The rule itself is
:mod:`shared.db.predicates` (its bounding filter and its Python test); the
coverage command, the alerts' deadline rule and the Backups page's count use it.

The query is bounded by the ``backup_status`` index (``$in`` of the
unprotected statuses, ``None`` included: no backup started yet) and a range
on ``created_at``; :func:`is_unprotected` decides for a document already read.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from shared.db.interface import connect_db
from shared.db.models import RawFile
from shared.db.predicates import (
    ALL_BACKUP_STATUSES,
    PURGED_STATUS,
    is_unprotected,
    protected_statuses,
    unprotected_query,
    unprotected_statuses,
)

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


def unprotected_raw_files(*, s3: bool, overdue_before: datetime, instrument: str | None = None) -> list[RawFile]:
    """Every unprotected raw file (of one instrument, if given), oldest first, with the fields a report shows."""
    connect_db()
    query = unprotected_query(s3=s3, overdue_before=overdue_before)
    if instrument:
        query["instrument_id"] = instrument
    found: Iterable[RawFile] = RawFile.objects(__raw__=query).only(*COVERAGE_FIELDS)
    rows = [raw_file for raw_file in found if is_unprotected(raw_file, s3=s3, overdue_before=overdue_before)]
    return sorted(rows, key=lambda raw_file: (raw_file.created_at, raw_file.id))


__all__ = [
    "ALL_BACKUP_STATUSES",
    "COVERAGE_FIELDS",
    "PURGED_STATUS",
    "is_unprotected",
    "protected_statuses",
    "unprotected_query",
    "unprotected_raw_files",
    "unprotected_statuses",
]
