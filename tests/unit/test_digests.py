"""The digest engine against hashlib: whole files, byte ranges, parts, S3's SHA-256 forms, the sink, the part plan."""

from __future__ import annotations

import base64
import hashlib
import io
import random
from pathlib import Path

import pytest

from rawvault.digests import (
    EMPTY_MD5,
    RING_BUFFERS,
    PartPlan,
    digest_file,
    digest_stream,
    multipart_parts,
    part_count,
    plan_parts,
    split_checksum,
    uses_multipart,
)
from shared.s3_limits import MIB


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def reference(data: bytes, part_size: int) -> tuple[str, str, str, int | None]:
    """``(md5, etag, sha256, parts)`` of ``data`` uploaded with ``part_size`` parts, from hashlib."""
    md5 = hashlib.md5(data).hexdigest()
    if len(data) <= part_size:
        return md5, md5, b64(hashlib.sha256(data).digest()), None
    parts = [data[i : i + part_size] for i in range(0, len(data), part_size)]
    etag = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + f"-{len(parts)}"
    sha = b64(hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).digest())
    return md5, etag, sha, len(parts)


def write(path: Path, size: int, seed: int = 0) -> bytes:
    data = random.Random(seed * 7919 + size).randbytes(size)
    path.write_bytes(data)
    return data


@pytest.mark.parametrize("part_size", [1, 3, 7, 16])
@pytest.mark.parametrize("chunk_size", [1, 2, 5, 10, 1024])  # most do not divide the parts
@pytest.mark.parametrize("size", [0, 1, 6, 7, 8, 15, 16, 17, 49, 100])
def test_whole_file_matches_hashlib(tmp_path: Path, size: int, part_size: int, chunk_size: int) -> None:
    path = tmp_path / "f.bin"
    data = write(path, size, part_size)
    got = digest_file(path, part_size, sha256=True, chunk_size=chunk_size)
    assert (got.size, got.md5, got.etag, got.sha256, got.parts) == (size, *reference(data, part_size))


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.touch()
    got = digest_file(path, 5, sha256=True)
    assert (got.size, got.md5, got.etag, got.parts) == (0, EMPTY_MD5, EMPTY_MD5, None)
    assert got.sha256 == b64(hashlib.sha256(b"").digest())


def test_without_a_part_size_the_etag_is_the_md5_and_sha256_is_off_by_default(tmp_path: Path) -> None:
    path = tmp_path / "f"
    data = write(path, 3 * MIB + 5)
    got = digest_file(path, None, chunk_size=MIB)
    assert got.md5 == got.etag == hashlib.md5(data).hexdigest()
    assert got.sha256 is None and got.parts is None


@pytest.mark.parametrize(("offset", "length"), [(0, 10), (7, 13), (95, 5), (0, 0), (33, 67)])
def test_byte_range(tmp_path: Path, offset: int, length: int) -> None:
    path = tmp_path / "f"
    data = write(path, 100)
    got = digest_file(path, None, offset=offset, length=length, sha256=True, chunk_size=4)
    piece = data[offset : offset + length]
    expected = (length, hashlib.md5(piece).hexdigest(), b64(hashlib.sha256(piece).digest()))
    assert (got.size, got.md5, got.sha256) == expected


def test_a_range_past_the_end_reports_the_bytes_it_read(tmp_path: Path) -> None:
    path = tmp_path / "f"
    write(path, 100)
    assert digest_file(path, None, offset=90, length=20).size == 10


def test_megabyte_parts_through_the_buffer_ring(tmp_path: Path) -> None:
    path = tmp_path / "big"
    data = write(path, 3 * MIB + 12345)
    part_size = MIB + 1  # neither divides the other
    got = digest_file(path, part_size, sha256=True, chunk_size=256 * 1024 + 3)
    assert (got.md5, got.etag, got.sha256, got.parts) == reference(data, part_size)


@pytest.mark.parametrize("chunk_size", [3, 4096])
def test_sink_receives_every_byte_in_order(tmp_path: Path, chunk_size: int) -> None:
    path = tmp_path / "f"
    data = write(path, 10_000)
    copy = io.BytesIO()
    got = digest_file(path, 1000, sink=copy.write, chunk_size=chunk_size)
    assert copy.getvalue() == data
    assert got.md5 == hashlib.md5(data).hexdigest()


def test_stream_limit_stops_reading(tmp_path: Path) -> None:
    stream = io.BytesIO(b"x" * 50)
    got = digest_stream(stream, 16, size=20, limit=21, chunk_size=4)
    assert got.size == 21  # one byte past the expected size shows growth


def test_progress_reports_bytes_read(tmp_path: Path) -> None:
    path = tmp_path / "f"
    write(path, 100)
    calls: list[tuple[int, int]] = []
    digest_file(path, 7, chunk_size=25, progress=lambda done, total: calls.append((done, total)), progress_interval=0)
    assert calls == [(25, 100), (50, 100), (75, 100), (100, 100)]


@pytest.mark.parametrize("bad", [0, -3])
def test_bad_sizes_are_rejected(tmp_path: Path, bad: int) -> None:
    path = tmp_path / "f"
    write(path, 10)
    with pytest.raises(ValueError, match="part_size"):
        digest_file(path, bad)
    with pytest.raises(ValueError, match="chunk_size"):
        digest_file(path, 5, chunk_size=bad)


# --- the part plan ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "part_size"), [(0, 5), (4, 5), (5, 5), (6, 5), (10, 5), (11, 5), (1000, 7)])
def test_plan_parts_is_the_part_count_and_covers_the_file(size: int, part_size: int) -> None:
    plan = plan_parts(size, part_size)
    assert len(plan) == part_count(size, part_size)
    assert plan[0] == PartPlan(1, 0, min(size, part_size))
    assert sum(part.size for part in plan) == size
    assert all(part.offset == (part.number - 1) * part_size for part in plan)
    assert multipart_parts(size, part_size) == (len(plan) if uses_multipart(size, part_size) else None)


def test_split_checksum_of_a_composite_value() -> None:
    assert split_checksum("abc=-3") == ("abc=", 3)
    assert split_checksum("") == (None, None)


def test_a_sink_error_stops_the_read_and_propagates(tmp_path: Path) -> None:
    path = tmp_path / "f"
    write(path, 100_000)
    seen: list[int] = []

    def disk_full_at_the_second_chunk(chunk: memoryview) -> None:
        seen.append(len(chunk))
        if len(seen) == 2:
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left on device"):
        digest_file(path, 1000, sink=disk_full_at_the_second_chunk, chunk_size=1000)
    assert len(seen) <= 2 + RING_BUFFERS  # the read stops once the ring comes back to the failed chunk
