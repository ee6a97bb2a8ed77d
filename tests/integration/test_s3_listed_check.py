"""A set's single PUTs are verified by one listing after them, a HEAD only where it cannot vouch (issue 16).

Through :func:`rawvault.s3.upload.upload_file_set` over HTTP, on moto's server (AWS-like) and
``rclone serve s3`` (whose PUT answer has no SHA-256, so its objects keep their HEAD), with every
request of the upload's client counted. Another writer, a lagging listing and SSE-KMS are played by
botocore event hooks and by moto's SSE-KMS server.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError

pytest.register_assert_rewrite("tests.s3_fixtures")

from rawvault.s3 import upload as upload_mod  # noqa: E402
from rawvault.s3.errors import VerificationError  # noqa: E402
from rawvault.s3.file_info import RecordedFile  # noqa: E402
from rawvault.s3.listed_check import listing_verifies  # noqa: E402
from rawvault.s3.objects import VerificationMode  # noqa: E402
from rawvault.s3.set_write import SetWrite  # noqa: E402
from rawvault.s3.upload import ObjectSettings  # noqa: E402
from shared.settings import ObjectLockSettings  # noqa: E402
from tests.s3_fixtures import (  # noqa: E402
    PART,
    CallCounter,
    RequestLog,
    S3Backend,
    file_info_of,
    object_keys,
    write_file,
)
from tests.small_sets import MANIFEST, PREFIX, store_caps, upload_small_set, write_small_set  # noqa: E402

pytest_plugins = ["tests.s3_fixtures"]

FILES = 12
OTHER = b"another writer's bytes"


def _after_call(client: Any, operation: str, key: str, action: Any) -> None:
    """Run ``action()`` right after the upload client's ``operation`` on ``key`` was answered."""

    def note_key(params: dict[str, Any], context: dict[str, Any], **_kwargs: Any) -> None:
        context["test_key"] = params.get("Key")

    def after(context: dict[str, Any], **_kwargs: Any) -> None:
        if context.get("test_key") == key:
            action()

    client.meta.events.register(f"before-parameter-build.s3.{operation}", note_key)
    client.meta.events.register(f"after-call.s3.{operation}", after)


def test_the_manifest_records_what_a_head_reports_and_a_rerun_keeps_it(
    s3_backend: S3Backend, backend_bucket: str, tmp_path: Path
) -> None:
    info = write_small_set(tmp_path, FILES)
    caps = store_caps(s3_backend, backend_bucket)
    client = s3_backend.client()
    upload_small_set(client, backend_bucket, tmp_path, info, caps)

    manifest = json.loads(client.get_object(Bucket=backend_bucket, Key=MANIFEST)["Body"].read())
    for path in info:
        head = client.head_object(Bucket=backend_bucket, Key=PREFIX + path, ChecksumMode="ENABLED")
        sha256 = base64.b64encode(hashlib.sha256((tmp_path / path).read_bytes()).digest()).decode()
        recorded = manifest["files"][path]
        assert (recorded["s3_etag"], recorded["checksum_sha256"]) == (head["ETag"].strip('"'), head["ChecksumSHA256"])
        assert recorded["checksum_sha256"] == sha256
    counter = CallCounter(client)
    again = upload_small_set(client, backend_bucket, tmp_path, info, caps)
    assert again.uploaded == [] and not again.manifest_written and counter.writes == 0  # the manifest is kept


def test_an_object_gone_before_the_listing_is_headed_and_fails_the_set(
    s3_server: Any, bucket: str, tmp_path: Path
) -> None:
    info = write_small_set(tmp_path, FILES)
    gone = PREFIX + sorted(info)[5]
    client, other = _client(s3_server), _client(s3_server)
    _after_call(client, "PutObject", gone, lambda: other.delete_object(Bucket=bucket, Key=gone))
    requests = CallCounter(client)

    with pytest.raises(VerificationError, match=r"small-005\.bin is missing right after its upload"):
        upload_small_set(client, bucket, tmp_path, info, None)

    assert requests.keys_of("HeadObject") == [gone]  # the listing vouched for every other object
    assert MANIFEST not in object_keys(client, bucket)  # nothing counts as done


@pytest.mark.parametrize("verified_by", ["the listing", "its own HEAD", "its own HEAD, multipart"])
def test_an_object_another_writer_put_after_the_upload_fails_the_set_and_is_kept(
    s3_server: Any, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, verified_by: str
) -> None:
    """Before: the HEAD's object was deleted as "ours" and the error blamed the local file."""
    if verified_by == "its own HEAD":
        monkeypatch.setattr(upload_mod, "listing_verifies", lambda *_args, **_kwargs: False)
    info = write_small_set(tmp_path, FILES)
    path, operation = sorted(info)[8], "PutObject"
    if verified_by.endswith("multipart"):
        path, operation = "run.d/analysis.tdf_bin", "CompleteMultipartUpload"
        write_file(tmp_path / path, 2 * PART + 5, 99)
        info = file_info_of(tmp_path, sorted([*info, path]))
    replaced = PREFIX + path

    def another_writer() -> None:  # between rawvault's upload and its verification
        other.delete_object(Bucket=bucket, Key=replaced)
        other.put_object(Bucket=bucket, Key=replaced, Body=OTHER)

    client, other = _client(s3_server), _client(s3_server)
    _after_call(client, operation, replaced, another_writer)
    requests = CallCounter(client)

    with pytest.raises(VerificationError, match=rf"{re.escape(path)}: .*another writer replaced it") as failed:
        upload_small_set(client, bucket, tmp_path, info, None)

    assert "left as it is" in str(failed.value) and "local file changed" not in str(failed.value)
    assert requests.keys_of("DeleteObject") == []  # not rawvault's object: never deleted
    assert other.get_object(Bucket=bucket, Key=replaced)["Body"].read() == OTHER
    assert MANIFEST not in object_keys(client, bucket)
    if verified_by == "the listing":
        assert requests.keys_of("HeadObject") == [replaced]  # its listed ETag is not its PUT answer's: HEADed


def _hide_everything(parsed: dict[str, Any], **_kwargs: Any) -> None:
    parsed["Contents"] = []  # a listing that lags behind the PUTs


@pytest.mark.parametrize("listing", ["fails", "shows nothing"])
def test_a_listing_that_cannot_vouch_leaves_every_object_to_its_head(
    s3_server: Any, bucket: str, tmp_path: Path, listing: str
) -> None:
    info = write_small_set(tmp_path, FILES)
    client = _client(s3_server)
    listings: list[int] = []

    def unreachable(**_kwargs: Any) -> None:
        raise EndpointConnectionError(endpoint_url=s3_server.endpoint_url)

    def second_listing(**kwargs: Any) -> None:  # the one after the PUTs
        listings.append(1)
        if len(listings) == 2:
            (unreachable if listing == "fails" else _hide_everything)(**kwargs)

    client.meta.events.register(f"{'before' if listing == 'fails' else 'after'}-call.s3.ListObjectsV2", second_listing)
    requests = RequestLog(client)

    result = upload_small_set(client, bucket, tmp_path, info, None)

    assert sorted(result.uploaded) == sorted(info) and result.manifest_written
    assert set(requests.keys_of("HeadObject")) == {PREFIX + path for path in info}


def test_sse_kms_objects_keep_their_verifying_head(kms_client: Any, kms_bucket: str, tmp_path: Path) -> None:
    info = write_small_set(tmp_path, 4)
    requests = RequestLog(kms_client)
    result = upload_small_set(kms_client, kms_bucket, tmp_path, info, None, server_side_encryption="aws:kms")
    assert {obj.verified_by for obj in result.objects.values()} == {VerificationMode.CHECKSUM}
    assert sorted(set(requests.keys_of("HeadObject"))) == sorted(PREFIX + path for path in info)
    assert requests.keys_of("ListObjectsV2") == [PREFIX + "run.d/small-00"]  # the check phase's only


@pytest.mark.parametrize(
    ("sizes", "settings", "verifies"),
    [
        ([10, 20], {}, True),
        ([10], {}, False),  # one PUT: its HEAD costs as much as a listing
        ([10, 2 * PART], {}, False),  # one single PUT beside a multipart upload
        ([10, 20], {"server_side_encryption": "aws:kms"}, False),  # SSE-KMS: the proof is a SHA-256 on HEAD
        ([10, 20], {"object_lock": ObjectLockSettings(mode="GOVERNANCE", days=1)}, False),  # retention: on HEAD
    ],
)
def test_which_uploads_await_the_listing(sizes: list[int], settings: dict[str, Any], verifies: bool) -> None:
    files = [RecordedFile(f"f{n}", size, "0" * 32, "0" * 32) for n, size in enumerate(sizes)]
    write = SetWrite(PART, ObjectSettings(**settings), {})
    assert listing_verifies(files, write) is verifies
    assert listing_verifies(files, write, listable=False) is False  # the check phase could not list the set


def _client(server: Any) -> Any:
    from tests.s3_fixtures import make_client

    return make_client(server.endpoint_url)
