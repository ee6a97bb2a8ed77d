"""The Backups page's list: raw files in three groups, one page of them by keyset, only the columns shown.

The groups, each newest first (``created_at``, then ``_id``, both descending),
so what needs attention is on the first page:

1. failed: ``backup_status`` in :attr:`BackupStatus.FAILED`, or ``status``
   ``error`` (a failed monitor, checksum or move);
2. stuck: in progress (:attr:`BackupStatus.IN_PROGRESS`) without an update
   since the cutoff, unless failed;
3. everything else (also raw files whose backup has not started yet). With a
   search (an id prefix) this group is in descending id order instead: the
   ``_id`` index bounds the search, and date-prefixed names stay newest first.

Each group is read as a few :class:`~shared.db.keyset.Stream` s, each a query
an index bounds (see the indexes on ``RawFile``), from a :class:`Position`
(group, ``created_at``, id) forward or back: never a ``skip``, never a sort in
memory, never a count. The rules deciding a row's group are
:mod:`shared.db.predicates`. The caller connects
(:func:`shared.db.interface.connect_db`) and formats the rows (``rawvault.ui.queries``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol

from shared.db.keyset import Bounds, Key, Stream, key_of, prefix_range, read, sort_key
from shared.db.models import BackupStatus
from shared.db.predicates import (
    ALL_BACKUP_STATUSES,
    FAILED_GROUP,
    GROUPS,
    PIPELINE_ERROR_STATUS,
    REST_GROUP,
    STUCK_GROUP,
    group_of,
    is_stuck,
    is_unprotected,
    terminal_status,
    unprotected_statuses,
)

# Pseudo values of the backup_status filter and of the counts, besides the BackupStatus values.
STUCK = "stuck"
NOT_STARTED = "not_started"
PIPELINE_ERROR = "pipeline_error"  # status=error: the monitor, checksum or move failed
UNPROTECTED = "unprotected"  # older than backup.deadline_hours without a verified backup
PSEUDO_BACKUP_STATUSES = (STUCK, NOT_STARTED, PIPELINE_ERROR, UNPROTECTED)

_ENTRIES = {"$objectToArray": {"$ifNull": ["$file_info", {}]}}
# The columns the page shows (and what decides a row's group); a set's size when the document has none.
ROW_PROJECTION: dict[str, Any] = {
    **dict.fromkeys(
        ("_id", "original_name", "instrument_id", "instrument_type", "project_id", "status", "status_details",
         "backup_status", "backup_status_details", "s3_backup_key", "s3_etag", "s3_upload_attempts", "created_at",
         "db_updated_at", "purged_at", "purge_blocked_reason", "scrub_status", "scrub_details", "scrubbed_at",
         "upload_progress"),
        1,
    ),
    "file_count": {"$size": _ENTRIES},
    "size": {"$ifNull": ["$size", {"$cond": [
        {"$gt": [{"$size": _ENTRIES}, 0]},
        {"$sum": {"$map": {"input": _ENTRIES, "in": {"$arrayElemAt": ["$$this.v", 0]}}}},
        None,
    ]}]},
}  # fmt: skip


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
    def search(self) -> str: ...  # the start of the raw file id, case-sensitive


@dataclass(frozen=True)
class ViewContext:
    """What the page's rules need besides the filters."""

    now: datetime
    cutoff: datetime  # in progress without an update since: stuck
    overdue_before: datetime  # created before, without a verified backup: unprotected
    s3: bool  # backup_type s3 (protected = upload_done) or local
    instruments: frozenset[str] | None = None  # the instruments the caller may read; None: every one


@dataclass(frozen=True)
class Position:
    """Where a row is in the list: its group and its key in that group."""

    group: int
    key: Key


@dataclass
class PageOfRows:
    """One page of raw documents with their group, and where the pages next to it start."""

    rows: list[tuple[dict[str, Any], int]] = field(default_factory=list)
    next: Position | None = None
    previous: Position | None = None


def _in(values: Any) -> Any:
    values = list(values)
    return values[0] if len(values) == 1 else {"$in": values}


def filter_query(filters: RawFileQuery, ctx: ViewContext) -> dict[str, Any] | None:
    """Every filter but ``backup_status`` as bounding predicates; ``None`` when nothing can match."""
    query: dict[str, Any] = {}
    instruments = list(filters.instrument)
    if ctx.instruments is not None:
        instruments = [i for i in instruments if i in ctx.instruments] if instruments else sorted(ctx.instruments)
        if not instruments:
            return None
    if instruments:
        query["instrument_id"] = _in(instruments)
    if filters.project:
        query["project_id"] = _in(filters.project)
    if filters.status:
        query["status"] = _in(filters.status)
    created = Bounds()
    if filters.created_from:
        created = Bounds(lower=datetime.combine(filters.created_from, time.min, tzinfo=UTC))
    if filters.created_to and filters.created_to < date.max:  # the last day a date holds: nothing after it
        end = datetime.combine(filters.created_to + timedelta(days=1), time.min, tzinfo=UTC)
        created = created & Bounds(upper=end, upper_inclusive=False)
    if created.predicate():
        query["created_at"] = created.predicate()
    if filters.search:
        query["_id"] = prefix_range(filters.search)
    return query


def merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any] | None:
    """Both filters at once (equalities and ``$in`` intersected, ranges tightened); ``None`` if they exclude."""
    merged = dict(base)
    for name, predicate in extra.items():
        if name not in merged:
            merged[name] = predicate
        elif name in ("created_at", "_id"):
            bounds = Bounds.of(merged[name]) & Bounds.of(predicate)
            if bounds.empty:
                return None
            merged[name] = bounds.predicate()
        else:
            values = [v for v in _values(merged[name]) if v in _values(predicate)]
            if not values:
                return None
            merged[name] = _in(values)
    return merged


def _values(predicate: Any) -> list[Any]:
    return list(predicate["$in"]) if isinstance(predicate, Mapping) else [predicate]


@dataclass(frozen=True)
class Term:
    """One value of the backup_status filter: the backup statuses it takes and what else a row must be."""

    statuses: tuple[str | None, ...]
    error: bool | None = None  # status error: required, excluded, either
    stuck: bool | None = None  # stuck: required, excluded, either
    bounds: Mapping[str, Any] = field(default_factory=dict)  # more bounding predicates
    test: Callable[[Mapping[str, Any]], bool] | None = None

    def accepts(self, row: Mapping[str, Any], ctx: ViewContext) -> bool:
        if self.statuses is not ALL_BACKUP_STATUSES and row.get("backup_status") not in self.statuses:
            return False
        if self.error is not None and (row.get("status") == PIPELINE_ERROR_STATUS) != self.error:
            return False
        if self.stuck is not None and is_stuck(row, ctx.cutoff) != self.stuck:
            return False
        return self.test is None or self.test(row)


EVERY = Term(ALL_BACKUP_STATUSES)


def term_of(value: str, ctx: ViewContext) -> Term:
    """The rows one backup_status filter value selects."""
    if value == STUCK:
        return Term(tuple(sorted(BackupStatus.IN_PROGRESS)), error=False, stuck=True)
    if value == NOT_STARTED:
        return Term((None,))
    if value == PIPELINE_ERROR:
        return Term(ALL_BACKUP_STATUSES, error=True)
    if value == UNPROTECTED:
        return Term(
            tuple(unprotected_statuses(ctx.s3)),
            bounds={"created_at": {"$lte": ctx.overdue_before}},
            test=lambda row: is_unprotected(row, s3=ctx.s3, overdue_before=ctx.overdue_before),
        )
    return Term((value,))


def _streams(group: int, term: Term, base: Mapping[str, Any], ctx: ViewContext, search: bool) -> list[Stream]:
    """The bounded queries that together read ``group`` ∩ ``term`` ∩ the filters."""

    def keep(row: Mapping[str, Any]) -> bool:
        return group_of(row, ctx.cutoff) == group and term.accepts(row, ctx)

    if group == FAILED_GROUP and term.error is not False:
        failed = [s for s in term.statuses if s in BackupStatus.FAILED]
        others = [s for s in term.statuses if s not in BackupStatus.FAILED]
        parts = [{"backup_status": _in(failed)}] if failed else []
        if parts and term.error:
            parts[0]["status"] = PIPELINE_ERROR_STATUS
        if others:
            parts.append({"status": PIPELINE_ERROR_STATUS, "backup_status": _in(others)})
        return _bounded(parts, base, term, keep)
    if group == STUCK_GROUP and term.error is not True and term.stuck is not False:
        in_progress = [s for s in term.statuses if s in BackupStatus.IN_PROGRESS]
        return _bounded([{"backup_status": _in(in_progress)}] if in_progress else [], base, term, keep)
    if group != REST_GROUP or term.error is True or term.stuck is True:
        return []
    if term is EVERY:
        # The whole collection but the few failed and stuck rows: the created_at index (per instrument too)
        # gives the order; with a project or status filter, its index with every backup status but failed.
        query = dict(base)
        if search or not set(base) - {"instrument_id", "created_at"}:
            return [Stream(query, keep, by_id=search, windowed=not search and _windowable(query))]
        query["backup_status"] = _in([s for s in ALL_BACKUP_STATUSES if s not in BackupStatus.FAILED])
        return [Stream(query, keep, windowed=_windowable(query))]
    plain = [s for s in term.statuses if s not in BackupStatus.FAILED and s not in BackupStatus.IN_PROGRESS]
    in_progress = [s for s in term.statuses if s in BackupStatus.IN_PROGRESS]
    parts = [{"backup_status": _in(part)} for part in (plain, in_progress) if part]
    large = terminal_status(ctx.s3)
    return [
        Stream(stream.query, stream.keep, by_id=search,
               windowed=not search and large in term.statuses and _windowable(stream.query))
        for stream in _bounded(parts, base, term, keep)
    ]  # fmt: skip


def _windowable(query: Mapping[str, Any]) -> bool:
    """Whether reading in created_at windows narrows what is read: only besides plain equalities.

    MongoDB walks the index either way; the wire server of the tests reads a
    query's whole candidate set, and bounds it by a range only after equalities.
    """
    return all(name == "created_at" or not isinstance(value, Mapping) for name, value in query.items())


def _bounded(parts: list[dict[str, Any]], base: Mapping[str, Any], term: Term, keep: Any) -> list[Stream]:
    streams = []
    for part in parts:
        query = merge(base, {**part, **term.bounds})
        if query is not None:
            streams.append(Stream(query, keep))
    return streams


def _read_group(
    streams: list[Stream], after: Key | None, forward: bool, want: int, ctx: ViewContext
) -> list[dict[str, Any]]:
    """The group's next ``want`` rows in reading order: each stream's, merged (a row two terms select, once)."""
    found: dict[str, dict[str, Any]] = {}
    for stream in streams:
        for row in read(stream, after=after, forward=forward, want=want, now=ctx.now, projection=ROW_PROJECTION):
            found.setdefault(str(row["_id"]), row)
    by_id = bool(streams) and streams[0].by_id
    return sorted(found.values(), key=lambda row: sort_key(row, by_id), reverse=forward)[:want]


def page_of_raw_files(
    filters: RawFileQuery, ctx: ViewContext, *, start: Position | None = None, forward: bool = True, limit: int = 50
) -> PageOfRows:
    """``limit`` rows after ``start`` (forward) or before it (back; ``start`` None: the first page)."""
    base = filter_query(filters, ctx)
    if base is None or (start is None and not forward):
        return PageOfRows()
    terms = [term_of(value, ctx) for value in filters.backup_status] or [EVERY]
    search = bool(filters.search)
    first_group = start.group if start else FAILED_GROUP
    groups = [g for g in GROUPS if g >= first_group] if forward else [g for g in reversed(GROUPS) if g <= first_group]
    found: list[tuple[dict[str, Any], int]] = []
    for group in groups:
        streams = [stream for term in terms for stream in _streams(group, term, base, ctx, search)]
        after = start.key if start is not None and group == start.group else None
        rows = _read_group(streams, after, forward, limit + 1 - len(found), ctx)
        found += [(row, group) for row in rows]
        if len(found) > limit:
            break
    more = len(found) > limit
    found = found[:limit]
    if not forward:
        found.reverse()
    if not found:
        return PageOfRows(previous=start if forward else None, next=None if forward else start)

    def position(item: tuple[dict[str, Any], int]) -> Position:
        return Position(item[1], key_of(item[0], by_id=search and item[1] == REST_GROUP))

    return PageOfRows(
        rows=found,
        next=position(found[-1]) if (more or not forward) else None,
        previous=position(found[0]) if (start is not None if forward else more) else None,
    )


__all__ = [
    "NOT_STARTED",
    "PIPELINE_ERROR",
    "PSEUDO_BACKUP_STATUSES",
    "ROW_PROJECTION",
    "STUCK",
    "UNPROTECTED",
    "PageOfRows",
    "Position",
    "RawFileQuery",
    "ViewContext",
    "filter_query",
    "merge",
    "page_of_raw_files",
    "term_of",
]
