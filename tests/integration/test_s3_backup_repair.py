"""upload_raw_file for a raw file recorded upload_done: moto's S3 server over HTTP and the MongoDB wire server.

The repair rules (issue 11 item 1), the manifest that always describes S3 and never changes when nothing changed
(issue 17 item 5), and the manifest's replacement conditional on the one that was read. The DAG runs are in
``test_s3_repair.py``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

pytest.register_assert_rewrite("tests.s3_fixtures")  # it is imported here before pytest loads it as a plugin

from rawvault.backup import upload_raw_file  # noqa: E402
from rawvault.s3.errors import ExistingObjectMismatchError  # noqa: E402
from rawvault.s3.manifest import ManifestChangedError  # noqa: E402
from shared.db.interface import create_raw_file, get_raw_file  # noqa: E402
from shared.settings import Settings  # noqa: E402
from tests.s3_fixtures import (  # noqa: E402
    PART,
    CallCounter,
    file_info_of,
    make_bruker_set,
    make_client,
    make_settings,
    unique_prefix,
    write_file,
)

pytest_plugins = ["tests.s3_fixtures"]

CREATED = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
PREFIX = "tims1/2026_11/"


def backed_up(settings: Settings, client: Any) -> tuple[str, dict[str, list]]:
    """A Bruker set with its verified local copy, uploaded: upload_done."""
    folder = settings.locations.backup / "tims1" / f"{CREATED:%Y_%m}"
    paths = make_bruker_set(folder)
    info = file_info_of(folder, paths)
    raw_file = create_raw_file(
        paths[0].split("/")[0], instrument_id="tims1", created_at=CREATED, file_info=info, etag_part_size=PART,
        backup_status="copying_done",
    )  # fmt: skip
    upload_raw_file(raw_file.id, settings, client=client, progress_interval=60)
    assert get_raw_file(raw_file.id).backup_status == "upload_done"
    return raw_file.id, info


def bucket_of(settings: Settings) -> str:
    return f"{settings.backup.s3.bucket_prefix}-fallback"


def manifest_key(raw_file_id: str) -> str:
    return f"{PREFIX}{raw_file_id}.rawvault-manifest.json"


def delete_every_version(client: Any, bucket: str, key: str) -> None:
    for version in client.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", []):
        if version["Key"] == key:
            client.delete_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])


def test_a_manifest_written_again_is_byte_identical_and_keeps_s3_etag(mongo_uri, tmp_path, s3_client) -> None:
    """Issue 17 item 5: the manifest is a pure function of the set (it had completed_at, a new ETag every run)."""
    settings = make_settings(tmp_path, unique_prefix(), auto_create_buckets=True)
    raw_file_id, _ = backed_up(settings, s3_client)
    bucket, key = bucket_of(settings), manifest_key(raw_file_id)
    first = s3_client.get_object(Bucket=bucket, Key=key)
    body, etag = first["Body"].read(), get_raw_file(raw_file_id).s3_etag
    time.sleep(1.1)  # a wall-clock field would differ now
    delete_every_version(s3_client, bucket, key)

    result = upload_raw_file(raw_file_id, settings, client=make_client(s3_client.meta.endpoint_url))

    assert result.manifest_written and result.uploaded == []
    assert s3_client.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    raw_file = get_raw_file(raw_file_id)
    assert raw_file.s3_etag == etag == result.s3_etag and raw_file.backup_status == "upload_done"
    counter = CallCounter(client := make_client(s3_client.meta.endpoint_url))
    assert upload_raw_file(raw_file_id, settings, client=client).already_complete and counter.writes == 0


def test_the_repair_holds_the_claim_and_says_what_it_is_doing(mongo_uri, tmp_path, s3_client) -> None:
    settings = make_settings(tmp_path, unique_prefix(), auto_create_buckets=True)
    raw_file_id, info = backed_up(settings, s3_client)
    lost = sorted(info)[1]
    s3_client.delete_object(Bucket=bucket_of(settings), Key=PREFIX + lost)
    seen: list[tuple[str, str]] = []
    client = make_client(s3_client.meta.endpoint_url)

    def while_uploading(**_kwargs: Any) -> None:
        during = get_raw_file(raw_file_id)
        seen.append((during.backup_status, during.backup_status_details))

    client.meta.events.register("before-call.s3.PutObject", while_uploading)
    result = upload_raw_file(raw_file_id, settings, client=client)

    assert result.uploaded == [lost] and not result.manifest_written  # non-KMS: same ETag, the manifest still fits
    status, details = seen[0]
    assert status == "upload_in_progress" and details.startswith("repairing the S3 backup"), details
    assert lost in details and "missing" in details
    done = get_raw_file(raw_file_id)
    assert done.backup_status == "upload_done" and done.upload_claim_owner is None
    repaired = f"repaired in s3://{bucket_of(settings)}/{PREFIX}: uploaded again {lost}"
    assert done.backup_status_details.startswith(repaired), done.backup_status_details


def test_an_object_that_differs_fails_the_repair_and_is_never_overwritten(mongo_uri, tmp_path, s3_client) -> None:
    settings = make_settings(tmp_path, unique_prefix(), auto_create_buckets=True)
    raw_file_id, info = backed_up(settings, s3_client)
    bucket, changed = bucket_of(settings), sorted(info)[1]
    size = info[changed][0]
    foreign = make_client(s3_client.meta.endpoint_url)
    foreign.put_object(Bucket=bucket, Key=PREFIX + changed, Body=write_file(tmp_path / "other", size, 77).read_bytes())
    before = foreign.head_object(Bucket=bucket, Key=PREFIX + changed)
    counter = CallCounter(client := make_client(s3_client.meta.endpoint_url))

    with pytest.raises(ExistingObjectMismatchError, match="already holds a different object"):
        upload_raw_file(raw_file_id, settings, client=client)

    assert counter.writes == 0
    failed = get_raw_file(raw_file_id)
    assert failed.backup_status == "upload_failed" and PREFIX + changed in failed.backup_status_details
    assert "never overwrites" in failed.backup_status_details and failed.upload_claim_owner is None
    after = foreign.head_object(Bucket=bucket, Key=PREFIX + changed)
    assert (after["VersionId"], after["ETag"]) == (before["VersionId"], before["ETag"])  # untouched


def test_the_manifest_is_replaced_only_if_nobody_changed_it_meanwhile(mongo_uri, tmp_path, kms_s3_server) -> None:
    """Under SSE-KMS the repair replaces the manifest (If-Match): a manifest changed meanwhile is never replaced."""
    client = make_client(kms_s3_server.endpoint_url)
    settings = make_settings(tmp_path, unique_prefix(), auto_create_buckets=True, server_side_encryption="aws:kms")
    raw_file_id, info = backed_up(settings, client)
    bucket, key, lost = bucket_of(settings), manifest_key(raw_file_id), sorted(info)[1]
    delete_every_version(client, bucket, PREFIX + lost)
    intruder = make_client(kms_s3_server.endpoint_url)
    body = intruder.get_object(Bucket=bucket, Key=key)["Body"].read()
    repair_client = make_client(kms_s3_server.endpoint_url)

    def another_writer(params: dict[str, Any], **_kwargs: Any) -> None:
        if params["Key"] == key and "IfMatch" in params:
            intruder.put_object(Bucket=bucket, Key=key, Body=body + b" ", ServerSideEncryption="aws:kms")

    repair_client.meta.events.register("before-parameter-build.s3.PutObject", another_writer)
    with pytest.raises(ManifestChangedError, match="changed while this run repaired the set"):
        upload_raw_file(raw_file_id, settings, client=repair_client)

    assert intruder.get_object(Bucket=bucket, Key=key)["Body"].read() == body + b" "  # not replaced
    assert get_raw_file(raw_file_id).backup_status == "upload_failed"
    # The next run (the intruder gone) finds the lost object in place and writes a manifest that describes it.
    result = upload_raw_file(raw_file_id, settings, client=make_client(kms_s3_server.endpoint_url))
    assert result.uploaded == [] and result.replaced_manifest_etag
    assert get_raw_file(raw_file_id).backup_status == "upload_done"
    assert get_raw_file(raw_file_id).s3_etag == result.manifest_etag
