"""upload_file_set's phases on moto's in-process S3: check everything first, upload, manifest last, nothing twice."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

import boto3
import pytest

from rawvault.s3.errors import ExistingObjectMismatchError, LocalFileChangedError
from rawvault.s3.file_set import MANIFEST_ENTRY, check_complete_set
from rawvault.s3.upload import ObjectSettings, VerificationMode, upload_file_set
from shared.s3_limits import MIB

pytest_plugins = ["tests.unit.fakes"]

PART = 5 * MIB
PREFIX = "t1/2026_11/"
BUCKET = "rv-unit"


def write_set(folder: Path) -> dict[str, list]:
    """A set of a two-part file, a small file and an empty one; returns its file_info (hashlib)."""
    sizes = {"N.d/big.tdf_bin": PART + 7, "N.d/small.tdf": 3000, "N.d/empty": 0}
    info = {}
    for seed, (path, size) in enumerate(sizes.items()):
        data = random.Random(seed).randbytes(size)
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(data)
        md5 = hashlib.md5(data).hexdigest()
        if size > PART:
            digests = [hashlib.md5(data[i : i + PART]).digest() for i in range(0, size, PART)]
            info[path] = [size, md5, f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"]
        else:
            info[path] = [size, md5, md5]
    return info


def writes_of(client: Any) -> list[tuple[str, str]]:
    """(operation, key) of every request that writes, in order."""
    calls: list[tuple[str, str]] = []
    for operation in ("PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"):

        def record(params: dict[str, Any], name: str = operation, **_kwargs: Any) -> None:
            calls.append((name, params.get("Key", "")))

        client.meta.events.register(f"before-parameter-build.s3.{operation}", record)
    return calls


def upload(client: Any, folder: Path, info: dict[str, list], **kwargs: Any) -> Any:
    return upload_file_set(
        client, bucket=BUCKET, key_prefix=PREFIX, source_folder=folder, file_info=info, part_size=PART,
        raw_file_id="N.d", **kwargs,
    )  # fmt: skip


@pytest.fixture
def s3(fake_s3: Any) -> Any:
    fake_s3.create_bucket(Bucket=BUCKET)
    return fake_s3


def test_every_file_then_the_manifest_last(s3: Any, tmp_path: Path) -> None:
    info = write_set(tmp_path)
    calls = writes_of(s3)
    result = upload(s3, tmp_path, info)
    assert calls[-1] == ("PutObject", f"{PREFIX}N.d.rawvault-manifest.json")  # its presence means "complete"
    assert {op for op, _ in calls} == {"PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"}
    assert result.uploaded == sorted(info) and result.manifest_written
    assert {obj.verified_by for obj in result.objects.values()} == {VerificationMode.ETAG}
    for path, (size, _md5, etag) in info.items():
        head = s3.head_object(Bucket=BUCKET, Key=PREFIX + path)
        assert (head["ContentLength"], head["ETag"].strip('"')) == (size, etag)


def check(client: Any, info: dict[str, list]) -> Any:
    return check_complete_set(client, bucket=BUCKET, key_prefix=PREFIX, file_info=info, part_size=PART,
                              raw_file_id="N.d")  # fmt: skip


def test_a_complete_set_uploads_nothing_and_is_confirmed_without_writing(s3: Any, tmp_path: Path) -> None:
    info = write_set(tmp_path)
    first = upload(s3, tmp_path, info)
    calls = writes_of(s3)
    again = upload(s3, tmp_path, info)
    assert calls == [] and again.already_complete and again.s3_etag == first.s3_etag
    confirmed = check(s3, info)
    assert confirmed.complete and confirmed.result.s3_etag == first.s3_etag and calls == []
    s3.delete_object(Bucket=BUCKET, Key=f"{PREFIX}N.d.rawvault-manifest.json")
    assert check(s3, info).problems == {MANIFEST_ENTRY: "missing"}


def test_the_check_of_a_complete_set_heads_every_object(s3: Any, tmp_path: Path) -> None:
    """Issue 11 item 1: the manifest alone is not proof; a set with a lost object is not complete."""
    info = write_set(tmp_path)
    upload(s3, tmp_path, info)
    other = boto3.client("s3", region_name="us-east-1")  # s3 refuses overwrites since the upload
    other.delete_object(Bucket=BUCKET, Key=f"{PREFIX}N.d/small.tdf")
    other.put_object(Bucket=BUCKET, Key=f"{PREFIX}N.d/empty", Body=b"not empty")
    state = check(s3, info)
    assert not state.complete
    assert set(state.problems) == {"N.d/small.tdf", "N.d/empty"}
    assert "missing" in state.problems["N.d/small.tdf"] and "size differs" in state.problems["N.d/empty"]
    assert sorted(state.result.objects) == ["N.d/big.tdf_bin"]  # what still holds its file


def test_a_different_object_stops_the_set_before_anything_is_written(s3: Any, tmp_path: Path) -> None:
    info = write_set(tmp_path)
    s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}N.d/small.tdf", Body=b"someone else's")
    calls = writes_of(s3)
    with pytest.raises(ExistingObjectMismatchError, match=r"already holds a different object.*never overwrites"):
        upload(s3, tmp_path, info)
    assert calls == []
    assert s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}N.d/small.tdf")["Body"].read() == b"someone else's"


def test_a_local_file_of_another_size_stops_the_set_before_anything_is_written(s3: Any, tmp_path: Path) -> None:
    info = write_set(tmp_path)
    (tmp_path / "N.d/small.tdf").write_bytes(b"x")
    calls = writes_of(s3)
    with pytest.raises(LocalFileChangedError, match="1 bytes but 3000 were recorded"):
        upload(s3, tmp_path, info)
    assert calls == []


def test_the_guard_stops_the_upload_before_the_next_write(s3: Any, tmp_path: Path) -> None:
    info = write_set(tmp_path)

    class LostClaimError(Exception):
        pass

    def guard() -> None:
        raise LostClaimError

    calls = writes_of(s3)
    with pytest.raises(LostClaimError):
        upload(s3, tmp_path, info, guard=guard)
    assert calls == []


def test_a_put_queued_for_a_part_slot_never_starts_after_the_set_stopped(s3: Any, tmp_path: Path) -> None:
    """With more file threads than part slots, single PUTs wait for a slot; one that gets it after the set's
    first failure must not be sent (nor before the run's claim is checked again)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from rawvault.s3.errors import S3TransientError
    from rawvault.s3.file_info import RecordedFile
    from rawvault.s3.set_write import MultipartHooks, SetWrite, expected_object
    from rawvault.s3.upload_file import upload_file

    info = write_set(tmp_path)
    size, md5, etag = info["N.d/small.tdf"]
    expected = expected_object(RecordedFile("N.d/small.tdf", size, md5, etag), PREFIX + "N.d/small.tdf")
    writes, guards = writes_of(s3), []
    stopped = threading.Event()
    with ThreadPoolExecutor(1) as slots:
        hooks = MultipartHooks({}, None, lambda: guards.append(1), part_pool=slots, stop=stopped)
        write = SetWrite(PART, ObjectSettings(), {})
        upload_file(s3, BUCKET, expected, tmp_path / "N.d/small.tdf", write, lambda _n: None, hooks)
        assert writes == [("PutObject", PREFIX + "N.d/small.tdf")] and guards  # the claim checked before it
        stopped.set()
        other = expected_object(RecordedFile("N.d/empty", 0, *info["N.d/empty"][1:]), PREFIX + "N.d/empty")
        with pytest.raises(S3TransientError, match="the upload of its set stopped"):
            upload_file(s3, BUCKET, other, tmp_path / "N.d/empty", write, lambda _n: None, hooks)
    assert writes == [("PutObject", PREFIX + "N.d/small.tdf")]
