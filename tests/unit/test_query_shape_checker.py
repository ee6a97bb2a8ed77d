"""The query-shape checker (tests/query_shapes.py) applies MongoDB's planner rules as documented."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from tests.command_recorder import Command
from tests.query_shapes import ID_INDEX, Index, ShapeError, check_command, check_query

T = datetime(2026, 1, 1, tzinfo=UTC)
BY_STATUS = Index("bs", (("backup_status", 1), ("created_at", 1), ("_id", 1)))
BY_INSTRUMENT = Index("inst", (("instrument_id", 1), ("backup_status", 1), ("created_at", 1), ("_id", 1)))
BY_CREATED = Index("created", (("created_at", 1), ("_id", 1)))
INDEXES = [ID_INDEX, BY_STATUS, BY_INSTRUMENT, BY_CREATED]
NEWEST = {"created_at": -1, "_id": -1}


@pytest.mark.parametrize(
    ("query", "sort", "limit"),
    [
        ({"backup_status": "upload_failed"}, NEWEST, 0),
        ({"backup_status": {"$in": ["upload_failed", "copying_failed"]}}, NEWEST, 0),  # exploded, merged
        ({"backup_status": "upload_done", "created_at": {"$lte": T}}, NEWEST, 51),
        ({"instrument_id": "t1", "backup_status": "upload_done", "created_at": {"$gte": T}}, {"created_at": 1}, 0),
        ({"created_at": {"$gt": T}, "status": {"$ne": "error"}}, NEWEST, 0),  # a residual filter is fine
        ({}, NEWEST, 50),  # newest 50 by the created_at index
        ({"_id": {"$gte": "2026", "$lt": "2027"}}, {"_id": -1}, 0),
        ({"_id": re.compile("^2026_P1")}, None, 0),
        ({"$or": [{"backup_status": "upload_failed"}, {"instrument_id": "t1"}]}, None, 0),
        ({"backup_status": None}, None, 0),
    ],
)
def test_queries_mongodb_answers_from_an_index(query, sort, limit) -> None:
    check_query(query, INDEXES, sort=sort, limit=limit)


@pytest.mark.parametrize(
    ("query", "sort", "limit", "message"),
    [
        ({}, None, 0, "no predicate"),
        ({}, NEWEST, 0, "no predicate"),  # the whole index without a limit
        ({"status": "error"}, None, 0, "no declared index starts with a field"),
        ({"backup_status": {"$nin": ["upload_done"]}}, None, 0, "no declared index starts with a field"),
        ({"backup_status": {"$ne": "upload_done"}}, None, 0, "no declared index starts with a field"),
        ({"backup_status": "upload_done"}, {"created_at": -1, "_id": 1}, 0, "in-memory sort"),  # mixed directions
        ({"backup_status": {"$gt": "a"}}, NEWEST, 0, "in-memory sort"),  # a range before the sort fields
        ({"instrument_id": "t1"}, NEWEST, 0, "in-memory sort"),  # backup_status between them
        ({"_id": re.compile("raw", re.IGNORECASE)}, None, 0, "case-insensitive regex"),
        ({"_id": re.compile("done")}, None, 0, "unanchored regex"),
        ({"_id": re.compile("^(a|b)")}, None, 0, "no literal prefix"),
        ({"$or": [{"backup_status": "upload_failed"}, {"status": "error"}]}, None, 0, "no declared index"),
        ({"$expr": {"$eq": ["$a", "$b"]}}, None, 0, r"\$expr cannot use an index"),
    ],
)
def test_queries_mongodb_would_scan_or_sort_in_memory(query, sort, limit, message: str) -> None:
    with pytest.raises(ShapeError, match=message):
        check_query(query, INDEXES, sort=sort, limit=limit)


def _problem(name: str, **body) -> str | None:
    return check_command(Command(name, "raw_file", {name: "raw_file", **body}), {"raw_file": INDEXES})


def test_commands() -> None:
    assert _problem("count", query={}) is None  # estimated_document_count: the collection's metadata
    assert _problem("count", query={"status": "error"}) is not None
    assert "distinct of project_id over the whole collection" in _problem("distinct", key="project_id", query={})
    count_all = [{"$match": {}}, {"$group": {"_id": 1, "n": {"$sum": 1}}}]
    assert "countDocuments without filter" in _problem("aggregate", pipeline=count_all)
    group_all = [{"$group": {"_id": "$backup_status", "n": {"$sum": 1}}}]
    assert "starts with $group" in _problem("aggregate", pipeline=group_all)
    small_groups = [{"$match": {"backup_status": {"$in": ["upload_failed", None]}}}, group_all[0]]
    assert _problem("aggregate", pipeline=small_groups) is None
    assert _problem("update", updates=[{"q": {"_id": "a.raw"}, "u": {"$set": {"x": 1}}}]) is None
    assert "no predicate" in _problem("update", updates=[{"q": {}, "u": {"$set": {"x": 1}}}])
    assert _problem("getMore", collection="raw_file") is None
    unknown = check_command(Command("find", "other", {"find": "other", "filter": {}}), {"raw_file": INDEXES})
    assert "no declared indexes for collection 'other'" in unknown
