"""Recorded file info, part-size consistency, local digests, manifests, progress lines, error translation."""

from __future__ import annotations

import base64
import hashlib
import logging
from pathlib import Path

import pytest
from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

pytest.register_assert_rewrite("tests.s3_fixtures")  # other test modules load it as a plugin too

from rawvault.digests import digest_file, multipart_parts, split_checksum  # noqa: E402
from rawvault.s3 import manifest  # noqa: E402
from rawvault.s3.client import client_config, redact_url  # noqa: E402
from rawvault.s3.download import transfer_config  # noqa: E402
from rawvault.s3.errors import (  # noqa: E402
    FileInfoError,
    PartSizeMismatchError,
    S3AccessDeniedError,
    S3PermanentError,
    S3TransientError,
    UnsafePathError,
    classify,
)
from rawvault.s3.file_info import check_part_size, parse_file_info  # noqa: E402
from rawvault.s3.progress import ProgressReporter, format_bytes, format_duration  # noqa: E402
from rawvault.s3.put import s3_metadata  # noqa: E402
from tests.s3_fixtures import expected_entry, write_file  # noqa: E402

PART = 1024  # local digests work with any part size; S3 needs >= 5 MiB


def test_parse_file_info_accepts_lists_and_tuples_and_sorts() -> None:
    md5 = "0" * 32
    recorded = parse_file_info({"b": [1, md5, md5], "a": (2, md5, f'"{md5}"')})
    assert list(recorded) == ["a", "b"]
    assert recorded["a"].etag == md5  # quotes stripped
    assert recorded["a"].etag_parts is None


@pytest.mark.parametrize(
    ("file_info", "error", "match"),
    [
        ({}, FileInfoError, "empty"),
        ({"a": [1, "x" * 32, "0" * 32]}, FileInfoError, "MD5"),
        ({"a": [-1, "0" * 32, "0" * 32]}, FileInfoError, "size"),
        ({"a": [True, "0" * 32, "0" * 32]}, FileInfoError, "size"),
        ({"a": [1, "0" * 32]}, FileInfoError, r"\[size, md5, etag\]"),
        ({"a": [1, "0" * 32, "0" * 32 + "-0"]}, FileInfoError, "ETag"),
        ({"../a": [1, "0" * 32, "0" * 32]}, UnsafePathError, r"'\.\./a'"),
    ],
)
def test_parse_file_info_rejects(file_info: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        parse_file_info(file_info)


def test_multipart_parts_follows_the_single_put_rule() -> None:
    assert multipart_parts(0, 5) is None
    assert multipart_parts(5, 5) is None
    assert multipart_parts(6, 5) == 2
    assert multipart_parts(15, 5) == 3


def test_check_part_size(tmp_path: Path) -> None:
    for size in (0, PART, PART + 1, 3 * PART):
        path = write_file(tmp_path / f"f{size}", size, size)
        (recorded,) = parse_file_info({path.name: expected_entry(path, PART)}).values()
        check_part_size(recorded, PART)
    big = write_file(tmp_path / "big", 3 * PART, 1)
    (recorded,) = parse_file_info({"big": expected_entry(big, PART)}).values()
    with pytest.raises(PartSizeMismatchError, match=r"3-part ETag.*2-part ETag.*another part size"):
        check_part_size(recorded, 2 * PART)
    with pytest.raises(PartSizeMismatchError, match="single-PUT"):
        check_part_size(recorded, 3 * PART)
    md5 = "1" * 32
    (odd,) = parse_file_info({"x": [10, md5, "2" * 32]}).values()
    with pytest.raises(PartSizeMismatchError):  # single PUT but the ETag is not the MD5
        check_part_size(odd, PART)
    (huge,) = parse_file_info({"x": [10_001 * PART, md5, md5 + "-10001"]}).values()
    with pytest.raises(PartSizeMismatchError, match="more than S3's 10000"):
        check_part_size(huge, PART)


@pytest.mark.parametrize("size", [0, 1, PART - 1, PART, PART + 1, 2 * PART, 3 * PART + 7])
def test_local_digests_match_an_independent_computation(tmp_path: Path, size: int) -> None:
    path = write_file(tmp_path / "f", size, size)
    data = path.read_bytes()
    digests = digest_file(path, PART, sha256=True)
    expected_size, md5, etag = expected_entry(path, PART)
    assert (digests.size, digests.md5, digests.etag) == (expected_size, md5, etag)
    if size <= PART:
        assert digests.parts is None
        assert digests.sha256 == base64.b64encode(hashlib.sha256(data).digest()).decode()
    else:
        parts = [data[i : i + PART] for i in range(0, size, PART)]
        composite = hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).digest()
        assert digests.parts == len(parts)
        assert digests.sha256 == base64.b64encode(composite).decode()


def test_split_checksum() -> None:
    assert split_checksum("abc=-3") == ("abc=", 3)
    assert split_checksum("abc=") == ("abc=", None)
    assert split_checksum(None) == (None, None)


def test_transfer_config_makes_single_put_up_to_part_size() -> None:
    config = transfer_config(5 * 1024 * 1024, 4)
    # s3transfer goes multipart when size >= multipart_threshold.
    assert config.multipart_threshold == 5 * 1024 * 1024 + 1
    assert config.multipart_chunksize == 5 * 1024 * 1024
    assert config.max_concurrency == 4
    assert config.preferred_transfer_client == "classic"


def test_s3_metadata_is_ascii() -> None:
    assert s3_metadata({"Raw-File-Id": "Prøbe 1.raw", "md5": "ab"}) == {
        "raw-file-id": "Pr%C3%B8be%201.raw",
        "md5": "ab",
    }


def test_manifest_identity_ignores_s3_side_values() -> None:
    base = {
        "format": manifest.MANIFEST_FORMAT,
        "raw_file_id": "N.d",
        "part_size": 5,
        "files": {"N.d/a": {"key": "k", "size": 1, "md5": "m", "etag": "e", "s3_etag": "x"}},
        "completed_at": "then",
    }
    other = {**base, "completed_at": "now", "files": {"N.d/a": {"key": "k", "size": 1, "md5": "m", "etag": "e"}}}
    assert manifest.same_set(base, other)
    assert not manifest.same_set(base, {**base, "part_size": 6})
    assert manifest.decode(manifest.encode(base)) == base
    for body in (b"not json", b"[]", b'{"format": "x"}', b"\xff"):
        with pytest.raises(ValueError, match="manifest"):
            manifest.decode(body)


def test_progress_reporter_rate_limits_and_reports(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    logger = logging.getLogger("test.progress")
    reporter = ProgressReporter(100 * 1024 * 1024, label="up", interval=10, logger=logger, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="test.progress"):
        for _ in range(50):  # 50 callbacks within 5 s: no line
            now[0] += 0.1
            reporter(1024 * 1024)
        assert caplog.messages == []
        now[0] = 10.0
        reporter(0)
        reporter(-1024 * 1024)  # a retried request rewinds
        now[0] = 20.0
        reporter(1024 * 1024)
        reporter.finish()
    first, second, final = caplog.messages
    assert first == "up: 50.0 MiB of 100.0 MiB (50.0%), 5.0 MiB/s, ETA 0:00:10"
    assert "50.0%" in second and "ETA" in second
    assert final.startswith("up: done, 50.0 MiB in 0:00:20")


def test_formatting_helpers() -> None:
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(3 * 1024**4) == "3.0 TiB"
    assert format_duration(3725) == "1:02:05"


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "msg"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op"
    )


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (_client_error("AccessDenied", 403), S3AccessDeniedError),
        (_client_error("InvalidAccessKeyId", 403), S3AccessDeniedError),
        (_client_error("SignatureDoesNotMatch", 403), S3AccessDeniedError),
        (_client_error("403", 403), S3AccessDeniedError),
        (NoCredentialsError(), S3AccessDeniedError),
        (_client_error("SlowDown", 503), S3TransientError),
        (_client_error("InternalError", 500), S3TransientError),
        (EndpointConnectionError(endpoint_url="http://x"), S3TransientError),
        (_client_error("NoSuchBucket", 404), S3PermanentError),
        (_client_error("InvalidStorageClass", 400), S3PermanentError),
    ],
)
def test_classify(error: Exception, expected: type[Exception]) -> None:
    result = classify(error, "uploading x")
    assert type(result) is expected
    assert str(result).startswith("uploading x: ")


def test_classify_sees_through_boto3_upload_failed() -> None:
    try:
        try:
            raise _client_error("AccessDenied", 403)
        except ClientError as inner:
            raise S3UploadFailedError(f"Failed to upload: {inner}") from None
    except S3UploadFailedError as wrapped:
        wrapped.__context__ = _client_error("AccessDenied", 403)
        assert isinstance(classify(wrapped, "x"), S3AccessDeniedError)


def test_client_config_and_redaction() -> None:
    config = client_config(4, max_attempts=5)
    assert config.retries == {"mode": "standard", "total_max_attempts": 5}
    assert config.max_pool_connections == 10
    assert config.request_checksum_calculation == "when_supported"
    assert redact_url("http://user:secret@host:9000/path?x=1") == "http://host:9000/path"
    assert redact_url(None) == "<AWS default endpoint>"
