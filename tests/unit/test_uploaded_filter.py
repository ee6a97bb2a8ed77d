"""The one filter of the upload_done raw files that verify, the sample and the scrub select by."""

from datetime import UTC, date, datetime

import pytest

from shared.db.uploaded_filter import uploaded_query


def test_no_filter_is_every_uploaded_raw_file() -> None:
    assert uploaded_query() == {"backup_status": "upload_done"}


def test_each_filter_narrows_through_an_indexed_field() -> None:
    query = uploaded_query(instrument="tims1", project="P1", raw_file_id="a.d", since=date(2026, 5, 2))
    assert query == {
        "backup_status": "upload_done",
        "instrument_id": "tims1",
        "project_id": "P1",
        "_id": "a.d",
        "created_at": {"$gte": datetime(2026, 5, 2, tzinfo=UTC)},
    }


def test_the_fallback_project_also_takes_raw_files_without_a_project() -> None:
    assert uploaded_query(project="_FALLBACK")["project_id"] == {"$in": ["_FALLBACK", None]}
    assert uploaded_query(project="misc", fallback_project_id="misc")["project_id"] == {"$in": ["misc", None]}


def test_a_naive_since_is_utc() -> None:
    assert uploaded_query(since=datetime(2026, 5, 2, 7))["created_at"] == {"$gte": datetime(2026, 5, 2, 7, tzinfo=UTC)}


def test_a_misspelt_filter_is_refused_rather_than_widening_the_selection() -> None:
    with pytest.raises(TypeError, match=r"unknown filter\(s\) \['instrument_id'\].*use \["):
        uploaded_query(instrument_id="tims1")  # type: ignore[call-arg]
