"""The audit's selection as one value: built once by the command line or the DAG task, taken by audit and scrub."""

from dataclasses import FrozenInstanceError
from datetime import UTC, date, datetime

import pytest

from rawvault.audit import AuditSelection, select_raw_files
from shared.db.models import RawFile
from shared.db.uploaded_filter import uploaded_query


def test_a_negative_sample_is_refused_when_the_selection_is_built() -> None:
    with pytest.raises(ValueError, match="sample must be 0 or more raw files, got -1"):
        AuditSelection(sample=-1)
    assert AuditSelection(sample=0).sample == 0  # 0: all of them


def test_the_selection_is_frozen() -> None:
    with pytest.raises(FrozenInstanceError):
        AuditSelection().sample = 3  # type: ignore[misc]


def test_describe_shows_what_was_given_in_the_reports_order() -> None:
    assert AuditSelection().describe() == {}
    selection = AuditSelection(
        instrument="tims1", since=date(2026, 11, 1), sample=0, seed=7, fallback_project_id="misc"
    )
    # The seed and the fallback project are not filters: the report never showed them.
    assert selection.describe() == {"instrument": "tims1", "since": "2026-11-01", "sample": "0"}
    assert list(AuditSelection(project="P1", raw_file_id="a.d").describe(budget_bytes=5)) == [
        "project", "raw_file_id", "budget_bytes",
    ]  # fmt: skip


def test_the_filters_carry_the_fallback_project_to_the_database_rule() -> None:
    selection = AuditSelection(project="misc", fallback_project_id="misc", since=datetime(2026, 5, 2, tzinfo=UTC))
    assert uploaded_query(**selection.filters()) == {
        "backup_status": "upload_done",
        "project_id": {"$in": ["misc", None]},
        "created_at": {"$gte": datetime(2026, 5, 2, tzinfo=UTC)},
    }
    assert uploaded_query(**AuditSelection().filters()) == {"backup_status": "upload_done"}


def test_select_raw_files_takes_the_selection(mongo_uri: str) -> None:
    for name, project in [("a.raw", "P1"), ("b.raw", None), ("c.raw", "P2")]:
        RawFile(
            id=name, original_name=name, instrument_id="thermo1", project_id=project, backup_status="upload_done",
            created_at=datetime(2026, 11, 1, tzinfo=UTC),
        ).save(force_insert=True)  # fmt: skip
    chosen = select_raw_files(AuditSelection(project="misc", fallback_project_id="misc"))
    assert (chosen.raw_file_ids, chosen.matched, chosen.filters) == (["b.raw"], 1, {"project": "misc"})
    sampled = select_raw_files(AuditSelection(sample=2, seed=3))
    assert len(sampled.raw_file_ids) == 2 and sampled.matched == 3 and sampled.filters == {"sample": "2"}
