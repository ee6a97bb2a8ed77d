"""Record the MongoDB commands code sends and check each one's shape against the declared indexes.

The rules are MongoDB's query planner's, reduced to what decides whether a
query reads a bounded part of an index or the whole collection (production
runs ``mongo:8.0``; the wire server of the tests plans differently, so the
check reads the commands, never that server's ``explain``):

- **bounded**: the first field of some declared index has an equality,
  ``$in``, range or anchored case-sensitive prefix-regex predicate, so MongoDB
  scans only that part of the index (``$ne``, ``$nin``, ``$not``, ``$exists``,
  ``$type``, ... bound nothing: they are filters on what was read);
- **sort provided**: after the index fields with an equality or ``$in``
  predicate (``$in`` is exploded into one scan per value and merged), the next
  index fields are the sort's fields in its order, all in the index's
  direction or all reversed; otherwise MongoDB sorts in memory;
- no unanchored or case-insensitive regex (they read every key);
- ``$or``: every branch bounded on its own;
- an unfiltered ``find`` only with a sort an index provides and a ``limit``;
  an unfiltered ``count`` is the collection's metadata count
  (``estimated_document_count``); the small reference collections
  (:data:`SMALL_COLLECTIONS`) are not checked;
- ``aggregate`` starts with a bounded ``$match`` (a ``$group`` or
  ``countDocuments`` over the whole collection is a scan); ``distinct`` needs a
  bounded query.

The commands come from :mod:`tests.command_recorder`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bson.regex import Regex

from tests.command_recorder import READ_COMMANDS, Command

WRITE_COMMANDS = frozenset({"update", "delete", "findAndModify"})
# Collections small by nature (one document per project or per S3 bucket): reading all of them is fine.
SMALL_COLLECTIONS = frozenset({"project", "s3_store"})
_BOUNDING_OPS = frozenset({"$eq", "$in", "$gt", "$gte", "$lt", "$lte", "$regex"})
_RESIDUAL_OPS = frozenset(
    {"$ne", "$nin", "$not", "$exists", "$type", "$size", "$elemMatch", "$all", "$mod", "$options"}
)
_FORBIDDEN_TOP = frozenset({"$expr", "$where", "$text", "$nor"})
_REGEX_META = set(".^$*+?()[]{}|\\")
_AGGREGATE_STAGES = frozenset({"$group", "$project", "$limit", "$count", "$sort", "$skip", "$addFields"})
_IGNORED = frozenset(
    {"getMore", "killCursors", "insert", "createIndexes", "listIndexes", "dropIndexes", "endSessions", "ping",
     "hello", "isMaster", "ismaster", "buildInfo", "buildinfo", "dropDatabase", "listCollections", "create"}
)  # fmt: skip


@dataclass(frozen=True)
class Index:
    """One declared index: its name and ``(field, direction)`` pairs."""

    name: str
    fields: tuple[tuple[str, int], ...]

    @property
    def first(self) -> str:
        return self.fields[0][0]


ID_INDEX = Index("_id_", (("_id", 1),))


def declared_indexes(document_cls: Any) -> list[Index]:
    """The indexes a mongoengine ``Document`` declares (``meta['indexes']``) plus ``_id``."""
    indexes = [ID_INDEX]
    for spec in document_cls._meta.get("index_specs") or []:
        fields = tuple((str(name), int(direction)) for name, direction in spec["fields"])
        name = spec.get("name") or "_".join(f"{name}_{direction}" for name, direction in fields)
        indexes.append(Index(name, fields))
    return indexes


# --- predicates -------------------------------------------------------------------------------------


@dataclass
class Predicates:
    """What one conjunctive filter (a branch of any ``$or``) says about each field."""

    points: dict[str, int] = field(default_factory=dict)  # field -> number of values (1: equality)
    ranges: set[str] = field(default_factory=set)
    residual: set[str] = field(default_factory=set)

    def bounding(self, name: str) -> bool:
        return name in self.points or name in self.ranges

    @property
    def fields(self) -> set[str]:
        return set(self.points) | self.ranges | self.residual


class ShapeError(ValueError):
    """A query MongoDB cannot answer from a bounded part of an index."""


def _regex_prefix(pattern: str, flags: str) -> str:
    """The literal prefix an anchored case-sensitive regex bounds; raises for any other regex."""
    if "i" in flags:
        raise ShapeError(f"case-insensitive regex /{pattern}/{flags}: MongoDB reads every index key")
    if not pattern.startswith("^") or pattern.startswith("^.*"):
        raise ShapeError(f"unanchored regex /{pattern}/: MongoDB reads every index key")
    prefix = ""
    for char in pattern[1:]:
        if char in _REGEX_META:
            break
        prefix += char
    if not prefix:
        raise ShapeError(f"regex /{pattern}/ has no literal prefix to bound an index range")
    return prefix


def _regex_of(value: Any) -> tuple[str, str] | None:
    if isinstance(value, re.Pattern):
        flags = "i" if value.flags & re.IGNORECASE else ""
        return value.pattern, flags
    if isinstance(value, Regex):
        return value.pattern, str(value.flags) if isinstance(value.flags, str) else ("i" if value.flags & 2 else "")
    return None


def _add_field(preds: Predicates, name: str, value: Any) -> None:
    regex = _regex_of(value)
    if regex is not None:
        _regex_prefix(*regex)
        preds.ranges.add(name)
        return
    if not isinstance(value, Mapping) or not any(str(key).startswith("$") for key in value):
        preds.points[name] = 1
        return
    for op, operand in value.items():
        if op == "$eq":
            preds.points[name] = 1
        elif op == "$in":
            for item in operand:
                if _regex_of(item) is not None:
                    _regex_prefix(*_regex_of(item))  # type: ignore[misc]
            preds.points[name] = max(1, len(operand))
        elif op == "$regex":
            _regex_prefix(str(operand), str(value.get("$options", "")))
            preds.ranges.add(name)
        elif op in _BOUNDING_OPS:
            preds.ranges.add(name)
        elif op in _RESIDUAL_OPS:
            if op == "$not" and _regex_of(operand) is not None:
                raise ShapeError(f"negated regex on {name}: MongoDB reads every index key")
            preds.residual.add(name)
        else:
            raise ShapeError(f"operator {op} on {name} is not understood by the shape check")
    if name in preds.points or name in preds.ranges:
        preds.residual.discard(name)


def branches(query: Mapping[str, Any]) -> list[Predicates]:
    """The conjunctive branches of ``query`` (one per combination of its ``$or`` alternatives)."""
    base = Predicates()
    alternatives: list[list[Mapping[str, Any]]] = []
    for key, value in query.items():
        if key in _FORBIDDEN_TOP:
            raise ShapeError(f"{key} cannot use an index")
        if key == "$and":
            for part in value:
                nested = branches(part)
                if len(nested) == 1:
                    _merge(base, nested[0])
                else:
                    alternatives.append([part])
        elif key == "$or":
            alternatives.append(list(value))
        else:
            _add_field(base, key, value)
    result = [base]
    for options in alternatives:
        expanded = []
        for current in result:
            for option in options:
                for branch in branches(option):
                    combined = Predicates(dict(current.points), set(current.ranges), set(current.residual))
                    _merge(combined, branch)
                    expanded.append(combined)
        result = expanded
    return result


def _merge(target: Predicates, other: Predicates) -> None:
    for name, count in other.points.items():
        target.points[name] = min(target.points.get(name, count), count)
    target.ranges |= other.ranges
    target.residual |= other.residual - set(target.points) - target.ranges


# --- the planner's rules ----------------------------------------------------------------------------


def sort_provided(index: Index, preds: Predicates, sort: Sequence[tuple[str, int]]) -> bool:
    """Whether walking ``index`` (either way) yields ``sort`` order for the documents ``preds`` selects."""
    sort_fields = [name for name, _ in sort]
    position = 0
    while (
        position < len(index.fields)
        and index.fields[position][0] not in sort_fields
        and index.fields[position][0] in preds.points
    ):
        position += 1
    if len(index.fields) - position < len(sort):
        return False
    sign = 0
    for offset, (name, direction) in enumerate(sort):
        index_name, index_direction = index.fields[position + offset]
        if index_name != name:
            return False
        this = 1 if index_direction == direction else -1
        if sign and this != sign:
            return False
        sign = this
    return True


def _sort_pairs(sort: Any) -> list[tuple[str, int]]:
    if not sort:
        return []
    items = sort.items() if isinstance(sort, Mapping) else sort
    return [(str(name), int(direction)) for name, direction in items]


def check_query(
    query: Mapping[str, Any],
    indexes: Sequence[Index],
    *,
    sort: Any = None,
    limit: int = 0,
) -> None:
    """Raise :class:`ShapeError` unless MongoDB answers ``query`` (and ``sort``) from a bounded index range."""
    sort_pairs = _sort_pairs(sort)
    for preds in branches(query):
        if preds.points.get("_id") == 1:
            continue  # one document at most (MongoDB's _id point lookup): nothing to scan or sort
        if not preds.fields:
            if sort_pairs and limit and any(sort_provided(i, preds, sort_pairs) for i in indexes):
                continue
            raise ShapeError("no predicate: MongoDB scans the whole collection")
        bounded = [index for index in indexes if preds.bounding(index.first)]
        if not bounded:
            raise ShapeError(
                f"no declared index starts with a field this query bounds ({sorted(preds.fields)}): collection scan"
            )
        if sort_pairs and not any(sort_provided(index, preds, sort_pairs) for index in bounded):
            names = ", ".join(index.name for index in bounded)
            raise ShapeError(f"sort {sort_pairs} is not the order of any bounded index ({names}): in-memory sort")


def check_command(command: Command, indexes_by_collection: Mapping[str, Sequence[Index]]) -> str | None:
    """A problem with one command (a readable sentence), or ``None`` when MongoDB answers it from an index."""
    if command.name in _IGNORED or (command.name not in READ_COMMANDS and command.name not in WRITE_COMMANDS):
        return None
    indexes = indexes_by_collection.get(command.collection)
    if indexes is None:
        return f"{command}: no declared indexes for collection {command.collection!r}"
    if command.collection in SMALL_COLLECTIONS:
        return None
    body = command.body
    try:
        if command.name == "find":
            check_query(body.get("filter") or {}, indexes, sort=body.get("sort"), limit=int(body.get("limit") or 0))
        elif command.name == "count":
            if body.get("query"):
                check_query(body["query"], indexes)
        elif command.name == "distinct":
            if not body.get("query"):
                raise ShapeError(f"distinct of {body.get('key')} over the whole collection")
            check_query(body["query"], indexes)
        elif command.name == "aggregate":
            _check_pipeline(list(body.get("pipeline") or []), indexes)
        elif command.name in WRITE_COMMANDS:
            for query in _write_queries(command):
                check_query(query, indexes)
    except ShapeError as error:
        return f"{command}: {error}"
    return None


def _write_queries(command: Command) -> list[Mapping[str, Any]]:
    if command.name == "update":
        return [statement.get("q") or {} for statement in command.body.get("updates") or []]
    if command.name == "delete":
        return [statement.get("q") or {} for statement in command.body.get("deletes") or []]
    return [command.body.get("query") or {}]


def _check_pipeline(pipeline: list[Mapping[str, Any]], indexes: Sequence[Index]) -> None:
    if not pipeline or "$match" not in pipeline[0]:
        stage = next(iter(pipeline[0])) if pipeline else "(empty)"
        raise ShapeError(f"aggregate starts with {stage}, not a $match: it reads the whole collection")
    match = pipeline[0]["$match"]
    if not match:
        raise ShapeError("aggregate $match {} (a countDocuments without filter): it reads the whole collection")
    sort = pipeline[1].get("$sort") if len(pipeline) > 1 else None
    check_query(match, indexes, sort=sort)
    for stage in pipeline[1:]:
        name = next(iter(stage))
        if name not in _AGGREGATE_STAGES:
            raise ShapeError(f"stage {name} is not allowed by the shape check")


def problems(commands: Sequence[Command], indexes_by_collection: Mapping[str, Sequence[Index]]) -> list[str]:
    """Every problem found in ``commands``."""
    found = (check_command(command, indexes_by_collection) for command in commands)
    return [problem for problem in found if problem]
