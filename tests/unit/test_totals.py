"""Totals per instrument and project (issue 17 item 2): the fold of the groups, "verified" per backup type."""

from __future__ import annotations

from types import SimpleNamespace

from rawvault.alerts.totals import verified_statuses
from shared.db.totals import fold_totals

GROUPS = [
    {"project_id": "P1", "backup_status": "upload_done", "raw_files": 3, "bytes": 3000},
    {"project_id": "P1", "backup_status": "upload_failed", "raw_files": 1, "bytes": 500},
    {"project_id": "P1", "backup_status": "copying_done", "raw_files": 2, "bytes": 200},
    {"project_id": "P0", "backup_status": None, "raw_files": 1, "bytes": 0},  # registered, no backup yet
    {"project_id": None, "backup_status": "skipped", "raw_files": 1, "bytes": 7},
]


def test_groups_fold_into_one_row_per_project_with_the_verified_share() -> None:
    rows = fold_totals(GROUPS, frozenset({"upload_done"}))
    assert rows == [
        {"project_id": "P0", "raw_files": 1, "bytes": 0, "verified_raw_files": 0, "verified_bytes": 0},
        {"project_id": "P1", "raw_files": 6, "bytes": 3700, "verified_raw_files": 3, "verified_bytes": 3000},
        {"project_id": None, "raw_files": 1, "bytes": 7, "verified_raw_files": 0, "verified_bytes": 0},
    ]


def test_with_backup_type_local_a_verified_local_copy_counts() -> None:
    by, statuses = verified_statuses(SimpleNamespace(s3_enabled=False))  # type: ignore[arg-type]
    p1 = fold_totals(GROUPS, statuses)[1]
    assert by == "local" and (p1["verified_raw_files"], p1["verified_bytes"]) == (6, 3700)
    by, statuses = verified_statuses(SimpleNamespace(s3_enabled=True))  # type: ignore[arg-type]
    assert by == "s3" and statuses == {"upload_done"}  # skipped is protected, but not verified in S3


def test_no_raw_files_no_rows() -> None:
    assert fold_totals([], frozenset({"upload_done"})) == []
