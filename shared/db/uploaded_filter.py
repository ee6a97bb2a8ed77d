"""THE filter "``upload_done`` raw files matching verify's options" (instrument, project, raw file, since).

One rule for the three readers: :func:`shared.db.interface.select_uploaded_raw_files`
(audit's and the scrub's walk), :mod:`shared.db.uploaded` (verify's sample and count)
and :func:`shared.db.scrub.select_for_scrub`. Their signatures take these options as
``**filters: Unpack[UploadedFilters]``, so a new option is added here once.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, TypedDict, Unpack

from shared.db.models import BackupStatus

FALLBACK_PROJECT_ID = "_FALLBACK"


class UploadedFilters(TypedDict, total=False):
    """The options that narrow the ``upload_done`` raw files; each left out (or empty) selects all."""

    instrument: str | None
    project: str | None
    raw_file_id: str | None
    since: date | datetime | None  # created on or after that day (UTC)
    # Raw files without a project are backed up in the fallback project's bucket: asking for that project
    # also selects them.
    fallback_project_id: str


def start_of(day: date | datetime) -> datetime:
    """``day`` as an aware UTC datetime (a date: its midnight)."""
    if isinstance(day, datetime):
        return day if day.tzinfo else day.replace(tzinfo=UTC)
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def uploaded_query(**filters: Unpack[UploadedFilters]) -> dict[str, Any]:
    """The ``upload_done`` raw files matching ``filters`` (:class:`UploadedFilters`), as a filter its indexes bound.

    ``since``: created on or after that day (UTC); ``project`` equal to
    ``fallback_project_id`` also takes raw files without a project (their bucket is the fallback's).
    """
    unknown = set(filters) - UploadedFilters.__optional_keys__
    if unknown:  # a misspelt option must fail, not select more raw files than asked
        known = sorted(UploadedFilters.__optional_keys__)
        raise TypeError(f"unknown filter(s) {sorted(unknown)} of the upload_done raw files: use {known}")
    options = filters
    query: dict[str, Any] = {"backup_status": BackupStatus.UPLOAD_DONE.value}
    if instrument := options.get("instrument"):
        query["instrument_id"] = instrument
    if project := options.get("project"):
        fallback = options.get("fallback_project_id", FALLBACK_PROJECT_ID)
        query["project_id"] = {"$in": [project, None]} if project == fallback else project
    if raw_file_id := options.get("raw_file_id"):
        query["_id"] = raw_file_id
    if since := options.get("since"):
        query["created_at"] = {"$gte": start_of(since)}
    return query


__all__ = ["FALLBACK_PROJECT_ID", "UploadedFilters", "start_of", "uploaded_query"]
