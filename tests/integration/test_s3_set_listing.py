"""A set's check phase lists its keys once instead of a HEAD per key; the part slots stay busy (issue 16).

On both stores the tests use (moto's server, AWS-like, and ``rclone serve s3``, without conditional
writes), over HTTP, through :func:`rawvault.s3.upload.upload_file_set` with the capabilities the
store's probe finds. Every request of the upload's client is counted by a botocore event hook.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("tests.s3_fixtures")

from rawvault.s3 import upload as upload_mod  # noqa: E402
from rawvault.s3 import upload_verify as upload_verify_mod  # noqa: E402
from rawvault.s3.capabilities import StoreCapabilities  # noqa: E402
from rawvault.s3.client import client_config  # noqa: E402
from rawvault.s3.errors import ExistingObjectMismatchError  # noqa: E402
from rawvault.s3.listing import list_keys  # noqa: E402
from rawvault.s3.objects import VerificationMode  # noqa: E402
from rawvault.s3.parallel import connections_needed  # noqa: E402
from tests.in_flight import InFlight  # noqa: E402
from tests.s3_fixtures import PART, RequestLog, S3Backend, file_info_of, object_keys, write_file  # noqa: E402
from tests.small_sets import PREFIX, store_caps, upload_small_set, write_small_set  # noqa: E402

pytest_plugins = ["tests.s3_fixtures"]

FILES = 20
OTHER = b"another writer's bytes"


def _guard_heads(caps: StoreCapabilities | None, writes: int) -> int:
    """HEADs a store without conditional writes adds: one before each write and one per object before the manifest."""
    return 0 if caps is None or caps.conditional_writes else 2 * writes + 1


def test_a_fresh_set_is_listed_once_instead_of_a_head_per_key(
    s3_backend: S3Backend, backend_bucket: str, tmp_path: Path
) -> None:
    info = write_small_set(tmp_path, FILES)
    caps = store_caps(s3_backend, backend_bucket)
    client = s3_backend.client()
    requests = RequestLog(client)

    result = upload_small_set(client, backend_bucket, tmp_path, info, caps)

    assert sorted(result.uploaded) == sorted(info)
    assert {obj.verified_by for obj in result.objects.values()} == {VerificationMode.ETAG}
    calls = requests.calls
    # Before issue 16's listings: 0 LIST and 2 x 20 HEADs (the check phase's, then the verification's).
    # The verification after the PUTs is a second listing where the PUT answers show the file (moto, as
    # AWS), a HEAD per object where they do not (rclone: no SHA-256 in the answer, test_s3_listed_check).
    listings = 2 if caps is None else 1
    verifying_heads = 0 if caps is None else FILES
    assert requests.keys_of("ListObjectsV2") == [PREFIX + "run.d/small-0"] * listings  # the set's common prefix
    assert calls["PutObject"] == FILES + 1  # every file once, the manifest
    assert calls["HeadObject"] == verifying_heads + _guard_heads(caps, FILES)
    assert calls["GetObject"] == 2  # the manifest: read first (there is none yet), read back after its PUT
    assert sum(calls.values()) == listings + FILES + 1 + verifying_heads + _guard_heads(caps, FILES) + 2, calls


def test_a_one_file_set_keeps_its_single_head(s3_backend: S3Backend, backend_bucket: str, tmp_path: Path) -> None:
    info = write_small_set(tmp_path, 1)
    client = s3_backend.client()
    requests = RequestLog(client)
    upload_small_set(client, backend_bucket, tmp_path, info, store_caps(s3_backend, backend_bucket))
    assert requests.calls["ListObjectsV2"] == 0
    assert requests.keys_of("HeadObject")[0] == PREFIX + "run.d/small-000.bin"  # the check, before the PUT


def test_objects_the_listing_shows_are_still_head_checked(
    s3_backend: S3Backend, backend_bucket: str, tmp_path: Path
) -> None:
    info = write_small_set(tmp_path, FILES)
    caps = store_caps(s3_backend, backend_bucket)
    there = sorted(info)[3:6]
    for path in there:
        s3_backend.client().put_object(Bucket=backend_bucket, Key=PREFIX + path, Body=(tmp_path / path).read_bytes())
    client = s3_backend.client()
    requests = RequestLog(client)

    result = upload_small_set(client, backend_bucket, tmp_path, info, caps)

    assert sorted(result.skipped) == there and len(result.uploaded) == FILES - len(there)
    assert requests.calls["ListObjectsV2"] == (2 if caps is None else 1)  # moto: + the verifying listing
    # The check phase HEADs exactly the keys the listing showed, before anything is written.
    assert sorted(requests.keys_of("HeadObject")[: len(there)]) == [PREFIX + path for path in there]
    guarded = caps is not None and not caps.conditional_writes  # + a guard's HEAD per write, a recheck per object
    verifying_head = int(caps is not None)  # moto: the second listing verifies the PUTs
    heads = Counter(requests.keys_of("HeadObject"))
    for path in info:
        assert heads[PREFIX + path] == (1 if path in there else verifying_head + int(guarded)) + int(guarded), path


def test_a_different_object_the_listing_shows_fails_the_set_and_is_kept(
    s3_backend: S3Backend, backend_bucket: str, tmp_path: Path
) -> None:
    info = write_small_set(tmp_path, FILES)
    caps = store_caps(s3_backend, backend_bucket)
    taken = PREFIX + sorted(info)[7]
    s3_backend.client().put_object(Bucket=backend_bucket, Key=taken, Body=OTHER)
    client = s3_backend.client()
    requests = RequestLog(client)

    with pytest.raises(ExistingObjectMismatchError, match=r"small-007\.bin") as refused:
        upload_small_set(client, backend_bucket, tmp_path, info, caps)

    assert "never overwrites" in str(refused.value)
    assert requests.keys_of("HeadObject") == [taken] and requests.calls["PutObject"] == 0  # nothing uploaded
    assert client.get_object(Bucket=backend_bucket, Key=taken)["Body"].read() == OTHER


@pytest.mark.parametrize("content", ["the same file", "other bytes"])
def test_a_key_that_appears_after_the_listing_is_checked_and_never_replaced(
    s3_backend: S3Backend, backend_bucket: str, tmp_path: Path, content: str
) -> None:
    info = write_small_set(tmp_path, FILES)
    caps = store_caps(s3_backend, backend_bucket)
    path = sorted(info)[11]
    body = (tmp_path / path).read_bytes() if content == "the same file" else OTHER
    client, writer = s3_backend.client(), s3_backend.client()

    def another_writer(**_kwargs: Any) -> None:  # between the listing and rawvault's PUT of the key
        writer.put_object(Bucket=backend_bucket, Key=PREFIX + path, Body=body)

    client.meta.events.register("after-call.s3.ListObjectsV2", another_writer)
    if content == "the same file":
        result = upload_small_set(client, backend_bucket, tmp_path, info, caps)
        assert result.skipped == [path] and len(result.uploaded) == FILES - 1  # checked, accepted, not replaced
    else:
        with pytest.raises(ExistingObjectMismatchError, match=r"small-011\.bin"):
            upload_small_set(client, backend_bucket, tmp_path, info, caps)
        assert PREFIX + "run.d.rawvault-manifest.json" not in object_keys(client, backend_bucket)
    assert client.get_object(Bucket=backend_bucket, Key=PREFIX + path)["Body"].read() == body


def test_the_listing_pages_and_stops_after_the_set(s3_backend: S3Backend, backend_bucket: str) -> None:
    client = s3_backend.client()
    keys = [f"{PREFIX}run.d/{name}" for name in "abcdefg"]
    for key in [*keys[::2], f"{PREFIX}run.d.rawvault-manifest.json", f"{PREFIX}run.dx", f"{PREFIX}run.d/x"]:
        client.put_object(Bucket=backend_bucket, Key=key, Body=b"x")
    for n in range(9):  # under the set's prefix, after its last key
        client.put_object(Bucket=backend_bucket, Key=f"{PREFIX}run.d/z{n}", Body=b"x")
    requests = RequestLog(client)

    assert set(list_keys(client, backend_bucket, keys, page_size=3) or {}) == set(keys[::2])
    assert requests.keys_of("ListObjectsV2") == [f"{PREFIX}run.d/"] * 2  # a c e | g x z0: not the pages of z1..z8
    assert list_keys(client, backend_bucket, keys[:1]) is None  # one key: its HEAD costs as much


def test_files_wait_for_their_heads_beside_other_files_puts_within_the_pool(
    s3_server: Any, bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 6 part slots: 12 file threads, so verifying HEADs overlap PUTs; the client has connections_needed(6).
    slots = 6
    info = write_small_set(tmp_path, 40)
    client = _client(s3_server.endpoint_url, connections_needed(slots))
    requests = InFlight(hold=0.03).watch(client, ("PutObject", "HeadObject"))
    data = InFlight(hold=0.03).watch(client, ("PutObject",))  # PUTs alone
    reads = InFlight(hold=0.03)
    verify = upload_verify_mod.check_or_read_back

    def counted_verification(*args: Any, **kwargs: Any) -> Any:
        reads.enter()
        try:
            return verify(*args, **kwargs)
        finally:
            reads.leave()

    monkeypatch.setattr(upload_verify_mod, "check_or_read_back", counted_verification)
    # Every object verified by HEAD after its PUT, as where the set's listing cannot vouch for it
    # (SSE-KMS, Object Lock, a PUT answer without the SHA-256).
    monkeypatch.setattr(upload_mod, "listing_verifies", lambda *_args, **_kwargs: False)
    with caplog.at_level(logging.WARNING, logger="urllib3"):
        result = upload_small_set(client, bucket, tmp_path, info, None, concurrency=slots)

    assert len(result.uploaded) == 40
    assert data.most == slots  # the data requests: never more than the part slots
    # Before: one file thread per slot, each waiting for its PUT or its HEAD, so at most `slots` of both at once.
    assert requests.most > slots
    assert 1 <= reads.most <= slots  # verifications that may read data: bounded by the slots
    assert "Connection pool is full" not in caplog.text


def _client(endpoint_url: str, connections: int) -> Any:
    import boto3

    from tests.s3_fixtures import CREDENTIALS, REGION

    config = client_config(connections, max_attempts=2, connect_timeout=2, read_timeout=30)
    return boto3.client("s3", endpoint_url=endpoint_url, region_name=REGION, config=config, **CREDENTIALS)


def test_a_file_sent_in_parts_is_headed_even_when_the_listing_leaves_it_out(
    s3_backend: S3Backend, backend_bucket: str, tmp_path: Path
) -> None:
    """A listing that misses an object (another writer's, just after it) must not cost the parts of a large file."""
    info = write_small_set(tmp_path, 3)
    write_file(tmp_path / "run.d/analysis.tdf_bin", 2 * PART + 5, 99)  # three parts
    info = file_info_of(tmp_path, sorted([*info, "run.d/analysis.tdf_bin"]))
    caps = store_caps(s3_backend, backend_bucket)
    client, writer = s3_backend.client(), s3_backend.client()
    large = PREFIX + "run.d/analysis.tdf_bin"
    client.meta.events.register(
        "after-call.s3.ListObjectsV2", lambda **_kwargs: writer.put_object(Bucket=backend_bucket, Key=large, Body=OTHER)
    )
    requests = RequestLog(client)

    with pytest.raises(ExistingObjectMismatchError, match=r"analysis\.tdf_bin"):
        upload_small_set(client, backend_bucket, tmp_path, info, caps)

    assert large in requests.keys_of("HeadObject")  # checked in the check phase, though the listing had none
    assert requests.calls["CreateMultipartUpload"] == requests.calls["UploadPart"] == 0  # no part was sent
    assert client.get_object(Bucket=backend_bucket, Key=large)["Body"].read() == OTHER
