"""Bandwidth windows on real uploads to moto's server: the before-send hook, a rate limit, a pause window."""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("tests.s3_fixtures")  # it is imported here before pytest loads it as a plugin

from rawvault.s3.bandwidth import (  # noqa: E402
    BandwidthLimiter,
    BandwidthSchedule,
    SystemClock,
    throttle_uploads,
)
from rawvault.s3.multipart import PartReader  # noqa: E402
from shared.settings import BandwidthSettings  # noqa: E402
from tests.s3_fixtures import MIB, PART, S3Backend, backend_of, write_file  # noqa: E402

pytest_plugins = ["tests.s3_fixtures"]


@pytest.fixture
def moto(s3_server: Any) -> S3Backend:
    return backend_of("moto", s3_server)


def schedule(limit_mbit: float | None = None, *windows: dict[str, Any]) -> BandwidthSchedule:
    return BandwidthSchedule.from_settings(
        BandwidthSettings.model_validate({"limit_mbit": limit_mbit, "schedule": list(windows)})
    )


def upload_multipart(client: Any, bucket: str, key: str, source: Path, threads: int = 4) -> str:
    """Upload ``source`` in 5 MiB parts from ``threads`` threads, streamed from the file like rawvault does."""
    size = source.stat().st_size
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256")["UploadId"]

    def part(number: int) -> dict[str, Any]:
        offset = (number - 1) * PART
        with PartReader(source, offset, min(PART, size - offset)) as body:
            answer = client.upload_part(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body,
                ContentLength=len(body), ChecksumAlgorithm="SHA256",
            )  # fmt: skip
        return {"PartNumber": number, "ETag": answer["ETag"], "ChecksumSHA256": answer["ChecksumSHA256"]}

    with ThreadPoolExecutor(threads) as pool:
        parts = list(pool.map(part, range(1, -(-size // PART) + 1)))
    client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})
    return str(client.head_object(Bucket=bucket, Key=key)["ETag"]).strip('"')


def test_only_bytes_on_the_wire_count(moto: S3Backend, tmp_path: Path) -> None:
    # botocore reads a body three times over HTTP (checksum, SigV4 payload hash, send); the hook sees one.
    counted: list[int] = []

    class Counting(BandwidthLimiter):
        def throttle(self, nbytes: int) -> None:
            counted.append(nbytes)

    client = moto.client()
    throttle_uploads(client, Counting(schedule(80)))
    throttle_uploads(client, Counting(schedule(80)))  # registering twice changes nothing
    bucket = moto.new_bucket(client)
    source = write_file(tmp_path / "a.raw", 6 * MIB, seed=3)
    with PartReader(source, 0, 6 * MIB) as body:
        client.put_object(Bucket=bucket, Key="a.raw", Body=body, ContentLength=6 * MIB, ChecksumAlgorithm="SHA256")
    assert sum(counted) == 6 * MIB
    counted.clear()
    client.put_object(Bucket=bucket, Key="b.raw", Body=b"x" * 1000)  # a bytes body counts too
    assert counted == [1000]


def test_forty_mib_at_80_mbit_take_at_least_3_5_seconds(moto: S3Backend, tmp_path: Path) -> None:
    client = moto.client()
    bucket = moto.new_bucket(client)
    limiter = BandwidthLimiter(schedule(80))  # 80 Mbit/s = 10 MB/s: 40 MiB need 4.19 s less one 0.25 s burst
    throttle_uploads(client, limiter)
    source = write_file(tmp_path / "big.raw", 40 * MIB, seed=4)
    started = time.monotonic()
    etag = upload_multipart(client, bucket, "big.raw", source)
    elapsed = time.monotonic() - started
    assert elapsed >= 3.5  # a lower bound only: a busy machine is slower, never faster
    data = source.read_bytes()
    parts = [data[offset : offset + PART] for offset in range(0, len(data), PART)]
    assert etag == hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + "-8"
    status = limiter.status()
    assert status.limit_mbit == 80 and not status.paused
    assert "bandwidth limit 80 Mbit/s, achieved" in status.describe()


class ShiftedClock(SystemClock):
    """The real clocks, with the wall clock moved so that the test starts at ``start``."""

    def __init__(self, start: datetime) -> None:
        self.start = start
        self.origin = time.monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=time.monotonic() - self.origin)


def test_a_pause_window_holds_the_upload_until_it_ends(moto: S3Backend, tmp_path: Path) -> None:
    client = moto.client()
    bucket = moto.new_bucket(client)
    # A pause from 10:00 to 10:01, and the clock at 10:00:57: the window ends in 3 s.
    clock = ShiftedClock(datetime(2026, 11, 30, 10, 0, 57, tzinfo=UTC))
    limiter = BandwidthLimiter(schedule(None, {"from": "10:00", "to": "10:01", "limit_mbit": 0}), clock)
    throttle_uploads(client, limiter)
    source = write_file(tmp_path / "paused.raw", 2 * MIB, seed=5)
    assert limiter.status().paused
    started = time.monotonic()
    with PartReader(source, 0, 2 * MIB) as body:
        client.put_object(Bucket=bucket, Key="paused.raw", Body=body, ContentLength=2 * MIB)
    assert time.monotonic() - started >= 2.5
    assert clock.now() >= datetime(2026, 11, 30, 10, 1, tzinfo=UTC)
    assert client.get_object(Bucket=bucket, Key="paused.raw")["Body"].read() == source.read_bytes()
    assert not limiter.status().paused
