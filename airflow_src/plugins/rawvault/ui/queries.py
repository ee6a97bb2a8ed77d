"""The Backups page's rows and filters: validated filters, keyset cursors, one page of rows, the chips.

No Airflow imports: the caller (:mod:`rawvault.ui.api`) says which
instruments the user may read (:class:`PageView`). The MongoDB queries (three
groups: failed, stuck, the rest; keyset paging; counts that never scan) are
:mod:`shared.db.backups_view` and :mod:`shared.db.backups_counts`; here each
page position becomes an opaque cursor (each raw document a table row: :mod:`rawvault.ui.rows`).
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

from rawvault.alerts.raw_files import subject_of
from rawvault.ui.rows import (  # the row formatting; re-exported for callers of this module
    acquisition_runs_path,
    format_age,
    format_size,
    raw_file_row,
)
from shared.db.alerts import last_alerts
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
from shared.db.predicates import GROUPS, REST_GROUP, STUCK_GROUP

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
        if not _is_utf8(self.search):
            raise InvalidFilterError("q: not valid text (a lone surrogate); search by the start of a raw file id")
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
    if group not in GROUPS or not isinstance(raw_file_id, str) or not _is_utf8(raw_file_id) or not valid_time:
        raise InvalidFilterError(f"cursor: {_CURSOR_HELP}")
    return Position(group, Key(created_at, raw_file_id)), forward


def _is_utf8(text: str) -> bool:
    """Whether ``text`` can be sent to MongoDB (BSON strings are UTF-8: a lone surrogate is not)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
    alerts = last_alerts(subject_of(str(doc["_id"])) for doc, _group in page.rows)  # one read for the page
    return RawFilePage(
        limit=limit,
        items=[
            raw_file_row(doc, now=now, stuck=group == STUCK_GROUP, last_alert=alerts.get(subject_of(str(doc["_id"]))))
            for doc, group in page.rows
        ],
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
