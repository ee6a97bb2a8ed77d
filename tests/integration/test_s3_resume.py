"""Resumed multipart uploads, the claim with its lease, re-runs of done uploads and the sweeper's choices.

Through a moto S3 server over HTTP and the real MongoDB wire server; the fault suite with killed
processes and servers is ``test_faults.py``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("tests.s3_fixtures")  # it is imported here before pytest loads it as a plugin

from rawvault.backup import upload_raw_file  # noqa: E402
from rawvault.claim import UploadClaimLostError, UploadInProgressError, UploadSupersededError  # noqa: E402
from rawvault.s3.errors import LocalFileChangedError  # noqa: E402
from rawvault.sweeper import backoff, find_backups_to_retry, sweep  # noqa: E402
from shared.db.interface import create_raw_file, get_raw_file, update_raw_file, utc_now  # noqa: E402
from shared.db.models import RawFile  # noqa: E402
from shared.settings import Settings  # noqa: E402
from tests.s3_fixtures import (  # noqa: E402
    MIB,
    PART,
    CallCounter,
    after_upload_part,
    file_info_of,
    make_settings,
    multipart_uploads,
    unique_prefix,
    write_file,
)

pytestmark = pytest.mark.slow  # quick mode (scripts/test.sh --quick) leaves it out: over 15 s

pytest_plugins = ["tests.s3_fixtures"]

CREATED = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
BASE = f"thermo1/{CREATED:%Y_%m}"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, unique_prefix(), auto_create_buckets=True, max_concurrency=1)


def register(settings: Settings, name: str = "resume.raw", size: int = 17 * MIB, **fields: Any) -> tuple[str, list]:
    """A Thermo raw file with its verified local copy (4 parts of 5 MiB by default)."""
    folder = settings.locations.backup / BASE
    write_file(folder / name, size, seed=len(name))
    info = file_info_of(folder, [name])
    fields.setdefault("backup_status", "copying_done")
    create_raw_file(
        name,
        instrument_id="thermo1",
        created_at=CREATED,
        file_info=info,
        etag_part_size=PART,
        **fields,
    )
    return name, info[name]


def run(settings: Settings, raw_file_id: str, client: Any) -> Any:
    return upload_raw_file(raw_file_id, settings, client=client, progress_interval=5)


def bucket_of(settings: Settings) -> str:
    return f"{settings.backup.s3.bucket_prefix}-fallback"


def key_of(raw_file_id: str) -> str:
    return f"{BASE}/{raw_file_id}"


def start_upload(client: Any, settings: Settings, raw_file_id: str, parts: list[int], size: int = PART) -> str:
    """An unfinished multipart upload of the raw file's key holding ``parts`` of the local file, as a killed run
    leaves it."""
    bucket, key = bucket_of(settings), key_of(raw_file_id)
    client.create_bucket(Bucket=bucket)
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256")["UploadId"]
    data = (settings.locations.backup / BASE / raw_file_id).read_bytes()
    for number in parts:
        body = data[(number - 1) * size : number * size]
        client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body, ChecksumAlgorithm="SHA256"
        )
    return upload_id


def assert_done(settings: Settings, raw_file_id: str, client: Any, etag: str) -> None:
    raw_file = get_raw_file(raw_file_id)
    assert raw_file.backup_status == "upload_done", raw_file.backup_status_details
    assert raw_file.s3_etag == etag and raw_file.s3_backup_key == f"s3://{bucket_of(settings)}/{BASE}/"
    assert raw_file.upload_claim_owner is None and raw_file.upload_claim_expires_at is None
    assert raw_file.s3_multipart_uploads == {}
    head = client.head_object(Bucket=bucket_of(settings), Key=key_of(raw_file_id))
    assert head["ETag"].strip('"') == etag
    assert multipart_uploads(client, bucket_of(settings)) == []


# --- resuming -------------------------------------------------------------------------------------------


def test_retry_resumes_a_killed_runs_upload_and_sends_only_missing_parts(mongo_uri, settings, s3_client) -> None:
    raw_file_id, (_size, _md5, etag) = register(settings)
    upload_id = start_upload(s3_client, settings, raw_file_id, [1, 3])
    update_raw_file(raw_file_id, s3_multipart_uploads={key_of(raw_file_id): upload_id})
    counter = CallCounter(s3_client)
    result = run(settings, raw_file_id, s3_client)
    assert counter.calls["CreateMultipartUpload"] == 0
    assert counter.calls["UploadPart"] == 2  # parts 2 and 4
    assert result.parts_resumed == 2
    assert_done(settings, raw_file_id, s3_client, etag)
    assert "2 part(s) resumed" in get_raw_file(raw_file_id).backup_status_details


def test_unrecorded_upload_is_found_by_listing(mongo_uri, settings, s3_client) -> None:
    raw_file_id, (_size, _md5, etag) = register(settings)
    start_upload(s3_client, settings, raw_file_id, [1, 2, 3, 4])  # killed before it could record the upload id
    counter = CallCounter(s3_client)
    result = run(settings, raw_file_id, s3_client)
    assert counter.calls["UploadPart"] == 0 and counter.calls["CompleteMultipartUpload"] == 1
    assert result.parts_resumed == 4
    assert_done(settings, raw_file_id, s3_client, etag)


def test_mismatching_stored_part_is_uploaded_again(mongo_uri, settings, s3_client) -> None:
    raw_file_id, (_size, _md5, etag) = register(settings)
    upload_id = start_upload(s3_client, settings, raw_file_id, [1, 2])
    s3_client.upload_part(  # part 3 with the right size but other bytes
        Bucket=bucket_of(settings),
        Key=key_of(raw_file_id),
        UploadId=upload_id,
        PartNumber=3,
        Body=b"x" * PART,
        ChecksumAlgorithm="SHA256",
    )
    counter = CallCounter(s3_client)
    result = run(settings, raw_file_id, s3_client)
    assert counter.calls["UploadPart"] == 2  # part 3 again and part 4
    assert result.parts_resumed == 2
    assert_done(settings, raw_file_id, s3_client, etag)


def test_upload_of_another_part_size_is_aborted_and_restarted(mongo_uri, settings, s3_client) -> None:
    raw_file_id, (_size, _md5, etag) = register(settings)
    old = start_upload(s3_client, settings, raw_file_id, [1], size=6 * MIB)  # a 6 MiB part: another layout
    other_key = s3_client.create_multipart_upload(Bucket=bucket_of(settings), Key=key_of(raw_file_id) + ".x")
    counter = CallCounter(s3_client)
    run(settings, raw_file_id, s3_client)
    assert counter.calls["AbortMultipartUpload"] == 1 and counter.calls["CreateMultipartUpload"] == 1
    assert counter.calls["UploadPart"] == 4
    remaining = [upload["UploadId"] for upload in multipart_uploads(s3_client, bucket_of(settings))]
    assert remaining == [other_key["UploadId"]] and old not in remaining  # another key's upload is left alone
    s3_client.abort_multipart_upload(
        Bucket=bucket_of(settings), Key=key_of(raw_file_id) + ".x", UploadId=other_key["UploadId"]
    )
    assert_done(settings, raw_file_id, s3_client, etag)


def test_local_file_shrinking_mid_upload_aborts_the_upload(mongo_uri, settings, s3_client) -> None:
    raw_file_id, _entry = register(settings)
    source = settings.locations.backup / BASE / raw_file_id

    def shrink(**_kwargs: Any) -> None:
        with source.open("r+b") as handle:
            handle.truncate(PART + 10)

    after_upload_part(s3_client, shrink)
    with pytest.raises(LocalFileChangedError, match=r"shrank.*multipart upload \S+ was aborted"):
        run(settings, raw_file_id, s3_client)
    assert multipart_uploads(s3_client, bucket_of(settings)) == []  # a permanent error: nothing to resume
    raw_file = get_raw_file(raw_file_id)
    assert raw_file.backup_status == "upload_failed" and "shrank" in raw_file.backup_status_details
    assert raw_file.s3_multipart_uploads == {}


# --- the claim ------------------------------------------------------------------------------------------


def test_live_claim_of_another_run_stops_this_one_without_any_change(mongo_uri, settings, s3_client) -> None:
    expires = utc_now() + timedelta(minutes=5)
    raw_file_id, _entry = register(
        settings, backup_status="upload_in_progress", upload_claim_owner="host:1:other", upload_claim_expires_at=expires
    )
    before = get_raw_file(raw_file_id)
    counter = CallCounter(s3_client)
    with pytest.raises(UploadInProgressError, match=r"being uploaded by another run \(host:1:other.*stale_upload"):
        run(settings, raw_file_id, s3_client)
    assert sum(counter.calls.values()) == 0
    after = get_raw_file(raw_file_id)
    assert after.to_mongo().to_dict() == before.to_mongo().to_dict()


def test_expired_claim_is_taken_over(mongo_uri, settings, s3_client) -> None:
    raw_file_id, (_size, _md5, etag) = register(
        settings,
        backup_status="upload_in_progress",
        upload_claim_owner="host:1:dead",
        upload_claim_expires_at=utc_now() - timedelta(seconds=1),
        s3_upload_attempts=1,
    )
    run(settings, raw_file_id, s3_client)
    assert_done(settings, raw_file_id, s3_client, etag)
    assert get_raw_file(raw_file_id).s3_upload_attempts == 2


def test_run_that_loses_its_claim_stops_and_records_nothing(mongo_uri, tmp_path, s3_client) -> None:
    settings = make_settings(
        tmp_path, unique_prefix(), auto_create_buckets=True, max_concurrency=1, stale_upload_minutes=0.02
    )  # a 1.2 s lease, renewed every 0.4 s
    raw_file_id, _entry = register(settings)
    took_over = utc_now() + timedelta(minutes=5)

    def another_run_takes_over(**_kwargs: Any) -> None:
        if get_raw_file(raw_file_id).upload_claim_owner != "host:2:new":
            update_raw_file(raw_file_id, upload_claim_owner="host:2:new", upload_claim_expires_at=took_over)
            time.sleep(1.0)  # the heartbeat notices

    after_upload_part(s3_client, another_run_takes_over)
    with pytest.raises(UploadClaimLostError, match=r"another run took over its claim"):
        run(settings, raw_file_id, s3_client)
    raw_file = get_raw_file(raw_file_id)
    assert raw_file.backup_status == "upload_in_progress" and raw_file.upload_claim_owner == "host:2:new"
    assert raw_file.s3_etag is None
    (kept,) = multipart_uploads(s3_client, bucket_of(settings))  # for the new owner to resume
    assert kept["Key"] == key_of(raw_file_id)


def test_done_raw_file_is_confirmed_from_s3_without_touching_it(mongo_uri, settings, s3_client) -> None:
    raw_file_id, (_size, _md5, etag) = register(settings)
    run(settings, raw_file_id, s3_client)
    before = get_raw_file(raw_file_id).to_mongo().to_dict()
    counter = CallCounter(s3_client)
    result = run(settings, raw_file_id, s3_client)
    assert result.already_complete and result.s3_etag == etag
    assert counter.writes == 0 and counter.calls["HeadObject"] == 1  # plus one GET of the manifest
    assert get_raw_file(raw_file_id).to_mongo().to_dict() == before


def test_done_raw_file_whose_manifest_vanished_is_repaired(mongo_uri, settings, s3_client) -> None:
    raw_file_id, (_size, _md5, etag) = register(settings)
    run(settings, raw_file_id, s3_client)
    s3_client.delete_object(Bucket=bucket_of(settings), Key=key_of(raw_file_id) + ".rawvault-manifest.json")
    counter = CallCounter(s3_client)
    result = run(settings, raw_file_id, s3_client)
    assert result.uploaded == [] and result.manifest_written and counter.calls["UploadPart"] == 0
    assert_done(settings, raw_file_id, s3_client, etag)


# --- the sweeper ----------------------------------------------------------------------------------------


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff(n, 15).total_seconds() / 60 for n in range(1, 5)] == [30, 60, 120, 240]
    assert backoff(20, 15) == timedelta(hours=6)


def test_sweep_picks_failed_and_stale_uploads_and_gives_up_after_the_cap(mongo_uri, tmp_path) -> None:
    settings = make_settings(
        tmp_path, unique_prefix(), max_upload_attempts=3, upload_retry_delay_minutes=10, stale_upload_minutes=5
    )
    now = utc_now()
    common = {"instrument_id": "thermo1", "created_at": CREATED}
    create_raw_file("due.raw", backup_status="upload_failed", s3_upload_attempts=1,
                    s3_upload_attempted_at=now - timedelta(minutes=21), **common)  # fmt: skip
    create_raw_file("waiting.raw", backup_status="upload_failed", s3_upload_attempts=2,
                    s3_upload_attempted_at=now - timedelta(minutes=21), **common)  # fmt: skip
    create_raw_file("capped.raw", backup_status="upload_failed", s3_upload_attempts=3,
                    s3_upload_attempted_at=now - timedelta(days=1), backup_status_details="upload to S3 failed: x",
                    **common)  # fmt: skip
    create_raw_file("stale.raw", backup_status="upload_in_progress", s3_upload_attempts=1,
                    s3_upload_attempted_at=now - timedelta(hours=1), upload_claim_owner="host:9:dead",
                    upload_claim_expires_at=now - timedelta(minutes=25), **common)  # fmt: skip
    create_raw_file("just-stale.raw", backup_status="upload_in_progress", s3_upload_attempts=1,
                    s3_upload_attempted_at=now - timedelta(hours=1), upload_claim_owner="host:9:gone",
                    upload_claim_expires_at=now - timedelta(seconds=5), **common)  # fmt: skip
    # Started 3 h ago, failed just now: the backoff counts from the failure, like Airflow's own retry.
    create_raw_file("just-failed.raw", backup_status="upload_failed", s3_upload_attempts=1,
                    s3_upload_attempted_at=now - timedelta(hours=3), s3_upload_failed_at=now - timedelta(minutes=1),
                    **common)  # fmt: skip
    create_raw_file("live.raw", backup_status="upload_in_progress", s3_upload_attempts=1,
                    s3_upload_attempted_at=now - timedelta(hours=1), upload_claim_owner="host:9:alive",
                    upload_claim_expires_at=now + timedelta(minutes=4), **common)  # fmt: skip
    create_raw_file("done.raw", backup_status="upload_done", s3_upload_attempts=1, **common)

    report = sweep(settings, now)
    assert sorted(report.stale) == ["just-stale.raw", "stale.raw"]
    assert sorted(report.retry) == ["due.raw", "stale.raw"]
    # 2 attempts: 40 minutes of backoff; the others 20 minutes from their failure (a lease's end).
    assert report.waiting == {
        "waiting.raw": now - timedelta(minutes=21) + timedelta(minutes=40),
        "just-stale.raw": now - timedelta(seconds=5) + timedelta(minutes=20),
        "just-failed.raw": now - timedelta(minutes=1) + timedelta(minutes=20),
    }
    assert report.gave_up == ["capped.raw"]
    stale = get_raw_file("stale.raw")
    assert stale.backup_status == "upload_failed" and stale.upload_claim_owner is None
    assert "host:9:dead stopped renewing its claim" in stale.backup_status_details
    assert stale.s3_upload_failed_at == now - timedelta(minutes=25)
    assert get_raw_file("live.raw").upload_claim_owner == "host:9:alive"  # a live lease is never touched
    capped = get_raw_file("capped.raw").backup_status_details
    assert capped.startswith("gave up after 3 attempts; clear upload_to_s3 to retry by hand")
    assert capped.endswith("upload to S3 failed: x")

    # Idempotent; oldest due first (stale.raw's lease ended 25 minutes ago, due.raw's attempt began 21 minutes ago).
    assert find_backups_to_retry(settings, now) == ["stale.raw", "due.raw"]
    assert get_raw_file("capped.raw").backup_status_details == capped  # said once


def test_sweep_uploads_copying_done_raw_files_whose_upload_never_ran(mongo_uri, tmp_path) -> None:
    settings = make_settings(tmp_path, unique_prefix(), max_upload_attempts=3, pending_upload_after_hours=6)
    now = utc_now()
    info = {"x.raw": [1, "m", "e"]}
    common = {"instrument_id": "thermo1", "created_at": CREATED, "backup_status": "copying_done", "file_info": info}
    create_raw_file("forgotten.raw", db_updated_at=now - timedelta(hours=7), **common)
    create_raw_file("older.raw", db_updated_at=now - timedelta(hours=30), s3_upload_attempts=1, **common)
    create_raw_file("queued.raw", db_updated_at=now - timedelta(hours=5), **common)  # upload_to_s3 may still come
    create_raw_file("capped.raw", db_updated_at=now - timedelta(hours=7), s3_upload_attempts=3, **common)
    create_raw_file("no-info.raw", instrument_id="thermo1", created_at=CREATED, backup_status="copying_done",
                    db_updated_at=now - timedelta(hours=7))  # fmt: skip
    create_raw_file("no-base.raw", db_updated_at=now - timedelta(hours=7), **common)
    RawFile.objects(id="no-base.raw").update_one(unset__backup_base_path=True)  # written before it was recorded

    report = sweep(settings, now)
    assert report.retry == ["older.raw", "forgotten.raw"]  # oldest due first
    assert sorted(report.never_uploaded) == ["forgotten.raw", "older.raw"]
    assert {retry.raw_file_id: retry.attempts for retry in report.retries} == {"forgotten.raw": 0, "older.raw": 1}
    assert report.gave_up == ["capped.raw"]
    assert get_raw_file("capped.raw").backup_status_details.startswith("gave up after 3 attempts")
    assert get_raw_file("forgotten.raw").backup_status == "copying_done"  # the sweep itself uploads nothing
    # With local backups only, nothing is ever picked.
    local = make_settings(tmp_path, unique_prefix()).model_copy(
        update={"backup": settings.backup.model_copy(update={"backup_type": "local"})}
    )
    assert sweep(local, now).retry == []


def test_a_retry_for_an_attempt_another_run_has_retried_since_stops(mongo_uri, settings, s3_client) -> None:
    raw_file_id, (_size, _md5, etag) = register(
        settings, backup_status="upload_failed", s3_upload_attempts=2, s3_upload_failed_at=utc_now()
    )
    before = get_raw_file(raw_file_id)
    counter = CallCounter(s3_client)
    with pytest.raises(UploadSupersededError, match=r"'resume.raw' had 1 upload attempt\(s\) when this retry was "
                       r"scheduled and has 2 now"):  # fmt: skip
        upload_raw_file(raw_file_id, settings, client=s3_client, expected_attempts=1)
    after = get_raw_file(raw_file_id)
    assert (after.backup_status, after.s3_upload_attempts, after.db_updated_at) == (
        "upload_failed",
        2,
        before.db_updated_at,
    )  # nothing written
    assert counter.writes == 0
    upload_raw_file(raw_file_id, settings, client=s3_client, expected_attempts=2)
    assert_done(settings, raw_file_id, s3_client, etag)
    assert get_raw_file(raw_file_id).s3_upload_attempts == 3
    # A raw file never attempted (the field missing in old documents) matches 0 attempts.
    other, (_s, _m, other_etag) = register(settings, "never.raw", 1024)
    RawFile.objects(id=other).update_one(unset__s3_upload_attempts=True)
    upload_raw_file(other, settings, client=s3_client, expected_attempts=0)
    assert_done(settings, other, s3_client, other_etag)


def test_sweeper_retry_completes_a_stale_upload(mongo_uri, tmp_path, s3_client) -> None:
    settings = make_settings(
        tmp_path,
        unique_prefix(),
        auto_create_buckets=True,
        upload_retry_delay_minutes=0,
        upload_retries=0,
        stale_upload_minutes=0.01,
    )
    raw_file_id, (_size, _md5, etag) = register(
        settings,
        backup_status="upload_in_progress",
        upload_claim_owner="host:1:killed",
        upload_claim_expires_at=utc_now() + timedelta(hours=1),
        s3_upload_attempts=1,
        s3_upload_attempted_at=utc_now(),
    )
    upload_id = start_upload(s3_client, settings, raw_file_id, [2])
    assert find_backups_to_retry(settings) == []  # its lease is still alive
    # The killed owner's lease runs out (set directly: a short real lease flaked on a loaded machine).
    RawFile.objects(id=raw_file_id).update_one(set__upload_claim_expires_at=utc_now() - timedelta(seconds=1))
    assert find_backups_to_retry(settings) == [raw_file_id]
    counter = CallCounter(s3_client)
    run(settings, raw_file_id, s3_client)
    assert counter.calls["UploadPart"] == 3 and counter.calls["CreateMultipartUpload"] == 0
    assert_done(settings, raw_file_id, s3_client, etag)
    assert upload_id not in str(get_raw_file(raw_file_id).s3_multipart_uploads)
