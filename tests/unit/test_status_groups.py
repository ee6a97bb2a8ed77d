"""The status groups on BackupStatus: what each rule means, and that they never drift apart."""

from __future__ import annotations

from shared.db.models import BackupStatus, RawFile

ALL = frozenset(status.value for status in BackupStatus)
GROUPS = {
    "FAILED": BackupStatus.FAILED,
    "IN_PROGRESS": BackupStatus.IN_PROGRESS,
    "PAST_LOCAL_COPY": BackupStatus.PAST_LOCAL_COPY,
    "LOCAL_COPY_VERIFIED": BackupStatus.LOCAL_COPY_VERIFIED,
    "CLAIMABLE": BackupStatus.CLAIMABLE,
}


def test_groups_are_sets_of_status_values_not_statuses() -> None:
    for name, group in GROUPS.items():
        assert isinstance(group, frozenset), name
        assert group and group <= ALL, name
    assert len(list(BackupStatus)) == 7  # the contract's seven values, no group among them
    assert set(RawFile.backup_status.choices) == ALL


def test_members_match_their_values() -> None:
    # Members are str: "x in group" works for a document's value and for a member alike.
    assert BackupStatus.UPLOAD_FAILED in BackupStatus.FAILED
    assert "upload_failed" in BackupStatus.FAILED


def test_failed_and_in_progress() -> None:
    assert {"copying_failed", "upload_failed"} == BackupStatus.FAILED
    assert {"copying_in_progress", "upload_in_progress"} == BackupStatus.IN_PROGRESS
    assert not BackupStatus.FAILED & BackupStatus.IN_PROGRESS
    # With the settled statuses they cover every status: the Backups page's groups miss none.
    settled = {"copying_done", "upload_done", "skipped"}
    assert BackupStatus.FAILED | BackupStatus.IN_PROGRESS | settled == ALL


def test_past_local_copy_is_every_upload_status() -> None:
    assert {status for status in ALL if status.startswith("upload_")} == BackupStatus.PAST_LOCAL_COPY


def test_local_copy_verified_is_copying_done_and_past_it() -> None:
    assert BackupStatus.PAST_LOCAL_COPY | {"copying_done"} == BackupStatus.LOCAL_COPY_VERIFIED
    assert not BackupStatus.LOCAL_COPY_VERIFIED & {"copying_in_progress", "copying_failed", "skipped"}


def test_an_upload_claims_only_raw_files_with_a_verified_local_copy() -> None:
    assert BackupStatus.CLAIMABLE <= BackupStatus.LOCAL_COPY_VERIFIED
    assert {"copying_done", "upload_failed", "upload_in_progress", "upload_done"} == BackupStatus.CLAIMABLE
