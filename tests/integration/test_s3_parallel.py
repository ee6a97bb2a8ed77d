"""The files of a set upload side by side in one pool of part slots; HEADs of a set run side by side.

Against moto's S3 server over HTTP. Every request is held a moment as it is sent, so requests that can
overlap do, and the most in flight at once shows the bound.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

pytest.register_assert_rewrite("tests.s3_fixtures")

from rawvault.s3.errors import S3AccessDeniedError  # noqa: E402
from rawvault.s3.upload import ObjectSettings, check_complete_set, upload_file_set  # noqa: E402
from tests.in_flight import InFlight  # noqa: E402
from tests.s3_fixtures import KIB, MIB, PART, file_info_of, multipart_uploads, object_keys, write_file  # noqa: E402

pytest_plugins = ["tests.s3_fixtures"]

PREFIX = "tims1/2026_11/"
DATA = ("PutObject", "UploadPart")


def _set(folder: Path, small_files: int) -> list[str]:
    paths = {f"run.d/small-{n:03d}.bin": 20 * KIB + n for n in range(small_files)}
    paths["run.d/analysis.tdf_bin"] = 12 * MIB  # three parts of 5 MiB
    for seed, (path, size) in enumerate(paths.items()):
        write_file(folder / path, size, seed)
    return sorted(paths)


def _upload(client: Any, bucket: str, folder: Path, info: dict[str, list], concurrency: int) -> Any:
    return upload_file_set(
        client, bucket=bucket, key_prefix=PREFIX, source_folder=folder, file_info=info, part_size=PART,
        raw_file_id="run.d", object_settings=ObjectSettings(max_concurrency=concurrency),
    )  # fmt: skip


def test_files_and_parts_of_a_set_share_max_concurrency_slots(s3_client: Any, bucket: str, tmp_path: Path) -> None:
    paths = _set(tmp_path, small_files=12)
    info = file_info_of(tmp_path, paths)
    data = InFlight().watch(s3_client, DATA)
    puts = InFlight(hold=0).watch(s3_client, ("PutObject",))
    heads = InFlight().watch(s3_client, ("HeadObject",))

    result = _upload(s3_client, bucket, tmp_path, info, concurrency=3)

    assert data.total == 12 + 3 + 1  # every small file once, every part once, the manifest
    assert data.most == 3  # the small files and the large file's parts share the three slots
    assert puts.most > 1  # small files go side by side (one after another before issue 16)
    # The large file's two HEADs (the check phase's, the verifying one); the small files' PUTs are verified by
    # the set's listing after them.
    assert heads.total == 2
    assert result.uploaded == paths and result.parts_resumed == 0
    manifest = PREFIX + "run.d.rawvault-manifest.json"
    assert object_keys(s3_client, bucket) == sorted([PREFIX + p for p in paths] + [manifest])
    for path, (size, _md5, etag) in info.items():
        head = s3_client.head_object(Bucket=bucket, Key=PREFIX + path)
        assert (head["ContentLength"], head["ETag"].strip('"')) == (size, etag)


def test_one_slot_uploads_one_request_at_a_time(s3_client: Any, bucket: str, tmp_path: Path) -> None:
    paths = _set(tmp_path, small_files=4)
    data = InFlight(hold=0.02).watch(s3_client, DATA)
    _upload(s3_client, bucket, tmp_path, file_info_of(tmp_path, paths), concurrency=1)
    assert data.most == 1 and data.total == 4 + 3 + 1


def test_the_first_failure_stops_the_set_and_is_the_error_raised(s3_client: Any, bucket: str, tmp_path: Path) -> None:
    paths = _set(tmp_path, small_files=30)
    info = file_info_of(tmp_path, paths)
    refused = PREFIX + "run.d/small-004.bin"
    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "simulated"}}, "PutObject")
    started: list[str] = []

    def refuse(params: dict[str, Any], **_kwargs: Any) -> None:
        started.append(params["Key"])
        if params["Key"] == refused:
            raise denied

    s3_client.meta.events.register("before-parameter-build.s3.PutObject", refuse)
    InFlight(hold=0.05).watch(s3_client, DATA)
    with pytest.raises(S3AccessDeniedError, match=r"small-004\.bin"):
        _upload(s3_client, bucket, tmp_path, info, concurrency=2)

    assert len(started) < 20  # nothing started after the failure but the requests already queued
    assert PREFIX + "run.d.rawvault-manifest.json" not in object_keys(s3_client, bucket)
    # The large file's upload, if it had started, is kept for the next run or aborted; never left half-known.
    for upload in multipart_uploads(s3_client, bucket):
        assert upload["Key"] == PREFIX + "run.d/analysis.tdf_bin"


def test_the_check_of_a_complete_set_heads_its_objects_side_by_side(
    s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    paths = _set(tmp_path, small_files=10)
    info = file_info_of(tmp_path, paths)
    _upload(s3_client, bucket, tmp_path, info, concurrency=3)
    heads = InFlight().watch(s3_client, ("HeadObject",))

    state = check_complete_set(
        s3_client, bucket=bucket, key_prefix=PREFIX, file_info=info, part_size=PART, raw_file_id="run.d",
        concurrency=3,
    )  # fmt: skip

    assert state.complete and sorted(state.result.objects) == paths
    assert heads.total == len(paths)
    assert 1 < heads.most <= 3  # one after another before (a repair check of a large Bruker set waited on each)
