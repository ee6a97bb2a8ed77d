"""upload_file_set against a moto S3 server over HTTP: ETags, skips, all-or-nothing, never overwriting, aborts."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

pytest.register_assert_rewrite("tests.s3_fixtures")  # it is imported here before pytest loads it as a plugin

from devtools.servers import S3Server  # noqa: E402
from rawvault.s3.errors import (  # noqa: E402
    ExistingObjectMismatchError,
    LocalFileChangedError,
    PartSizeMismatchError,
    S3AccessDeniedError,
    S3TransientError,
    UnsafePathError,
    VerificationError,
)
from rawvault.s3.upload import ObjectSettings, UploadResult, VerificationMode, upload_file_set  # noqa: E402
from tests.s3_fixtures import (  # noqa: E402
    MIB,
    PART,
    CallCounter,
    file_info_of,
    make_bruker_set,
    make_client,
    make_thermo_file,
    multipart_uploads,
    object_keys,
    rewrite_kms_checksums,
    write_file,
)

pytestmark = pytest.mark.slow  # quick mode (scripts/test.sh --quick) leaves it out: over 15 s

pytest_plugins = ["tests.s3_fixtures"]

PREFIX = "thermo1/2026_11/"


def upload(client: Any, bucket: str, folder: Path, file_info: dict, raw_file_id: str, **kwargs: Any) -> UploadResult:
    kwargs.setdefault("object_settings", ObjectSettings(storage_class="GLACIER_IR", max_concurrency=4))
    kwargs.setdefault("key_prefix", PREFIX)
    return upload_file_set(
        client,
        bucket=bucket,
        source_folder=folder,
        file_info=file_info,
        part_size=PART,
        raw_file_id=raw_file_id,
        metadata={"raw-file-id": raw_file_id, "instrument-id": "thermo1"},
        **kwargs,
    )


def fail_on(client: Any, operation: str, *, when: Any, exc: Exception | None = None) -> list[int]:
    """Make ``operation`` raise (before the request is sent) for calls where ``when(params, n)`` is true."""
    seen = [0]

    def handler(params: dict[str, Any], **_kwargs: Any) -> None:
        seen[0] += 1
        if when(params, seen[0]):
            raise exc or EndpointConnectionError(endpoint_url="http://simulated-failure")

    client.meta.events.register(f"before-parameter-build.s3.{operation}", handler)
    return seen


def test_thermo_file_uploaded_with_recorded_etag_and_settings(s3_client, bucket, counter, tmp_path) -> None:
    name = make_thermo_file(tmp_path)
    file_info = file_info_of(tmp_path, [name])
    result = upload(s3_client, bucket, tmp_path, file_info, name)

    head = s3_client.head_object(Bucket=bucket, Key=PREFIX + name, ChecksumMode="ENABLED")
    size, md5, etag = file_info[name]
    assert etag.endswith("-3")
    assert head["ETag"].strip('"') == etag and head["ContentLength"] == size
    assert head["StorageClass"] == "GLACIER_IR"
    assert head["ServerSideEncryption"] == "AES256"
    assert head["Metadata"] == {"raw-file-id": name, "instrument-id": "thermo1", "md5": md5}
    assert head["ChecksumSHA256"]  # S3 validated a SHA-256 flexible checksum on upload
    assert counter.calls["CreateMultipartUpload"] == 1 and counter.calls["UploadPart"] == 3
    assert result.uploaded == [name] and result.skipped == [] and result.bytes_uploaded == size
    assert result.objects[name].verified_by is VerificationMode.ETAG
    assert result.s3_backup_key == f"s3://{bucket}/{PREFIX}" and result.s3_etag == etag
    assert object_keys(s3_client, bucket) == [PREFIX + name, PREFIX + name + ".rawvault-manifest.json"]


def test_single_put_up_to_part_size_multipart_above(s3_client, bucket, counter, tmp_path) -> None:
    write_file(tmp_path / "exact.raw", PART, 1)
    write_file(tmp_path / "above.raw", PART + 1, 2)
    info = file_info_of(tmp_path, ["exact.raw", "above.raw"])
    upload(s3_client, bucket, tmp_path, info, "set")
    assert counter.keys_of("PutObject") == [PREFIX + "exact.raw", PREFIX + "set.rawvault-manifest.json"]
    assert counter.keys_of("CreateMultipartUpload") == [PREFIX + "above.raw"]
    assert counter.calls["UploadPart"] == 2
    for path in info:
        assert s3_client.head_object(Bucket=bucket, Key=PREFIX + path)["ETag"].strip('"') == info[path][2]


def test_bruker_set_every_etag_and_manifest(s3_client, bucket, tmp_path) -> None:
    paths = make_bruker_set(tmp_path)
    info = file_info_of(tmp_path, paths)
    result = upload(s3_client, bucket, tmp_path, info, "20261122_tims1_sample.d", key_prefix="tims1/2026_11/")

    for path, (size, _md5, etag) in info.items():
        head = s3_client.head_object(Bucket=bucket, Key="tims1/2026_11/" + path)
        assert head["ETag"].strip('"') == etag and head["ContentLength"] == size
    manifest_key = "tims1/2026_11/20261122_tims1_sample.d.rawvault-manifest.json"
    assert result.manifest_key == manifest_key
    response = s3_client.get_object(Bucket=bucket, Key=manifest_key)
    manifest = json.loads(response["Body"].read())
    assert response["ContentType"] == "application/json"
    assert response.get("StorageClass", "STANDARD") == "STANDARD"  # readable at once, whatever the data's class
    assert manifest["format"] == "rawvault-manifest/1" and manifest["part_size"] == PART
    assert manifest["file_count"] == len(paths) and manifest["total_size"] == sum(v[0] for v in info.values())
    assert {p: [f["size"], f["md5"], f["etag"]] for p, f in manifest["files"].items()} == info
    assert all(f["key"] == "tims1/2026_11/" + p for p, f in manifest["files"].items())
    assert result.s3_etag == response["ETag"].strip('"')  # a set's s3_etag is its manifest's ETag
    assert "completed_at" not in manifest  # a pure function of the set: the same set gives the same manifest


def test_rerun_after_success_uploads_nothing(s3_client, bucket, counter, tmp_path) -> None:
    paths = make_bruker_set(tmp_path)
    info = file_info_of(tmp_path, paths)
    first = upload(s3_client, bucket, tmp_path, info, "N.d")
    counter.reset()
    second = upload(s3_client, bucket, tmp_path, info, "N.d")
    assert counter.writes == 0 and counter.calls["CompleteMultipartUpload"] == 0
    assert second.already_complete and second.skipped == paths
    assert second.s3_etag == first.s3_etag


def test_failure_in_the_middle_then_retry_uploads_only_whats_missing(s3_client, bucket, counter, tmp_path) -> None:
    paths = make_bruker_set(tmp_path)  # sorted: 1234.m/..., analysis.tdf, analysis.tdf_bin, ...
    info = file_info_of(tmp_path, paths)
    failing = PREFIX + paths[3]  # the multipart analysis.tdf_bin
    assert failing.endswith("analysis.tdf_bin")
    fail_on(s3_client, "UploadPart", when=lambda params, n: params["Key"] == failing and n == 2)
    with pytest.raises(S3TransientError, match=r"uploading .*analysis.tdf_bin.*cannot reach S3.*next run resumes it"):
        upload(s3_client, bucket, tmp_path, info, "N.d")
    # The files go side by side: whichever were done or in flight when the part failed are there, never the
    # failing file, never the manifest; the set stopped there.
    before = object_keys(s3_client, bucket)
    assert failing not in before and set(before) <= {PREFIX + p for p in paths}
    done_before = [p for p in paths if PREFIX + p in before]
    missing = [p for p in paths if PREFIX + p not in before]
    (kept,) = multipart_uploads(s3_client, bucket)  # a transient failure keeps the multipart upload to resume it
    assert kept["Key"] == failing
    stored = s3_client.list_parts(Bucket=bucket, Key=failing, UploadId=kept["UploadId"]).get("Parts", [])
    assert 1 <= len(stored) <= 2

    retry_client = make_client(s3_client.meta.endpoint_url)
    retry_counter = CallCounter(retry_client)
    result = upload(retry_client, bucket, tmp_path, info, "N.d")
    assert result.skipped == done_before and result.uploaded == missing
    assert sorted(retry_counter.keys_of("PutObject")) == sorted(
        [PREFIX + p for p in missing if PREFIX + p != failing] + [PREFIX + "N.d.rawvault-manifest.json"]
    )
    assert retry_counter.keys_of("CreateMultipartUpload") == []  # resumed, not restarted
    assert retry_counter.keys_of("UploadPart") == [failing] * (3 - len(stored))  # only the missing parts
    assert result.objects[paths[3]].parts_resumed == len(stored) == result.parts_resumed
    assert s3_client.head_object(Bucket=bucket, Key=failing)["ETag"].strip('"') == info[paths[3]][2]
    assert multipart_uploads(s3_client, bucket) == []
    assert len(object_keys(s3_client, bucket)) == len(paths) + 1


def test_permanent_failure_aborts_the_multipart_upload(s3_client, bucket, tmp_path) -> None:
    name = make_thermo_file(tmp_path)
    info = file_info_of(tmp_path, [name])
    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "simulated"}}, "UploadPart")
    fail_on(s3_client, "UploadPart", when=lambda _params, n: n == 2, exc=denied)
    with pytest.raises(S3AccessDeniedError, match=r"access denied.*multipart upload \S+ was aborted"):
        upload(s3_client, bucket, tmp_path, info, name)
    assert multipart_uploads(s3_client, bucket) == []  # nothing a retry could resume
    assert object_keys(s3_client, bucket) == []


def test_failed_abort_is_reported_and_the_next_run_cleans_up(s3_client, bucket, tmp_path) -> None:
    name = make_thermo_file(tmp_path)
    info = file_info_of(tmp_path, [name])
    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "simulated"}}, "UploadPart")
    fail_on(s3_client, "UploadPart", when=lambda _params, n: n == 2, exc=denied)
    aborts = fail_on(s3_client, "AbortMultipartUpload", when=lambda _params, n: n == 1)
    with pytest.raises(S3AccessDeniedError, match=r"could not be aborted.*the next run aborts or resumes it"):
        upload(s3_client, bucket, tmp_path, info, name)
    assert aborts[0] == 1 and len(multipart_uploads(s3_client, bucket)) == 1
    retry_client = make_client(s3_client.meta.endpoint_url)
    result = upload(retry_client, bucket, tmp_path, info, name)  # resumes the leftover: it holds good parts
    assert result.uploaded == [name] and multipart_uploads(s3_client, bucket) == []


def test_stale_multipart_upload_of_a_killed_worker_is_aborted(s3_client, bucket, tmp_path) -> None:
    name = make_thermo_file(tmp_path)
    info = file_info_of(tmp_path, [name])
    s3_client.create_multipart_upload(Bucket=bucket, Key=PREFIX + name)
    s3_client.create_multipart_upload(Bucket=bucket, Key=PREFIX + name + ".other")  # another key: left alone
    upload(s3_client, bucket, tmp_path, info, name)
    assert [u["Key"] for u in multipart_uploads(s3_client, bucket)] == [PREFIX + name + ".other"]


def test_existing_different_object_is_never_overwritten(s3_client, bucket, counter, tmp_path) -> None:
    paths = make_bruker_set(tmp_path)
    info = file_info_of(tmp_path, paths)
    conflicting = PREFIX + paths[-1]  # the last file: nothing of the set may be uploaded
    s3_client.put_object(Bucket=bucket, Key=conflicting, Body=b"someone else's data")
    before = s3_client.head_object(Bucket=bucket, Key=conflicting)
    counter.reset()
    with pytest.raises(ExistingObjectMismatchError, match=r"already holds a different object.*never overwrites"):
        upload(s3_client, bucket, tmp_path, info, "N.d")
    assert counter.writes == 0
    after = s3_client.head_object(Bucket=bucket, Key=conflicting)
    assert (after["ETag"], after["VersionId"]) == (before["ETag"], before["VersionId"])
    assert object_keys(s3_client, bucket) == [conflicting]


def test_object_appearing_during_the_upload_is_not_replaced(s3_client, bucket, tmp_path) -> None:
    write_file(tmp_path / "a.raw", 1000, 1)
    info = file_info_of(tmp_path, ["a.raw"])
    intruder = make_client(s3_client.meta.endpoint_url)

    def sneak_in(params: dict[str, Any], **_kwargs: Any) -> None:
        if params["Key"] == PREFIX + "a.raw":
            intruder.put_object(Bucket=bucket, Key=params["Key"], Body=b"intruder")

    s3_client.meta.events.register("before-parameter-build.s3.PutObject", sneak_in)
    with pytest.raises(ExistingObjectMismatchError, match="appeared"):
        upload(s3_client, bucket, tmp_path, info, "a.raw")
    assert s3_client.get_object(Bucket=bucket, Key=PREFIX + "a.raw")["Body"].read() == b"intruder"


def test_file_changed_after_checksumming_same_size(s3_client, bucket, tmp_path) -> None:
    name = make_thermo_file(tmp_path, size=7 * MIB)
    info = file_info_of(tmp_path, [name])
    with (tmp_path / name).open("r+b") as handle:  # same size, different content
        handle.seek(6 * MIB)
        handle.write(b"changed")
    with pytest.raises(LocalFileChangedError, match=r"changed after it was checksummed.*deleted again"):
        upload(s3_client, bucket, tmp_path, info, name)
    assert object_keys(s3_client, bucket) == []  # the unverified upload was deleted, no manifest
    versions = s3_client.list_object_versions(Bucket=bucket)
    assert versions.get("Versions", []) == [] and versions.get("DeleteMarkers", []) == []


def test_file_changed_size_fails_before_any_upload(s3_client, bucket, counter, tmp_path) -> None:
    write_file(tmp_path / "a.raw", 1000, 1)
    write_file(tmp_path / "b.raw", 1000, 2)
    info = file_info_of(tmp_path, ["a.raw", "b.raw"])
    write_file(tmp_path / "b.raw", 1001, 2)
    with pytest.raises(LocalFileChangedError, match="1001 bytes but 1000 were recorded"):
        upload(s3_client, bucket, tmp_path, info, "set")
    assert counter.writes == 0


def test_path_escaping_the_prefix_is_rejected_before_any_request(s3_client, bucket, counter, tmp_path) -> None:
    write_file(tmp_path / "a.raw", 10, 1)
    info = {**file_info_of(tmp_path, ["a.raw"]), "../escape.raw": [10, "0" * 32, "0" * 32]}
    with pytest.raises(UnsafePathError, match=r"'\.\./escape\.raw'"):
        upload(s3_client, bucket, tmp_path, info, "a.raw")
    assert sum(counter.calls.values()) == 0


def test_part_size_other_than_the_recorded_one_fails(s3_client, bucket, counter, tmp_path) -> None:
    name = make_thermo_file(tmp_path)
    info = file_info_of(tmp_path, [name], part_size=6 * MIB)  # 2 parts
    with pytest.raises(PartSizeMismatchError, match=r"2-part ETag.*3-part ETag"):
        upload(s3_client, bucket, tmp_path, info, name)
    assert sum(counter.calls.values()) == 0


def test_progress_is_logged(s3_client, bucket, tmp_path, caplog) -> None:
    name = make_thermo_file(tmp_path)
    info = file_info_of(tmp_path, [name])
    with caplog.at_level(logging.INFO, logger="rawvault.s3.progress"):
        upload(s3_client, bucket, tmp_path, info, name, progress_interval=0)
    lines = [r.getMessage() for r in caplog.records if r.name == "rawvault.s3.progress"]
    assert any("MiB of 12.0 MiB" in line and "%" in line and "MiB/s" in line and "ETA" in line for line in lines)
    assert "done, 12.0 MiB" in lines[-1]


# --- SSE-KMS: S3's ETag is not an MD5, verification by SHA-256 checksum ---------------------------------
# kms_client talks to moto's server answering like AWS under SSE-KMS: a new random ETag for every upload.

KMS = ObjectSettings(server_side_encryption="aws:kms", kms_key_id="alias/rawvault-test", max_concurrency=4)


def test_kms_objects_are_verified_by_checksum(kms_client, kms_bucket, tmp_path) -> None:
    paths = make_bruker_set(tmp_path)
    info = file_info_of(tmp_path, paths)
    result = upload(kms_client, kms_bucket, tmp_path, info, "N.d", object_settings=KMS)
    assert {obj.verified_by for obj in result.objects.values()} == {VerificationMode.CHECKSUM}
    assert all(obj.s3_etag != obj.etag for obj in result.objects.values())
    raw = make_client(kms_client.meta.endpoint_url).head_object(Bucket=kms_bucket, Key=PREFIX + paths[3])
    assert raw["ServerSideEncryption"] == "aws:kms" and "rawvault-test" in raw["SSEKMSKeyId"]

    counter = CallCounter(kms_client)  # a re-run trusts the manifest written after verification
    again = upload(kms_client, kms_bucket, tmp_path, info, "N.d", object_settings=KMS)
    assert counter.writes == 0 and again.already_complete and again.s3_etag == result.s3_etag
    assert {obj.verified_by for obj in again.objects.values()} == {VerificationMode.MANIFEST}


def test_kms_existing_objects_without_manifest_are_verified_by_local_checksum(kms_client, kms_bucket, tmp_path) -> None:
    paths = make_bruker_set(tmp_path)
    info = file_info_of(tmp_path, paths)
    upload(kms_client, kms_bucket, tmp_path, info, "N.d", object_settings=KMS)
    kms_client.delete_object(Bucket=kms_bucket, Key=PREFIX + "N.d.rawvault-manifest.json")
    result = upload(kms_client, kms_bucket, tmp_path, info, "N.d", object_settings=KMS)
    assert result.uploaded == [] and result.manifest_written
    assert {obj.verified_by for obj in result.objects.values()} == {VerificationMode.CHECKSUM}


def test_kms_object_uploaded_again_gets_a_new_etag_and_the_manifest_is_replaced(kms_client, kms_bucket, tmp_path):
    """Issue 11 finding 2: under SSE-KMS a lost object uploaded again has a new ETag; the manifest must say so."""
    paths = make_bruker_set(tmp_path)
    info, lost, key = file_info_of(tmp_path, paths), paths[1], PREFIX + "N.d.rawvault-manifest.json"
    first = upload(kms_client, kms_bucket, tmp_path, info, "N.d", object_settings=KMS)
    for version in kms_client.list_object_versions(Bucket=kms_bucket, Prefix=PREFIX + lost)["Versions"]:
        kms_client.delete_object(Bucket=kms_bucket, Key=PREFIX + lost, VersionId=version["VersionId"])  # for good

    repaired = upload(kms_client, kms_bucket, tmp_path, info, "N.d", object_settings=KMS)

    assert repaired.uploaded == [lost] and repaired.objects[lost].s3_etag != first.objects[lost].s3_etag
    manifest = json.loads(kms_client.get_object(Bucket=kms_bucket, Key=key)["Body"].read())
    assert manifest["files"][lost]["s3_etag"] == repaired.objects[lost].s3_etag  # describes what is in S3
    assert repaired.s3_etag == repaired.manifest_etag != first.manifest_etag == repaired.replaced_manifest_etag
    # Versioned bucket: the old manifest stays as the previous version.
    assert len(kms_client.list_object_versions(Bucket=kms_bucket, Prefix=key)["Versions"]) == 2
    again = upload(kms_client, kms_bucket, tmp_path, info, "N.d", object_settings=KMS)
    assert again.already_complete and again.s3_etag == repaired.s3_etag  # trusted through the new manifest


def test_kms_checksum_mismatch_fails_and_deletes_the_upload(kms_client, kms_bucket, tmp_path) -> None:
    name = make_thermo_file(tmp_path)
    info = file_info_of(tmp_path, [name])
    rewrite_kms_checksums(kms_client, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=-3")
    with pytest.raises(VerificationError, match=r"SHA-256 checksum .* differs.*deleted again"):
        upload(kms_client, kms_bucket, tmp_path, info, name, object_settings=KMS)
    assert object_keys(kms_client, kms_bucket) == []


def test_kms_without_checksum_is_never_silently_accepted(kms_client, kms_bucket, tmp_path) -> None:
    write_file(tmp_path / "a.raw", 1000, 1)
    info = file_info_of(tmp_path, ["a.raw"])
    rewrite_kms_checksums(kms_client, None)
    with pytest.raises(VerificationError, match="no SHA-256 checksum"):
        upload(kms_client, kms_bucket, tmp_path, info, "a.raw", object_settings=KMS)
    assert object_keys(kms_client, kms_bucket) == []


def test_kms_local_file_changed_is_detected(kms_client, kms_bucket, tmp_path) -> None:
    write_file(tmp_path / "a.raw", 1000, 1)
    info = file_info_of(tmp_path, ["a.raw"])
    write_file(tmp_path / "a.raw", 1000, 2)  # same size, other content
    with pytest.raises(LocalFileChangedError, match=r"changed after checksumming.*deleted again"):
        upload(kms_client, kms_bucket, tmp_path, info, "a.raw", object_settings=KMS)
    assert object_keys(kms_client, kms_bucket) == []


# --- the S3 server goes away in the middle of an upload --------------------------------------------------


def test_server_stopping_mid_upload_fails_then_retry_succeeds(tmp_path) -> None:
    with S3Server() as server:
        client = make_client(server.endpoint_url, max_attempts=2)
        client.create_bucket(Bucket="rv-stop")
        name = make_thermo_file(tmp_path)
        info = file_info_of(tmp_path, [name])
        parts = [0]

        def stop_server(**_kwargs: Any) -> None:
            parts[0] += 1
            if parts[0] == 1:
                server.stop(kill=True)

        client.meta.events.register("after-call.s3.UploadPart", stop_server)
        with pytest.raises(S3TransientError, match=r"cannot reach S3.*is kept.*the next run resumes it"):
            upload(client, "rv-stop", tmp_path, info, name)

        server.start()  # moto keeps its state in memory: the restarted server is empty
        client = make_client(server.endpoint_url)
        client.create_bucket(Bucket="rv-stop")
        result = upload(client, "rv-stop", tmp_path, info, name)
        assert result.uploaded == [name]
        assert client.head_object(Bucket="rv-stop", Key=PREFIX + name)["ETag"].strip('"') == info[name][2]
        assert multipart_uploads(client, "rv-stop") == []


def test_file_info_from_the_checksum_step_matches_what_s3_reports(s3_client, bucket, tmp_path) -> None:
    checksum = pytest.importorskip("rawvault.checksum")
    paths = [*make_bruker_set(tmp_path), make_thermo_file(tmp_path)]
    write_file(tmp_path / "exact.raw", PART, 3)
    paths.append("exact.raw")
    info = checksum.checksum_files(tmp_path, paths, PART)
    assert info == file_info_of(tmp_path, paths)  # the checksum step and this test agree on the ETag rule
    result = upload(s3_client, bucket, tmp_path, info, "mixed")
    assert {p: o.verified_by for p, o in result.objects.items()} == dict.fromkeys(paths, VerificationMode.ETAG)
    for path in paths:
        assert s3_client.head_object(Bucket=bucket, Key=PREFIX + path)["ETag"].strip('"') == info[path][2]
