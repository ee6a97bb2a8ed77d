"""check_object, the one rule "does this S3 object hold this recorded file": every verdict; head and delete_version."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import pytest

from rawvault.digests import digest_stream
from rawvault.s3.errors import LocalFileChangedError
from rawvault.s3.objects import (
    ExpectedObject,
    VerdictKind,
    VerificationMode,
    check_content,
    check_object,
    delete_version,
    etag_of,
    head,
    is_kms,
    version_of,
)

pytest_plugins = ["tests.unit.fakes"]

DATA = b"recorded content"
MD5 = hashlib.md5(DATA).hexdigest()
SHA = base64.b64encode(hashlib.sha256(DATA).digest()).decode()
ENTRY = ExpectedObject(path="x.d/a.tdf", key="p/x.d/a.tdf", size=len(DATA), md5=MD5, etag=MD5)
KMS_ETAG = "0123456789abcdef0123456789abcdef"


def answer(**fields: Any) -> dict[str, Any]:
    """A head_object answer of an object holding DATA, with ``fields`` replaced."""
    return {"ContentLength": len(DATA), "ETag": f'"{MD5}"', **fields}


def kms(**fields: Any) -> dict[str, Any]:
    """Under SSE-KMS S3's ETag is no MD5 of the content."""
    return answer(**{"ETag": f'"{KMS_ETAG}"', "ServerSideEncryption": "aws:kms", **fields})


def with_manifest(checksum: str | None = SHA) -> ExpectedObject:
    return ExpectedObject(**{**ENTRY.__dict__, "s3_etag": KMS_ETAG, "checksum_sha256": checksum})


def local(tmp_path: Path, data: bytes = DATA) -> Path:
    path = tmp_path / "a.tdf"
    path.write_bytes(data)
    return path


def test_missing_object() -> None:
    verdict = check_object(None, ENTRY)
    assert (verdict.kind, verdict.ok) == (VerdictKind.MISSING, False)
    assert "missing" in verdict.problem and verdict.actual == "no object"


def test_size_differs() -> None:
    verdict = check_object(answer(ContentLength=3), ENTRY)
    assert verdict.kind is VerdictKind.SIZE_DIFFERS
    assert verdict.problem == f"size differs: 3 bytes in S3, {len(DATA)} recorded"


def test_recorded_etag_is_ok_by_etag() -> None:
    verdict = check_object(answer(), ENTRY)
    assert verdict.ok and verdict.how is VerificationMode.ETAG


def test_other_etag_of_a_plain_object_differs() -> None:
    verdict = check_object(answer(ETag='"ffff"'), ENTRY)
    assert verdict.kind is VerdictKind.ETAG_DIFFERS and "replaced or corrupted" in verdict.problem
    assert (verdict.expected, verdict.actual) == (MD5, "ffff")


def test_a_plain_object_is_never_accepted_through_the_manifest(tmp_path: Path) -> None:
    """Its ETag is the MD5 of its content: another ETag is other content, whatever the manifest says.

    Before the one rule, the upload accepted such an object when the manifest listed its ETag and SHA-256.
    """
    expected = ExpectedObject(**{**ENTRY.__dict__, "s3_etag": "ffff", "checksum_sha256": SHA})
    response = answer(ETag='"ffff"', ChecksumSHA256=SHA)
    assert check_object(response, expected).kind is VerdictKind.ETAG_DIFFERS
    assert check_object(response, expected, local_file=local(tmp_path), part_size=1024).kind is VerdictKind.ETAG_DIFFERS


def test_kms_object_recorded_in_the_manifest_is_ok_by_manifest() -> None:
    verdict = check_object(kms(ChecksumSHA256=SHA), with_manifest())
    assert verdict.ok and verdict.how is VerificationMode.MANIFEST


def test_kms_object_with_another_etag_than_the_manifest_differs() -> None:
    verdict = check_object(kms(ETag='"1111"', ChecksumSHA256=SHA), with_manifest())
    assert verdict.kind is VerdictKind.ETAG_DIFFERS and "recorded in the manifest" in verdict.problem
    assert verdict.note == "SSE-KMS: compared with the manifest"


@pytest.mark.parametrize("remote", ["AAAA", None], ids=["other", "none"])
def test_kms_object_whose_sha256_is_not_the_manifests_differs(remote: str | None) -> None:
    verdict = check_object(kms(ChecksumSHA256=remote), with_manifest())
    assert verdict.kind is VerdictKind.CHECKSUM_DIFFERS and "SHA-256 differs" in verdict.problem


def test_kms_object_without_any_record_cannot_be_verified_without_the_file() -> None:
    verdict = check_object(kms(ChecksumSHA256=SHA), ENTRY)
    assert verdict.kind is VerdictKind.CANNOT_VERIFY and "cannot be verified without downloading" in verdict.problem


def test_kms_object_proven_by_the_local_files_sha256(tmp_path: Path) -> None:
    verdict = check_object(kms(ChecksumSHA256=SHA), ENTRY, local_file=local(tmp_path), part_size=1024)
    assert verdict.ok and verdict.how is VerificationMode.CHECKSUM


def test_kms_multipart_object_proven_by_the_composite_sha256(tmp_path: Path) -> None:
    data = bytes(range(256)) * 10
    parts = [data[i : i + 1000] for i in range(0, len(data), 1000)]
    composite = base64.b64encode(hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).digest())
    digests = [hashlib.md5(p).digest() for p in parts]
    etag = hashlib.md5(b"".join(digests)).hexdigest() + "-3"
    entry = ExpectedObject("big", "p/big", len(data), hashlib.md5(data).hexdigest(), etag)
    response = {"ContentLength": len(data), "ETag": '"k"', "ServerSideEncryption": "aws:kms"}
    path = local(tmp_path, data)
    ok = check_object({**response, "ChecksumSHA256": f"{composite.decode()}-3"}, entry, local_file=path, part_size=1000)
    assert ok.how is VerificationMode.CHECKSUM
    wrong_count = {**response, "ChecksumSHA256": f"{composite.decode()}-4"}
    assert check_object(wrong_count, entry, local_file=path, part_size=1000).kind is VerdictKind.CHECKSUM_DIFFERS


def test_kms_object_whose_sha256_is_not_the_local_files_differs(tmp_path: Path) -> None:
    verdict = check_object(kms(ChecksumSHA256="AAAA"), ENTRY, local_file=local(tmp_path), part_size=1024)
    assert verdict.kind is VerdictKind.CHECKSUM_DIFFERS and "differs from the local file's" in verdict.problem


def test_kms_object_without_sha256_cannot_be_verified_even_with_the_file(tmp_path: Path) -> None:
    verdict = check_object(kms(), ENTRY, local_file=local(tmp_path), part_size=1024)
    assert verdict.kind is VerdictKind.CANNOT_VERIFY and "no SHA-256 checksum" in verdict.problem


def test_changed_local_file_is_an_error_not_a_verdict(tmp_path: Path) -> None:
    with pytest.raises(LocalFileChangedError, match="changed after checksumming"):
        check_object(kms(ChecksumSHA256=SHA), ENTRY, local_file=local(tmp_path, b"X" * len(DATA)), part_size=1024)


def test_manifest_without_sha256_is_proven_by_the_local_file_when_there_is_one(tmp_path: Path) -> None:
    """A record without a SHA-256 rests on the ETag alone: the upload, which has the file, proves the content."""
    response = kms(ChecksumSHA256="AAAA")
    assert check_object(response, with_manifest(checksum=None)).how is VerificationMode.MANIFEST
    with_file = check_object(response, with_manifest(checksum=None), local_file=local(tmp_path), part_size=1024)
    assert with_file.kind is VerdictKind.CHECKSUM_DIFFERS


def test_response_helpers() -> None:
    assert etag_of({"ETag": '"abc"'}) == "abc"
    assert is_kms({"ServerSideEncryption": "aws:kms:dsse"}) and is_kms({"SSECustomerAlgorithm": "AES256"})
    assert not is_kms({"ServerSideEncryption": "AES256"})
    assert version_of({"VersionId": "null"}) is None and version_of({"VersionId": "v1"}) == "v1"


def test_head_and_delete_version_on_a_versioned_bucket(fake_s3: Any) -> None:
    fake_s3.create_bucket(Bucket="rv-unit-b")
    fake_s3.put_bucket_versioning(Bucket="rv-unit-b", VersioningConfiguration={"Status": "Enabled"})
    assert head(fake_s3, "rv-unit-b", "k") is None
    fake_s3.put_object(Bucket="rv-unit-b", Key="k", Body=b"old")
    fake_s3.put_object(Bucket="rv-unit-b", Key="k", Body=DATA)
    newest = head(fake_s3, "rv-unit-b", "k")
    assert newest is not None and check_object(newest, ExpectedObject("k", "k", len(DATA), MD5, MD5)).ok
    assert delete_version(fake_s3, "rv-unit-b", "k", newest) == "the uploaded object was deleted again"
    older = head(fake_s3, "rv-unit-b", "k")
    assert older is not None and older["ContentLength"] == 3  # only the version this run wrote is gone


# --- check_content: the bytes read back from an object ---------------------------------------------------------


def digests_of(data: bytes, part_size: int = 8, *, sha256: bool = False) -> Any:
    import io

    return digest_stream(io.BytesIO(data), part_size, size=len(data), sha256=sha256)


def test_content_read_back_that_is_the_recorded_file_is_ok() -> None:
    verdict = check_content(digests_of(DATA, part_size=len(DATA)), ENTRY)
    assert verdict.ok and verdict.how is VerificationMode.CONTENT


def test_content_of_the_same_size_with_other_bytes_differs_and_names_md5_and_etag() -> None:
    other = bytes(b ^ 1 for b in DATA)
    verdict = check_content(digests_of(other, part_size=len(DATA)), ENTRY)
    assert verdict.kind is VerdictKind.CONTENT_DIFFERS
    assert f"MD5 {hashlib.md5(other).hexdigest()}, recorded {MD5}" in verdict.problem
    assert "ETag" in verdict.problem and "size" not in verdict.problem
    assert verdict.expected == f"MD5 {MD5}"


def test_content_with_a_wrong_sha256_differs_only_when_sha256_is_checked() -> None:
    entry = ExpectedObject(**{**ENTRY.__dict__, "checksum_sha256": "AAAA"})
    digests = digests_of(DATA, part_size=len(DATA), sha256=True)
    assert check_content(digests, entry).ok  # not asked to compare the SHA-256
    verdict = check_content(digests, entry, sha256=True)
    assert verdict.kind is VerdictKind.CONTENT_DIFFERS and f"SHA-256 {SHA}, recorded AAAA" in verdict.problem
    assert check_content(digests, ExpectedObject(**{**ENTRY.__dict__, "checksum_sha256": SHA}), sha256=True).ok


def test_content_shorter_than_recorded_differs_by_size() -> None:
    verdict = check_content(digests_of(DATA[:-1], part_size=len(DATA)), ENTRY)
    assert verdict.kind is VerdictKind.CONTENT_DIFFERS
    assert verdict.problem.startswith(f"the downloaded data has size {len(DATA) - 1} bytes, recorded {len(DATA)}")


def test_kms_object_uploaded_again_is_proven_by_the_local_file_not_by_the_stale_manifest(tmp_path: Path) -> None:
    """A repair under SSE-KMS: the new object has a new ETag the old manifest does not know; the upload (which has
    the local file) proves it by S3's SHA-256, while restore and audit (no file) report the stale record until
    the manifest is rewritten."""
    again = kms(ETag='"f00dfeedf00dfeedf00dfeedf00dfeed"', ChecksumSHA256=SHA)
    with_file = check_object(again, with_manifest(), local_file=local(tmp_path), part_size=1024)
    assert with_file.ok and with_file.how is VerificationMode.CHECKSUM
    without_file = check_object(again, with_manifest())
    assert without_file.kind is VerdictKind.ETAG_DIFFERS and "recorded in the manifest" in without_file.problem
    rewritten = ExpectedObject(
        **{**ENTRY.__dict__, "s3_etag": "f00dfeedf00dfeedf00dfeedf00dfeed", "checksum_sha256": SHA}
    )
    assert check_object(again, rewritten).how is VerificationMode.MANIFEST


# --- stores that are not AWS (issue 15): a whole-file-MD5 ETag, other ETag shapes, deletes under Object Lock -----


def test_a_multipart_etag_that_is_the_whole_files_md5_is_ok_by_md5() -> None:
    # rclone serve s3 reports the whole object's MD5 for a multipart object: as strong as the recorded ETag.
    multipart = ExpectedObject(path="x.d/a.tdf", key="p/x.d/a.tdf", size=len(DATA), md5=MD5, etag="abc-3")
    verdict = check_object(answer(), multipart)
    assert verdict.ok and verdict.how is VerificationMode.WHOLE_MD5


def test_another_etag_on_a_store_of_another_etag_shape_is_not_called_different_but_unproven() -> None:
    from rawvault.s3.capabilities import EtagShape

    opaque = answer(ETag='"not-an-md5-at-all"')
    assert check_object(opaque, ENTRY).kind is VerdictKind.ETAG_DIFFERS  # AWS's shapes: other content
    verdict = check_object(opaque, ENTRY, etag_shape=EtagShape.OTHER)
    assert verdict.kind is VerdictKind.CANNOT_VERIFY and "not an MD5 of its content" in verdict.problem


def test_an_object_its_etag_cannot_prove_is_read_back_never_skipped(fake_s3: Any, tmp_path: Path) -> None:
    from rawvault.s3.capabilities import EtagShape
    from rawvault.s3.readback import check_or_read_back

    fake_s3.create_bucket(Bucket="rv-unit-r")
    # Versioned: the read-back GETs exactly the version HEAD saw (unversioned, it sends If-Match with the ETag).
    fake_s3.put_bucket_versioning(Bucket="rv-unit-r", VersioningConfiguration={"Status": "Enabled"})
    fake_s3.put_object(Bucket="rv-unit-r", Key="good", Body=DATA)
    fake_s3.put_object(Bucket="rv-unit-r", Key="bad", Body=b"X" * len(DATA))
    for key, ok in (("good", True), ("bad", False)):
        found = head(fake_s3, "rv-unit-r", key)
        assert found is not None
        found = {**found, "ETag": '"store-own-etag-1"'}  # an ETag of the store's own shape, no SHA-256
        expected = ExpectedObject(path="a.tdf", key=key, size=len(DATA), md5=MD5, etag=MD5)
        verdict = check_or_read_back(
            fake_s3, "rv-unit-r", found, expected, local_file=local(tmp_path), part_size=64,
            etag_shape=EtagShape.OTHER,
        )  # fmt: skip
        assert verdict.ok is ok, verdict.problem
        if ok:
            assert verdict.how is VerificationMode.CONTENT
        else:
            assert verdict.kind is VerdictKind.CONTENT_DIFFERS and MD5 in verdict.problem


def test_a_locked_version_that_cannot_be_deleted_is_hidden_behind_a_delete_marker(fake_s3: Any) -> None:
    from datetime import UTC, datetime, timedelta

    fake_s3.create_bucket(Bucket="rv-unit-l", ObjectLockEnabledForBucket=True)
    until = datetime.now(UTC) + timedelta(days=1)
    fake_s3.put_object(
        Bucket="rv-unit-l", Key="k", Body=b"wrong", ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until
    )
    written = head(fake_s3, "rv-unit-l", "k")
    assert written is not None
    note = delete_version(fake_s3, "rv-unit-l", "k", written)
    assert "hidden behind a delete marker" in note and version_of(written) in note
    assert head(fake_s3, "rv-unit-l", "k") is None  # the key is free for the next run ...
    versions = fake_s3.list_object_versions(Bucket="rv-unit-l", Prefix="k")
    assert [v["VersionId"] for v in versions["Versions"]] == [version_of(written)]  # ... the version stays, locked
