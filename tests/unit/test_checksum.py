"""checksum_file / checksum_files / s3_etag against hashlib, around every part and chunk boundary."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
from pathlib import Path

import pytest

from rawvault import checksum as checksum_module
from rawvault.checksum import (
    EMPTY_MD5,
    MIB,
    FileChangedError,
    FileChecksum,
    TooManyPartsError,
    checksum_file,
    checksum_files,
    part_count,
    s3_etag,
    uses_multipart,
)


def expected(data: bytes, part_size: int) -> FileChecksum:
    """The reference: hashlib over the whole data and over each part, with the single-PUT rule."""
    md5 = hashlib.md5(data).hexdigest()
    if len(data) <= part_size:
        return FileChecksum(len(data), md5, md5)
    digests = [hashlib.md5(data[i : i + part_size]).digest() for i in range(0, len(data), part_size)]
    etag = hashlib.md5(b"".join(digests)).hexdigest() + f"-{len(digests)}"
    return FileChecksum(len(data), md5, etag)


def write(path: Path, size: int, seed: int = 0) -> bytes:
    data = random.Random(seed * 1_000_003 + size).randbytes(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


# --- s3_etag -----------------------------------------------------------------------------


def test_s3_etag_of_no_parts_is_the_md5_of_nothing() -> None:
    assert s3_etag([]) == EMPTY_MD5 == "d41d8cd98f00b204e9800998ecf8427e"


def test_s3_etag_of_one_part_is_its_plain_md5() -> None:
    digest = hashlib.md5(b"hello").digest()
    assert s3_etag([digest]) == hashlib.md5(b"hello").hexdigest()


def test_s3_etag_of_several_parts_is_md5_of_digests_with_count() -> None:
    digests = [hashlib.md5(b"a" * 5).digest(), hashlib.md5(b"b" * 5).digest(), hashlib.md5(b"c").digest()]
    assert s3_etag(digests) == hashlib.md5(b"".join(digests)).hexdigest() + "-3"


def test_s3_etag_rejects_hex_digests() -> None:
    with pytest.raises(ValueError, match="16-byte binary MD5"):
        s3_etag([hashlib.md5(b"x").hexdigest().encode()])


@pytest.mark.parametrize(
    ("size", "part_size", "multipart", "parts"),
    [(0, 5, False, 1), (4, 5, False, 1), (5, 5, False, 1), (6, 5, True, 2), (10, 5, True, 2), (11, 5, True, 3)],
)
def test_part_count_follows_the_single_put_rule(size: int, part_size: int, multipart: bool, parts: int) -> None:
    assert uses_multipart(size, part_size) is multipart
    assert part_count(size, part_size) == parts


# --- checksum_file ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "part_size"),
    [
        pytest.param(0, 5, id="empty"),
        pytest.param(3, 5, id="smaller-than-a-part"),
        pytest.param(5, 5, id="exactly-one-part"),
        pytest.param(6, 5, id="one-part-plus-one-byte"),
        pytest.param(10, 5, id="exactly-two-parts"),
        pytest.param(23, 5, id="several-parts-with-a-tail"),
        pytest.param(1000, 7, id="many-parts"),
    ],
)
@pytest.mark.parametrize("chunk_size", [None, 1, 3], ids=["default-chunk", "chunk-1", "chunk-3"])
def test_named_cases_match_hashlib(tmp_path: Path, size: int, part_size: int, chunk_size: int | None) -> None:
    path = tmp_path / "f.raw"
    data = write(path, size)
    kwargs = {} if chunk_size is None else {"chunk_size": chunk_size}
    assert checksum_file(path, part_size, **kwargs) == expected(data, part_size)


def test_empty_file_has_the_empty_md5_as_md5_and_etag(tmp_path: Path) -> None:
    path = tmp_path / "empty.raw"
    path.touch()
    assert checksum_file(path, 5 * MIB) == FileChecksum(0, EMPTY_MD5, EMPTY_MD5)


SIZES = [0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 20, 21, 24, 25, 31, 32, 33, 35, 36, 49, 64, 65, 100]


@pytest.mark.parametrize("part_size", [1, 2, 5, 7, 8, 16])
@pytest.mark.parametrize("chunk_size", [1, 2, 3, 4, 5, 6, 7, 8, 10, 16, 17, 1024])
def test_every_size_around_part_and_chunk_boundaries(tmp_path: Path, part_size: int, chunk_size: int) -> None:
    for size in SIZES:
        path = tmp_path / f"{size}.bin"
        data = write(path, size, seed=part_size * 100 + chunk_size)
        got = checksum_file(path, part_size, chunk_size=chunk_size)
        assert got == expected(data, part_size), f"size={size} part_size={part_size} chunk_size={chunk_size}"


@pytest.mark.parametrize(
    ("size", "part_size", "chunk_size"),
    [
        (3 * MIB + 12345, MIB, 256 * 1024),  # chunks divide parts
        (3 * MIB + 12345, MIB + 1, 256 * 1024 + 3),  # neither divides the other
        (3 * MIB, 300_000, 1_000_000),  # several part boundaries inside one chunk
        (2 * MIB, 2 * MIB, 64 * 1024),  # threaded, single PUT: no part hashing
    ],
)
def test_megabyte_files_through_the_buffer_ring(tmp_path: Path, size: int, part_size: int, chunk_size: int) -> None:
    path = tmp_path / "big.raw"
    data = write(path, size)
    assert checksum_file(path, part_size, chunk_size=chunk_size) == expected(data, part_size)


def test_short_reads_are_handled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read may return fewer bytes than asked (network shares); boundaries must still be right."""
    path = tmp_path / "f.raw"
    data = write(path, 5000)
    real_open = Path.open

    class ShortReads:
        def __init__(self, stream: object) -> None:
            self._stream = stream
            self._sizes = iter([1, 7, 3, 500, 2, 64] * 1000)

        def readinto(self, buffer: memoryview) -> int:
            return self._stream.readinto(buffer[: min(len(buffer), next(self._sizes))])

        def __getattr__(self, name: str) -> object:
            return getattr(self._stream, name)

        def __enter__(self) -> ShortReads:
            return self

        def __exit__(self, *exc: object) -> None:
            self._stream.close()

    monkeypatch.setattr(Path, "open", lambda self, *a, **k: ShortReads(real_open(self, *a, **k)))
    assert checksum_file(path, 13, chunk_size=100) == expected(data, 13)
    assert checksum_file(path, 13, chunk_size=10_000) == expected(data, 13)


def test_as_list_is_the_file_info_format(tmp_path: Path) -> None:
    path = tmp_path / "f.raw"
    data = write(path, 12)
    result = checksum_file(path, 5)
    assert result.as_list() == [12, hashlib.md5(data).hexdigest(), expected(data, 5).etag]
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.size = 1  # type: ignore[misc]


def test_progress_is_reported_with_bytes_read_and_total(tmp_path: Path) -> None:
    path = tmp_path / "f.raw"
    write(path, 100)
    calls: list[tuple[int, int]] = []
    checksum_file(path, 7, chunk_size=10, progress=lambda done, total: calls.append((done, total)), progress_interval=0)
    assert calls == [(done, 100) for done in range(10, 101, 10)]
    calls.clear()
    checksum_file(path, 7, chunk_size=10, progress=lambda done, total: calls.append((done, total)))
    assert calls == []  # at most once per (default 10 s) interval


@pytest.mark.parametrize("bad", [0, -1])
def test_non_positive_sizes_are_rejected(tmp_path: Path, bad: int) -> None:
    path = tmp_path / "f.raw"
    write(path, 10)
    with pytest.raises(ValueError, match="part_size"):
        checksum_file(path, bad)
    with pytest.raises(ValueError, match="chunk_size"):
        checksum_file(path, 5, chunk_size=bad)


# --- files that change while being read ------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [4, 1000], ids=["threaded", "inline"])
def test_file_growing_during_read_raises_file_changed(tmp_path: Path, chunk_size: int) -> None:
    path = tmp_path / "growing.raw"
    write(path, 100)

    def append(done: int, total: int) -> None:
        if done <= total:
            with path.open("ab") as stream:
                stream.write(b"x" * 50)

    with pytest.raises(FileChangedError) as caught:
        checksum_file(path, 16, chunk_size=chunk_size, progress=append, progress_interval=0)
    message = str(caught.value)
    assert str(path) in message
    assert "changed while it was being checksummed" in message
    assert "size 100 -> " in message
    assert "retry the task once the instrument has finished writing" in message
    assert isinstance(caught.value, RuntimeError)


def test_file_growing_without_a_progress_callback_is_caught_by_the_size_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Growth after the last read (the reader saw EOF) is still caught by the stat after reading."""
    path = tmp_path / "growing.raw"
    write(path, 100)
    real_check = checksum_module._check_unchanged

    def grow_then_check(p: Path, before: os.stat_result, bytes_read: int) -> None:
        with p.open("ab") as stream:
            stream.write(b"x" * 50)
        real_check(p, before, bytes_read)

    monkeypatch.setattr(checksum_module, "_check_unchanged", grow_then_check)
    with pytest.raises(FileChangedError, match=r"size 100 -> 150 bytes"):
        checksum_file(path, 16, chunk_size=8)


@pytest.mark.parametrize("chunk_size", [4, 1000], ids=["threaded", "inline"])
def test_file_shrinking_during_read_raises_file_changed(tmp_path: Path, chunk_size: int) -> None:
    path = tmp_path / "shrinking.raw"
    write(path, 100)

    def truncate(done: int, total: int) -> None:
        os.truncate(path, 40)

    with pytest.raises(FileChangedError, match=r"size 100 -> 40 bytes"):
        checksum_file(path, 16, chunk_size=chunk_size, progress=truncate, progress_interval=0)


def test_rewrite_with_the_same_size_is_caught_by_the_modification_time(tmp_path: Path) -> None:
    path = tmp_path / "rewritten.raw"
    write(path, 100)
    mtime_ns = path.stat().st_mtime_ns

    def touch(done: int, total: int) -> None:
        os.utime(path, ns=(mtime_ns, mtime_ns + 1_000_000_000))

    with pytest.raises(FileChangedError, match="modification time changed"):
        checksum_file(path, 16, chunk_size=10, progress=touch, progress_interval=0)


def test_file_removed_during_read_raises_file_changed(tmp_path: Path) -> None:
    path = tmp_path / "moved.raw"
    write(path, 100)
    with pytest.raises(FileChangedError, match="moved or deleted"):
        checksum_file(path, 16, chunk_size=10, progress=lambda d, t: path.unlink(missing_ok=True), progress_interval=0)


# --- too many parts, unreadable files ----------------------------------------------------------


def test_too_many_parts_names_the_file_and_the_fix_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "huge.raw"
    with path.open("wb") as stream:  # sparse: 50 GB that would take minutes to read
        stream.truncate(10_001 * 5 * MIB)
    with pytest.raises(TooManyPartsError) as caught:
        checksum_file(path, 5 * MIB, progress=lambda d, t: pytest.fail("the file was read"), progress_interval=0)
    message = str(caught.value)
    assert str(path) in message
    assert "10001 parts" in message
    assert "raise backup.s3.part_size_mb to at least 6 MiB" in message
    assert isinstance(caught.value, ValueError)


def test_exactly_ten_thousand_parts_is_allowed(tmp_path: Path) -> None:
    path = tmp_path / "f.raw"
    data = write(path, 10_000 * 5)
    assert checksum_file(path, 5).etag.endswith("-10000")
    assert checksum_file(path, 5) == expected(data, 5)
    write(path, 10_000 * 5 + 1)
    with pytest.raises(TooManyPartsError, match="at least 1 MiB"):
        checksum_file(path, 5)


def test_s3_part_limit_matches_the_settings() -> None:
    from shared.settings import S3_MAX_PARTS

    assert S3_MAX_PARTS == checksum_module.S3_MAX_PARTS


def test_missing_file_raises_os_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "missing.raw"
    with pytest.raises(FileNotFoundError, match=r"missing\.raw"):
        checksum_file(path, 5)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files regardless of their mode")
def test_unreadable_file_raises_permission_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "secret.raw"
    write(path, 10)
    path.chmod(0)
    try:
        with pytest.raises(PermissionError, match=r"secret\.raw"):
            checksum_file(path, 5)
    finally:
        path.chmod(0o600)


def test_directory_raises_os_error(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError):
        checksum_file(tmp_path, 5)


# --- checksum_files ------------------------------------------------------------------------------


def test_checksum_files_keys_are_the_relative_paths_as_given(tmp_path: Path) -> None:
    relative_paths = ["NAME.d/analysis.tdf", "NAME.d/analysis.tdf_bin", "NAME.d/sub dir/ü.txt", "NAME.d/empty"]
    contents = {rel: write(tmp_path / rel, size) for rel, size in zip(relative_paths, [7, 23, 5, 0], strict=True)}
    result = checksum_files(tmp_path, relative_paths, 5)
    assert list(result) == relative_paths
    for rel, data in contents.items():
        assert result[rel] == expected(data, 5).as_list()
        assert result[rel] == checksum_file(tmp_path / rel, 5).as_list()


def test_checksum_files_reports_progress_per_file(tmp_path: Path) -> None:
    write(tmp_path / "a.wiff", 20)
    write(tmp_path / "a.wiff.scan", 30)
    calls: list[tuple[str, int, int]] = []
    checksum_files(
        tmp_path,
        ["a.wiff", "a.wiff.scan"],
        8,
        chunk_size=10,
        progress=lambda rel, done, total: calls.append((rel, done, total)),
        progress_interval=0,
    )
    assert calls == [
        ("a.wiff", 10, 20),
        ("a.wiff", 20, 20),
        ("a.wiff.scan", 10, 30),
        ("a.wiff.scan", 20, 30),
        ("a.wiff.scan", 30, 30),
    ]


@pytest.mark.parametrize("bad", ["../outside.raw", "/etc/passwd", "NAME.d/../../x", "", "a\\b.raw"])
def test_checksum_files_rejects_paths_outside_the_root(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="not a relative POSIX path"):
        checksum_files(tmp_path, [bad], 5)


def test_checksum_files_propagates_a_missing_file(tmp_path: Path) -> None:
    write(tmp_path / "a.raw", 3)
    with pytest.raises(FileNotFoundError, match=r"b\.raw"):
        checksum_files(tmp_path, ["a.raw", "b.raw"], 5)
