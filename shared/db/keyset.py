"""Keyset reads of ``raw_file``: the rows of one bounded query after (or before) a position, never a ``skip``.

A :class:`Stream` is a filter an index bounds (equalities, ``$in``, ranges)
plus a Python test of each row (the rules of :mod:`shared.db.predicates`).
:func:`read` returns its next rows in the list's order, newest first on
``(created_at, _id)`` (or on ``_id`` alone, for a search by id prefix),
from a :class:`Key`: ``created_at <= t`` walks the index from the position
(the rows at ``t`` itself and up to the position's id are skipped).

A *windowed* stream (one that holds most of the collection) is read in
``created_at`` windows that grow eightfold, from one day: MongoDB walks the
same index either way, but each query then names the range it reads, which
the MongoDB wire server of the tests needs (it reads every document a query
could match before it applies the limit).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.db.models import RawFile

CREATED, ID = "created_at", "_id"
FIRST_WINDOW = timedelta(days=1)
WINDOW_GROWTH = 8
# Windows stop here (and the last query reads everything older): no acquisition is from before 1990.
OLDEST = datetime(1990, 1, 1, tzinfo=UTC)
NEWEST_SLACK = timedelta(days=1)  # created_at of a clock running ahead: read by the last, open window
MAX_BATCH = 500


@dataclass(frozen=True)
class Key:
    """A row's place in its group: ``(created_at, id)``, or the id alone in id order (``created_at`` None)."""

    created_at: datetime | None
    raw_file_id: str


@dataclass(frozen=True)
class Bounds:
    """A range of one field; ``None`` ends are open."""

    lower: Any = None
    lower_inclusive: bool = True
    upper: Any = None
    upper_inclusive: bool = True

    @classmethod
    def of(cls, predicate: Any) -> Bounds:
        """The range a ``{"$gte": ..., "$lt": ...}`` predicate (or an equality) describes."""
        if not isinstance(predicate, Mapping):
            return cls(predicate, True, predicate, True) if predicate is not None else cls()
        bounds = cls()
        for op, value in predicate.items():
            part = {
                "$gt": cls(lower=value, lower_inclusive=False),
                "$gte": cls(lower=value),
                "$lt": cls(upper=value, upper_inclusive=False),
                "$lte": cls(upper=value),
                "$eq": cls(value, True, value, True),
            }.get(op)
            if part is None:
                raise ValueError(f"range predicate {predicate!r}: {op} is not a range operator")
            bounds = bounds & part
        return bounds

    def __and__(self, other: Bounds) -> Bounds:
        lower, lower_inclusive = _tighter(
            (self.lower, self.lower_inclusive), (other.lower, other.lower_inclusive), larger=True
        )
        upper, upper_inclusive = _tighter(
            (self.upper, self.upper_inclusive), (other.upper, other.upper_inclusive), larger=False
        )
        return Bounds(lower, lower_inclusive, upper, upper_inclusive)

    @property
    def empty(self) -> bool:
        if self.lower is None or self.upper is None:
            return False
        closed = self.lower_inclusive and self.upper_inclusive
        return self.lower > self.upper or (self.lower == self.upper and not closed)

    def predicate(self) -> dict[str, Any] | None:
        """The MongoDB range (``None``: no bound at all)."""
        found: dict[str, Any] = {}
        if self.lower is not None:
            found["$gte" if self.lower_inclusive else "$gt"] = self.lower
        if self.upper is not None:
            found["$lte" if self.upper_inclusive else "$lt"] = self.upper
        return found or None


def _tighter(a: tuple[Any, bool], b: tuple[Any, bool], *, larger: bool) -> tuple[Any, bool]:
    """The tighter of two ends of a range (``larger``: of two lower ends); at a tie the exclusive one."""
    (a_value, a_inclusive), (b_value, b_inclusive) = a, b
    if a_value is None:
        return b
    if b_value is None:
        return a
    if a_value == b_value:
        return a_value, a_inclusive and b_inclusive
    return a if (a_value > b_value) == larger else b


@dataclass(frozen=True)
class Stream:
    """One bounded query of a group and the test its rows must pass; ``by_id``: ordered by id alone."""

    query: Mapping[str, Any]
    keep: Callable[[Mapping[str, Any]], bool]
    by_id: bool = False
    windowed: bool = False


def prefix_range(prefix: str) -> dict[str, str]:
    """Every string starting with ``prefix`` (code point order, as MongoDB compares strings), as a range."""
    end = prefix
    while end and ord(end[-1]) == 0x10FFFF:
        end = end[:-1]
    upper = end[:-1] + _next_code_point(end[-1]) if end else None
    return {"$gte": prefix, "$lt": upper} if upper else {"$gte": prefix}


def _next_code_point(char: str) -> str:
    """The character after ``char`` that BSON can encode: the surrogates (U+D800-U+DFFF) are skipped."""
    following = ord(char) + 1
    return chr(0xE000 if 0xD800 <= following <= 0xDFFF else following)


def key_of(row: Mapping[str, Any], by_id: bool) -> Key:
    """The keyset position of a row read by a stream."""
    created = row.get(CREATED)
    if created is not None and created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return Key(None if by_id else created, str(row[ID]))


def sort_key(row: Mapping[str, Any], by_id: bool) -> tuple[Any, ...]:
    """What the list's order compares (newest first = this, descending)."""
    key = key_of(row, by_id)
    return (key.raw_file_id,) if by_id else (key.created_at, key.raw_file_id)


def read(
    stream: Stream,
    *,
    after: Key | None,
    forward: bool,
    want: int,
    now: datetime,
    projection: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """Up to ``want`` rows of ``stream`` that ``keep`` accepts, after (forward) or before ``after`` in list order.

    Forward rows come newest first, backward rows oldest first (the caller reverses them).
    """
    if want <= 0:
        return []
    if stream.by_id:
        return _read_by_id(stream, after, forward, want, projection)
    if not stream.windowed:
        bounds = Bounds.of(stream.query.get(CREATED)) & _keyset_bounds(after, forward)
        return _fetch(stream, bounds, after, forward, want, projection)
    return _read_windows(stream, after, forward, want, now, projection)


def _keyset_bounds(after: Key | None, forward: bool) -> Bounds:
    if after is None or after.created_at is None:
        return Bounds()
    return Bounds(upper=after.created_at) if forward else Bounds(lower=after.created_at)


def _read_windows(
    stream: Stream, after: Key | None, forward: bool, want: int, now: datetime, projection: Mapping[str, Any]
) -> list[dict[str, Any]]:
    own = Bounds.of(stream.query.get(CREATED)) & _keyset_bounds(after, forward)
    start = now if forward else OLDEST  # without a position: from the newest end forward, the oldest end back
    anchor = after.created_at if after is not None and after.created_at is not None else start
    rows: list[dict[str, Any]] = []
    width = FIRST_WINDOW
    while True:
        edge = anchor - width if forward else anchor + width
        if forward:
            final = edge < OLDEST or (own.lower is not None and edge <= own.lower)
            window = own if final else own & Bounds(lower=edge, lower_inclusive=False)
        else:
            final = edge > now + NEWEST_SLACK or (own.upper is not None and edge >= own.upper)
            window = own if final else own & Bounds(upper=edge, upper_inclusive=False)
        if not window.empty:
            rows += _fetch(stream, window, after, forward, want - len(rows), projection)
        if len(rows) >= want or final:
            return rows
        own = own & (Bounds(upper=edge) if forward else Bounds(lower=edge))
        anchor, width = edge, width * WINDOW_GROWTH


def _read_by_id(
    stream: Stream, after: Key | None, forward: bool, want: int, projection: Mapping[str, Any]
) -> list[dict[str, Any]]:
    bounds = Bounds.of(stream.query.get(ID))
    if after is not None:
        bounds = bounds & (
            Bounds(upper=after.raw_file_id, upper_inclusive=False)
            if forward
            else Bounds(lower=after.raw_file_id, lower_inclusive=False)
        )
    if bounds.empty:
        return []
    query = {**stream.query, ID: bounds.predicate()} if bounds.predicate() else dict(stream.query)
    sort = [(ID, -1 if forward else 1)]
    return _stream_rows(query, sort, stream.keep, want, projection)


def _fetch(
    stream: Stream, bounds: Bounds, after: Key | None, forward: bool, want: int, projection: Mapping[str, Any]
) -> list[dict[str, Any]]:
    if bounds.empty:
        return []
    query = dict(stream.query)
    query.pop(CREATED, None)
    if bounds.predicate():
        query[CREATED] = bounds.predicate()
    direction = -1 if forward else 1
    sort = [(CREATED, direction), (ID, direction)]

    def seen(row: Mapping[str, Any]) -> bool:
        """A row at the position's time up to the position itself: it was on an earlier page."""
        if after is None or after.created_at is None or key_of(row, False).created_at != after.created_at:
            return False
        return str(row[ID]) >= after.raw_file_id if forward else str(row[ID]) <= after.raw_file_id

    def wanted(row: Mapping[str, Any]) -> bool:
        return not seen(row) and stream.keep(row)

    return _stream_rows(query, sort, wanted, want, projection)


def _stream_rows(
    query: Mapping[str, Any],
    sort: list[tuple[str, int]],
    wanted: Callable[[Mapping[str, Any]], bool],
    want: int,
    projection: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """Rows in index order until ``want`` pass ``wanted``; MongoDB reads in batches, so it stops there too."""
    collection = RawFile._get_collection()
    cursor = collection.find(dict(query), dict(projection), sort=sort, batch_size=min(want + 2, MAX_BATCH))
    rows: list[dict[str, Any]] = []
    try:
        for row in cursor:
            if wanted(row):
                rows.append(row)
                if len(rows) >= want:
                    break
    finally:
        cursor.close()
    return rows


__all__ = ["Bounds", "Key", "Stream", "key_of", "prefix_range", "read", "sort_key"]
