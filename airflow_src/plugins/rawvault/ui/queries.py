"""The Backups page's rows and filters: validated filters, one page of rows, the counts (no Airflow imports).

The MongoDB queries (three groups: failed, stuck, the rest; paging; counts)
are in :mod:`shared.db.backups_view`; here each raw document becomes a table row.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from rawvault.alerts.raw_files import subject_of
from rawvault.keys import handler_dag_id
from shared.db.alerts import OK_STATE, last_alerts
from shared.db.backups_view import (
    NOT_STARTED,
    PIPELINE_ERROR,
    PIPELINE_ERROR_STATUS,
    PSEUDO_BACKUP_STATUSES,
    STUCK,
    backup_status_counts,
    page_of_raw_files,
)
from shared.db.models import BackupStatus, RawFileStatus

ENV_VAR_STUCK_AFTER_HOURS = "RAWVAULT_UI_STUCK_AFTER_HOURS"
DEFAULT_STUCK_AFTER_HOURS = 6.0
MAX_LIMIT = 500

BACKUP_STATUS_FILTER_VALUES = (*(s.value for s in BackupStatus), *PSEUDO_BACKUP_STATUSES)
RAW_FILE_STATUS_VALUES = tuple(s.value for s in RawFileStatus)


class InvalidFilterError(ValueError):
    """A filter value the page cannot use; the message names the parameter and the allowed values."""


@dataclass(frozen=True)
class RawFileFilter:
    """What the user filters on; empty fields do not filter."""

    backup_status: tuple[str, ...] = ()
    status: tuple[str, ...] = ()
    instrument: tuple[str, ...] = ()
    project: tuple[str, ...] = ()
    created_from: date | None = None  # inclusive, UTC day
    created_to: date | None = None  # inclusive, UTC day
    search: str = ""  # part of the raw file id, case-insensitive

    def __post_init__(self) -> None:
        unknown = sorted(set(self.backup_status) - set(BACKUP_STATUS_FILTER_VALUES))
        if unknown:
            raise InvalidFilterError(
                f"backup_status: unknown value(s) {', '.join(map(repr, unknown))}; "
                f"use one or more of {', '.join(BACKUP_STATUS_FILTER_VALUES)}"
            )
        unknown = sorted(set(self.status) - set(RAW_FILE_STATUS_VALUES))
        if unknown:
            raise InvalidFilterError(
                f"status: unknown value(s) {', '.join(map(repr, unknown))}; "
                f"use one or more of {', '.join(RAW_FILE_STATUS_VALUES)}"
            )
        if self.created_from and self.created_to and self.created_from > self.created_to:
            raise InvalidFilterError(
                f"created_from ({self.created_from}) is after created_to ({self.created_to}): swap them"
            )


@dataclass
class RawFilePage:
    """One page of rows plus what the page header needs."""

    total: int
    offset: int
    limit: int
    items: list[dict[str, Any]]
    stuck_after_hours: float
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "total": self.total,
            "offset": self.offset,
            "limit": self.limit,
            "stuck_after_hours": self.stuck_after_hours,
            "generated_at": self.generated_at.isoformat(),
            "items": self.items,
        }


def stuck_after_from_env() -> timedelta:
    """``$RAWVAULT_UI_STUCK_AFTER_HOURS`` (default 6) as a duration; a bad value is an error naming it."""
    raw = os.environ.get(ENV_VAR_STUCK_AFTER_HOURS, "").strip()
    if not raw:
        return timedelta(hours=DEFAULT_STUCK_AFTER_HOURS)
    try:
        hours = float(raw)
    except ValueError:
        hours = -1.0
    if not hours > 0:
        raise InvalidFilterError(f"{ENV_VAR_STUCK_AFTER_HOURS}={raw!r} is not a positive number of hours")
    return timedelta(hours=hours)


def format_size(size: int | None) -> str:
    """``size`` in bytes as B, KiB, MiB, GiB or TiB with one decimal; an empty string when unknown."""
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def format_age(seconds: float | None) -> str:
    """A coarse age: ``45 s``, ``12 min``, ``5 h``, ``3 d``."""
    if seconds is None:
        return ""
    seconds = max(0.0, seconds)
    for limit, divisor, unit in ((60, 1, "s"), (3600, 60, "min"), (86400, 3600, "h")):
        if seconds < limit:
            return f"{int(seconds // divisor)} {unit}"
    return f"{int(seconds // 86400)} d"


def acquisition_runs_path(instrument_id: str, raw_file_id: str) -> str:
    """Path, relative to the Airflow UI's base URL, of the handler runs whose conf names this raw file.

    The Airflow 3 UI's DAG runs tab (``dags/<dag_id>/runs``) filters with
    ``conf_contains``; the quoted id matches the conf value exactly where JSON
    writes it unchanged (plain ASCII without quotes or backslashes).
    """
    dag_id = handler_dag_id(instrument_id)
    plain = raw_file_id.isascii() and raw_file_id.isprintable() and not set(raw_file_id) & {'"', "\\"}
    needle = f'"{raw_file_id}"' if plain else raw_file_id
    return f"dags/{quote(dag_id, safe='')}/runs?{urlencode({'conf_contains': needle})}"


def _as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    value = _as_utc(value)
    return value.isoformat() if value else None


def last_alert_field(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """A row's ``last_alert``: the state last announced for the raw file (``open``: not resolved), or None."""
    if record is None:
        return None
    return {
        "state": record["state"],
        "kind": record.get("kind") or None,
        "open": record["state"] != OK_STATE,
        "at": _iso(record.get("changed_at")),
        "title": record.get("title"),
        "last_bad_state": record.get("last_bad_state"),
        "last_bad_at": _iso(record.get("last_bad_at")),
    }


def raw_file_row(
    doc: dict[str, Any], *, now: datetime, stuck: bool, last_alert: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One table row from a raw ``raw_file`` document (no mongoengine defaults filled in).

    ``stuck`` comes from the query group the document was found in, so the row
    and the sort always agree; ``last_alert`` is the raw file's alert ledger
    record (:func:`shared.db.alerts.last_alerts`).
    """
    file_info = doc.get("file_info") or {}
    size = doc.get("size")
    if size is None and file_info:
        size = sum(int(entry[0]) for entry in file_info.values() if entry)
    created_at = _as_utc(doc.get("created_at"))
    updated_at = _as_utc(doc.get("db_updated_at"))
    purged_at = _as_utc(doc.get("purged_at"))
    age_seconds = (now - created_at).total_seconds() if created_at else None
    backup_status = doc.get("backup_status")
    raw_file_id = str(doc["_id"])
    instrument_id = doc.get("instrument_id") or ""
    return {
        "id": raw_file_id,
        "original_name": doc.get("original_name"),
        "instrument_id": instrument_id,
        "instrument_type": doc.get("instrument_type"),
        "project_id": doc.get("project_id"),
        "size": size,
        "size_human": format_size(size),
        "file_count": len(file_info),
        "status": doc.get("status"),
        "status_details": doc.get("status_details"),
        "backup_status": backup_status,
        "backup_status_details": doc.get("backup_status_details"),
        "failed": backup_status in BackupStatus.FAILED or doc.get("status") == PIPELINE_ERROR_STATUS,
        "pipeline_error": doc.get("status") == PIPELINE_ERROR_STATUS,
        "stuck": stuck,
        "s3_backup_key": doc.get("s3_backup_key"),
        "s3_etag": doc.get("s3_etag"),
        "s3_upload_attempts": doc.get("s3_upload_attempts") or 0,
        "created_at": created_at.isoformat() if created_at else None,
        "updated_at": updated_at.isoformat() if updated_at else None,
        # The purge (file_remover): when the set was deleted from the share, or why it is kept.
        "purged_at": purged_at.isoformat() if purged_at else None,
        "purge_blocked_reason": doc.get("purge_blocked_reason"),
        "age_seconds": age_seconds,
        "age": format_age(age_seconds),
        "acquisition_runs_path": acquisition_runs_path(instrument_id, raw_file_id),
        # Scrubbing (backup_verifier, verify --read-data): the last re-read of the data in S3 and the local backup.
        "scrub_status": doc.get("scrub_status"),  # ok | drift | None (never scrubbed)
        "scrub_details": doc.get("scrub_details"),
        "scrubbed_at": _iso(doc.get("scrubbed_at")),
        "last_alert": last_alert_field(last_alert),
    }


def list_raw_files(
    filters: RawFileFilter | None = None,
    *,
    limit: int = 50,
    offset: int = 0,
    stuck_after: timedelta | None = None,
    now: datetime | None = None,
) -> RawFilePage:
    """One page of raw files: failed first, then stuck, then the rest; newest first within each."""
    filters = filters or RawFileFilter()
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidFilterError(f"limit: {limit} is out of range; use 1 to {MAX_LIMIT}")
    if offset < 0:
        raise InvalidFilterError(f"offset: {offset} is negative; use 0 or more")
    now = now or datetime.now(UTC)
    stuck_after = stuck_after or stuck_after_from_env()
    total, documents = page_of_raw_files(filters, cutoff=now - stuck_after, offset=offset, limit=limit)
    alerts = last_alerts(subject_of(str(doc["_id"])) for doc, _stuck in documents)  # one read for the page
    return RawFilePage(
        total=total,
        offset=offset,
        limit=limit,
        items=[
            raw_file_row(doc, now=now, stuck=stuck, last_alert=alerts.get(subject_of(str(doc["_id"]))))
            for doc, stuck in documents
        ],
        stuck_after_hours=stuck_after.total_seconds() / 3600,
        generated_at=now,
    )


def count_by_backup_status(
    filters: RawFileFilter | None = None,
    *,
    stuck_after: timedelta | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Counts per ``backup_status`` (plus ``stuck``, ``not_started`` and ``pipeline_error``) and the filter choices.

    The counts honour every filter except ``backup_status`` itself, so they
    show what choosing a backup status would give. ``pipeline_error``
    counts raw files whose pipeline failed (``status`` ``error``), whatever
    their backup status; like ``stuck``, it overlaps the per-status counts.
    ``instruments`` and ``projects`` list every value in the collection,
    for the filter menus.
    """
    filters = filters or RawFileFilter()
    now = now or datetime.now(UTC)
    stuck_after = stuck_after or stuck_after_from_env()
    found = backup_status_counts(filters, cutoff=now - stuck_after)
    return {
        "total": found.total,
        "counts": found.counts,
        STUCK: found.stuck,
        PIPELINE_ERROR: found.pipeline_error,
        "stuck_after_hours": stuck_after.total_seconds() / 3600,
        "instruments": found.instruments,
        "projects": found.projects,
        "statuses": list(RAW_FILE_STATUS_VALUES),
        "backup_statuses": list(BACKUP_STATUS_FILTER_VALUES),
    }


__all__ = [
    "BACKUP_STATUS_FILTER_VALUES",
    "DEFAULT_STUCK_AFTER_HOURS",
    "ENV_VAR_STUCK_AFTER_HOURS",
    "NOT_STARTED",
    "PIPELINE_ERROR",
    "STUCK",
    "InvalidFilterError",
    "RawFileFilter",
    "RawFilePage",
    "acquisition_runs_path",
    "count_by_backup_status",
    "format_age",
    "format_size",
    "list_raw_files",
    "raw_file_row",
    "stuck_after_from_env",
]


def store_rows() -> list[dict[str, Any]]:
    """Every probed bucket's store (issue 15): when it was probed, its one-line summary and its weaknesses."""
    from shared.db.s3_stores import list_store_capabilities

    rows = []
    for store in list_store_capabilities():
        probed_at = store.probed_at if store.probed_at.tzinfo else store.probed_at.replace(tzinfo=UTC)
        rows.append(
            {
                "endpoint": store.endpoint,
                "bucket": store.bucket,
                "probed_at": probed_at.isoformat(),
                "summary": store.summary,
                "weaknesses": list(store.weaknesses),
                "versioning": (store.capabilities or {}).get("versioning"),
            }
        )
    return rows
