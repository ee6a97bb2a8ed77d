"""The Backups page's rows and filters: validated filters, keyset cursors, one page of rows, the chips.

No Airflow imports: the caller (:mod:`rawvault.ui.api`) says which
instruments the user may read (:class:`PageView`). The MongoDB queries (three
groups: failed, stuck, the rest; keyset paging; counts that never scan) are
:mod:`shared.db.backups_view` and :mod:`shared.db.backups_counts`; here each
raw document becomes a table row and a page position an opaque cursor.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from rawvault.keys import handler_dag_id
from shared.db.backups_counts import backup_status_counts, projects_of_instruments
from shared.db.backups_view import (
    NOT_STARTED,
    PIPELINE_ERROR,
    PSEUDO_BACKUP_STATUSES,
    STUCK,
    UNPROTECTED,
    Position,
    ViewContext,
    page_of_raw_files,
)
from shared.db.interface import get_projects
from shared.db.keyset import Key
from shared.db.models import BackupStatus, RawFileStatus
from shared.db.predicates import GROUPS, PIPELINE_ERROR_STATUS, REST_GROUP, STUCK_GROUP

ENV_VAR_STUCK_AFTER_HOURS = "RAWVAULT_UI_STUCK_AFTER_HOURS"
DEFAULT_STUCK_AFTER_HOURS = 6.0
MAX_LIMIT = 500
DEFAULT_DEADLINE_HOURS = 24.0  # backup.deadline_hours when no settings are given (tests)
MAX_SEARCH_CHARS = 200

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
    search: str = ""  # the start of the raw file id, case-sensitive (an index range, never a scan)

    def __post_init__(self) -> None:
        object.__setattr__(self, "search", self.search.strip())
        if len(self.search) > MAX_SEARCH_CHARS:
            raise InvalidFilterError(f"q: {len(self.search)} characters; use at most {MAX_SEARCH_CHARS}")
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


@dataclass(frozen=True)
class PageView:
    """What the page takes from the settings and from the caller's access."""

    instruments: tuple[str, ...] = ()  # the configured instruments (the instrument menu)
    readable: frozenset[str] | None = None  # the instruments the caller may read; None: every one
    s3: bool = True  # backup_type s3: a raw file is protected once upload_done
    deadline: timedelta = timedelta(hours=DEFAULT_DEADLINE_HOURS)  # backup.deadline_hours
    fallback_project_id: str = "_FALLBACK"

    @classmethod
    def from_settings(cls, settings: Any, readable: frozenset[str] | None = None) -> PageView:
        """The view of a ``shared.settings.Settings`` for a caller who may read ``readable`` (None: all)."""
        return cls(
            instruments=tuple(sorted(settings.instruments)),
            readable=readable,
            s3=settings.s3_enabled,
            deadline=timedelta(hours=settings.backup.deadline_hours),
            fallback_project_id=settings.watcher.fallback_project_id,
        )

    def context(self, now: datetime, stuck_after: timedelta) -> ViewContext:
        """The database view's context at ``now``."""
        return ViewContext(
            now=now, cutoff=now - stuck_after, overdue_before=now - self.deadline, s3=self.s3, instruments=self.readable
        )

    def instrument_menu(self) -> list[str]:
        """The instruments the caller may choose."""
        return [i for i in self.instruments if self.readable is None or i in self.readable]


@dataclass
class RawFilePage:
    """One page of rows plus what the page header needs; the cursors name the pages next to it."""

    limit: int
    items: list[dict[str, Any]]
    stuck_after_hours: float
    next_cursor: str | None = None
    previous_cursor: str | None = None
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "limit": self.limit,
            "next_cursor": self.next_cursor,
            "previous_cursor": self.previous_cursor,
            "stuck_after_hours": self.stuck_after_hours,
            "generated_at": self.generated_at.isoformat(),
            "items": self.items,
        }


_CURSOR_HELP = "not a cursor this page gave out (next_cursor / previous_cursor); start again without one"


def encode_cursor(position: Position, *, forward: bool) -> str:
    """An opaque cursor: the rows after (``forward``) or before ``position`` (group, created_at, id)."""
    created = position.key.created_at
    payload = {
        "d": "next" if forward else "previous",
        "g": position.group,
        "t": created.isoformat() if created else None,
        "i": position.key.raw_file_id,
    }
    raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[Position, bool]:
    """The position and direction of a cursor of :func:`encode_cursor`; a bad one is :class:`InvalidFilterError`."""
    try:
        payload = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        group, created, raw_file_id = payload["g"], payload["t"], payload["i"]
        forward = {"next": True, "previous": False}[payload["d"]]
        created_at = datetime.fromisoformat(created) if created is not None else None
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise InvalidFilterError(f"cursor: {_CURSOR_HELP}") from None
    valid_time = created_at.tzinfo is not None if created_at is not None else group == REST_GROUP
    if group not in GROUPS or not isinstance(raw_file_id, str) or not valid_time:
        raise InvalidFilterError(f"cursor: {_CURSOR_HELP}")
    return Position(group, Key(created_at, raw_file_id)), forward


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


def raw_file_row(doc: dict[str, Any], *, now: datetime, stuck: bool) -> dict[str, Any]:
    """One table row from a raw ``raw_file`` document (no mongoengine defaults filled in).

    The document has the columns of ``shared.db.backups_view.ROW_PROJECTION``
    (``file_count`` and a set's ``size`` computed by MongoDB) or is whole.

    ``stuck`` comes from the query group the document was found in, so the row
    and the sort always agree.
    """
    file_info = doc.get("file_info") or {}
    size = doc.get("size")
    if size is None and file_info:
        size = sum(int(entry[0]) for entry in file_info.values() if entry)
    file_count = doc["file_count"] if "file_count" in doc else len(file_info)
    created_at = _as_utc(doc.get("created_at"))
    updated_at = _as_utc(doc.get("db_updated_at"))
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
        "file_count": file_count,
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
        "age_seconds": age_seconds,
        "age": format_age(age_seconds),
        "acquisition_runs_path": acquisition_runs_path(instrument_id, raw_file_id),
    }


def list_raw_files(
    filters: RawFileFilter | None = None,
    *,
    limit: int = 50,
    cursor: str | None = None,
    view: PageView | None = None,
    stuck_after: timedelta | None = None,
    now: datetime | None = None,
) -> RawFilePage:
    """One page of raw files: failed first, then stuck, then the rest; newest first within each.

    ``cursor`` (a ``next_cursor`` or ``previous_cursor`` of an earlier page)
    continues from where that page ended or began; without it, the first page.
    """
    filters = filters or RawFileFilter()
    view = view or PageView()
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidFilterError(f"limit: {limit} is out of range; use 1 to {MAX_LIMIT}")
    start, forward = decode_cursor(cursor) if cursor else (None, True)
    if start is not None and (start.key.created_at is None) != (start.group == REST_GROUP and bool(filters.search)):
        raise InvalidFilterError(f"cursor: it belongs to another search; {_CURSOR_HELP}")
    now = now or datetime.now(UTC)
    stuck_after = stuck_after or stuck_after_from_env()
    page = page_of_raw_files(filters, view.context(now, stuck_after), start=start, forward=forward, limit=limit)
    return RawFilePage(
        limit=limit,
        items=[raw_file_row(doc, now=now, stuck=group == STUCK_GROUP) for doc, group in page.rows],
        stuck_after_hours=stuck_after.total_seconds() / 3600,
        next_cursor=encode_cursor(page.next, forward=True) if page.next else None,
        previous_cursor=encode_cursor(page.previous, forward=False) if page.previous else None,
        generated_at=now,
    )


def project_menu(view: PageView) -> list[str]:
    """The projects the caller may choose.

    For a caller who may read every instrument, the ``project`` collection and
    the fallback project; otherwise the projects of its instruments' raw files.
    """
    if view.readable is None:
        projects: Iterable[str] = [project.id for project in get_projects()] + [view.fallback_project_id]
    else:
        projects = projects_of_instruments(view.readable) if view.readable else []
    return sorted(set(projects))


def count_by_backup_status(
    filters: RawFileFilter | None = None,
    *,
    view: PageView | None = None,
    stuck_after: timedelta | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Counts per ``backup_status`` (plus ``stuck``, ``pipeline_error``, ``unprotected``) and the filter menus.

    The counts honour every filter except ``backup_status`` itself, so they
    show what choosing a backup status would give. ``pipeline_error``
    (``status`` error), ``stuck`` and ``unprotected`` (older than
    ``backup.deadline_hours`` without a verified backup) overlap the
    per-status counts. Without any filter the total is the collection's
    metadata count (``total_estimated``). The menus: the configured
    instruments and the projects the caller may read.
    """
    filters = filters or RawFileFilter()
    view = view or PageView()
    now = now or datetime.now(UTC)
    stuck_after = stuck_after or stuck_after_from_env()
    found = backup_status_counts(filters, view.context(now, stuck_after))
    return {
        "total": found.total,
        "total_estimated": found.estimated,
        "counts": found.counts,
        STUCK: found.stuck,
        PIPELINE_ERROR: found.pipeline_error,
        UNPROTECTED: found.unprotected,
        "stuck_after_hours": stuck_after.total_seconds() / 3600,
        "deadline_hours": view.deadline.total_seconds() / 3600,
        "instruments": view.instrument_menu(),
        "projects": project_menu(view),
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
    "UNPROTECTED",
    "InvalidFilterError",
    "PageView",
    "RawFileFilter",
    "RawFilePage",
    "acquisition_runs_path",
    "count_by_backup_status",
    "decode_cursor",
    "encode_cursor",
    "format_age",
    "format_size",
    "list_raw_files",
    "project_menu",
    "raw_file_row",
    "stuck_after_from_env",
]
