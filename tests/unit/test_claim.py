"""The upload claim on an in-memory MongoDB: claim, lost claim, outcome, stale release, the one no-lease rule."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from rawvault import claim as claims
from rawvault.claim import (
    UploadClaimLostError,
    UploadInProgressError,
    UploadNotReadyError,
    UploadSupersededError,
    is_stale,
)
from shared.db.interface import create_raw_file, get_raw_file, update_raw_file, utc_now
from shared.db.models import RawFile

pytest_plugins = ["tests.unit.fakes"]

LEASE = timedelta(minutes=10)


def raw_file(name: str = "a.raw", **fields: object) -> RawFile:
    fields.setdefault("backup_status", "copying_done")
    create_raw_file(name, instrument_id="t1", created_at=utc_now(), **fields)
    return get_raw_file(name)


def age(name: str, by: timedelta) -> RawFile:
    """The document as if it was last written ``by`` ago."""
    RawFile.objects(id=name).update_one(set__db_updated_at=utc_now() - by)
    return get_raw_file(name)


def test_claim_sets_owner_lease_and_attempt(fake_db: None) -> None:
    claim = claims.claim(raw_file(), LEASE)
    doc = get_raw_file("a.raw")
    assert doc.backup_status == "upload_in_progress" and doc.upload_claim_owner == claim.owner
    assert doc.upload_claim_expires_at == claim.expires_at and doc.s3_upload_attempts == claim.attempt == 1
    claim.check()  # held


def test_only_one_of_two_runs_that_read_the_same_document_claims_it(fake_db: None) -> None:
    first_read = raw_file()
    second_read = get_raw_file("a.raw")
    claims.claim(first_read, LEASE)
    with pytest.raises(UploadInProgressError, match=r"being uploaded by another run"):
        claims.claim(second_read, LEASE)


def test_no_verified_copy_is_not_claimable(fake_db: None) -> None:
    with pytest.raises(UploadNotReadyError, match="run copy_raw_file first"):
        claims.claim(raw_file(backup_status="copying_in_progress"), LEASE)


def test_a_retry_for_an_attempt_made_since_is_superseded(fake_db: None) -> None:
    doc = raw_file(s3_upload_attempts=2, backup_status="upload_failed")
    update_raw_file("a.raw", s3_upload_attempts=3)  # another run attempted it after this one read it
    with pytest.raises(UploadSupersededError, match="had 2 upload attempt"):
        claims.claim(doc, LEASE, expected_attempts=2)


def test_a_run_whose_claim_was_taken_over_loses_it_and_records_nothing(fake_db: None) -> None:
    claim = claims.claim(raw_file(), LEASE)
    update_raw_file("a.raw", upload_claim_owner="other:1:x")
    claim.renew()
    with pytest.raises(UploadClaimLostError, match="another run took over its claim"):
        claim.check()
    assert not claims.record_failed(claim, "upload to S3 failed: x")
    assert get_raw_file("a.raw").upload_claim_owner == "other:1:x"


def test_an_expired_lease_is_lost_even_without_a_renewal(fake_db: None) -> None:
    claim = claims.claim(raw_file(), timedelta(seconds=-1))
    with pytest.raises(UploadClaimLostError, match="lease expired"):
        claim.check()


def test_outcome_releases_the_claim(fake_db: None) -> None:
    claim = claims.claim(raw_file(), LEASE)
    assert claims.record_done(claim, "in s3://b/p/", "s3://b/p/", "etag")
    doc = get_raw_file("a.raw")
    assert (doc.backup_status, doc.s3_backup_key, doc.s3_etag) == ("upload_done", "s3://b/p/", "etag")
    assert doc.upload_claim_owner is None and doc.upload_claim_expires_at is None


def test_multipart_recorder_writes_upload_ids_while_owning(fake_db: None) -> None:
    claim = claims.claim(raw_file(), LEASE)
    record = claims.multipart_recorder(claim, {})
    record("p/a.raw", "upload-1")
    assert get_raw_file("a.raw").s3_multipart_uploads == {"p/a.raw": "upload-1"}
    record("p/a.raw", None)
    assert get_raw_file("a.raw").s3_multipart_uploads == {}


def test_multipart_recorder_never_writes_an_older_snapshot_last(fake_db: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # Files of a set upload side by side: two uploads start at once; the first write is slow.
    claim = claims.claim(raw_file(), LEASE)
    record = claims.multipart_recorder(claim, {})
    write = claims.update_raw_file
    first_write_started = threading.Event()

    def slow_first_write(raw_file_id: str, **fields: object) -> bool:
        if not first_write_started.is_set():
            first_write_started.set()
            time.sleep(0.2)  # the second upload id is recorded meanwhile
        return write(raw_file_id, **fields)

    monkeypatch.setattr(claims, "update_raw_file", slow_first_write)
    first = threading.Thread(target=record, args=("p/a.raw", "upload-a"))
    first.start()
    first_write_started.wait()
    record("p/b.raw", "upload-b")
    first.join()
    assert get_raw_file("a.raw").s3_multipart_uploads == {"p/a.raw": "upload-a", "p/b.raw": "upload-b"}


# --- stale claims: one rule for the upload and the sweeper ----------------------------------------------


def test_release_stale_marks_an_expired_lease_failed_from_when_it_expired(fake_db: None) -> None:
    expired = utc_now() - timedelta(minutes=1)
    doc = raw_file(backup_status="upload_in_progress", upload_claim_owner="w:1:dead", upload_claim_expires_at=expired)
    assert claims.release_stale(doc, utc_now(), LEASE)
    released = get_raw_file("a.raw")
    assert released.backup_status == "upload_failed" and released.s3_upload_failed_at == expired
    assert released.upload_claim_owner is None and "stopped renewing its claim" in released.backup_status_details


def test_release_stale_never_touches_a_renewed_lease(fake_db: None) -> None:
    doc = raw_file(
        backup_status="upload_in_progress", upload_claim_owner="w:1:x", upload_claim_expires_at=utc_now() - LEASE
    )
    update_raw_file("a.raw", upload_claim_expires_at=utc_now() + LEASE)  # renewed after the sweep read it
    assert not claims.release_stale(doc, utc_now(), LEASE)
    assert get_raw_file("a.raw").backup_status == "upload_in_progress"


def test_in_progress_without_a_lease_is_held_until_untouched_for_a_lease_length(fake_db: None) -> None:
    """The one rule: backup.py used to claim such a document at once, the sweeper only after a lease length."""
    recent = age(raw_file(backup_status="upload_in_progress").id, timedelta(minutes=1))
    now = utc_now()
    assert not is_stale(recent, now, LEASE)
    with pytest.raises(UploadInProgressError, match="no owner"):
        claims.claim(recent, LEASE)
    assert not claims.release_stale(recent, now, LEASE)
    assert get_raw_file("a.raw").backup_status == "upload_in_progress"

    old = age("a.raw", LEASE + timedelta(minutes=1))
    assert is_stale(old, utc_now(), LEASE)
    assert claims.claim(old, LEASE).attempt == 1


def test_given_up_is_said_once_in_the_details(fake_db: None) -> None:
    doc = raw_file(backup_status="upload_failed", s3_upload_attempts=5, backup_status_details="upload to S3 failed: x")
    claims.record_given_up(doc, 5)
    details = get_raw_file("a.raw").backup_status_details
    assert details.startswith("gave up after 5 attempts") and details.endswith("upload to S3 failed: x")
    claims.record_given_up(get_raw_file("a.raw"), 5)
    assert get_raw_file("a.raw").backup_status_details == details


def test_the_heartbeat_records_the_uploads_progress_in_its_renewal_and_the_outcome_clears_it(fake_db: None) -> None:
    from rawvault.s3.progress import ProgressReporter

    now = [0.0]
    reporter = ProgressReporter(100 << 20, clock=lambda: now[0])
    claim = claims.claim(raw_file(), LEASE)
    claim.renew()  # before the upload starts: no progress yet
    assert not get_raw_file("a.raw").upload_progress
    claim.watch_progress(reporter)
    now[0] = 10.0
    reporter(40 << 20)
    claim.renew()
    progress = get_raw_file("a.raw").upload_progress
    assert progress["bytes_done"] == 40 << 20 and progress["bytes_total"] == 100 << 20
    assert progress["bytes_per_second"] == 4 << 20 and progress["eta_seconds"] == 15.0 and progress["at"]
    assert claims.record_done(claim, "done", "s3://b/p/", "etag")
    assert not get_raw_file("a.raw").upload_progress
