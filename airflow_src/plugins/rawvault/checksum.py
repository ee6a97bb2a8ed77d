"""compute_checksum's set checksum: size, MD5 and S3 ETag of each file of a raw file set, from one read.

``compute_checksum`` records ``[size, md5, etag]`` per file in
``RawFile.file_info``; ``upload_to_s3`` later compares the ETag S3 reports with
the one recorded here. The hashing is :mod:`rawvault.digests` (the ETag rule
and the part plan are described there); this module adds what an acquisition
on an instrument share needs: the part-count limit checked before reading,
and a file that changes while it is read is an error, never a checksum.
Plain Python: no Airflow import.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from rawvault.digests import (
    DEFAULT_PROGRESS_INTERVAL_SECONDS,
    EMPTY_MD5,
    READ_CHUNK_BYTES,
    ProgressCallback,
    Sink,
    advise_sequential,
    digest_stream,
    part_count,
    s3_etag,
    uses_multipart,
)
from shared.s3_limits import MIB, S3_MAX_PARTS

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "EMPTY_MD5",
    "MIB",
    "S3_MAX_PARTS",
    "FileChangedError",
    "FileChecksum",
    "TooManyPartsError",
    "checksum_file",
    "checksum_files",
    "part_count",
    "s3_etag",
    "safe_join",
    "uses_multipart",
]

DEFAULT_CHUNK_SIZE = READ_CHUNK_BYTES


class FileChangedError(RuntimeError):
    """The file changed (size, modification time or content length) while it was being read."""


class TooManyPartsError(ValueError):
    """The file needs more than S3's 10,000 parts at the configured part size."""


@dataclass(frozen=True)
class FileChecksum:
    """Size in bytes, whole-file MD5 (hex) and S3 ETag (without quotes) of one file."""

    size: int
    md5: str
    etag: str

    def as_list(self) -> list:
        """``[size, md5, etag]``: the value stored in ``RawFile.file_info[relative_path]``."""
        return [self.size, self.md5, self.etag]


def _check_part_count(path: Path, size: int, part_size: int) -> None:
    parts = part_count(size, part_size)
    if parts > S3_MAX_PARTS:
        needed_mib = math.ceil(size / (S3_MAX_PARTS * MIB))
        raise TooManyPartsError(
            f"{path} is {size} bytes ({size / MIB:.1f} MiB): at a part size of {part_size} bytes "
            f"({part_size / MIB:g} MiB) it needs {parts} parts, more than S3's limit of {S3_MAX_PARTS} parts "
            f"per object; raise backup.s3.part_size_mb to at least {needed_mib} MiB"
        )


def _changed(path: Path, detail: str) -> FileChangedError:
    return FileChangedError(
        f"{path} changed while it was being checksummed ({detail}): the acquisition may still be running; "
        "retry the task once the instrument has finished writing"
    )


def _check_unchanged(path: Path, before: os.stat_result, bytes_read: int) -> None:
    try:
        after = path.stat()
    except FileNotFoundError:
        raise _changed(path, "it was moved or deleted") from None
    if after.st_size != before.st_size:
        raise _changed(path, f"size {before.st_size} -> {after.st_size} bytes")
    if bytes_read != before.st_size:
        raise _changed(path, f"size {before.st_size} bytes at the start, but {bytes_read} bytes read")
    if after.st_mtime_ns != before.st_mtime_ns:
        raise _changed(path, f"size {before.st_size} bytes unchanged, modification time changed")


def checksum_file(
    path: Path,
    part_size: int,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: ProgressCallback | None = None,
    progress_interval: float = DEFAULT_PROGRESS_INTERVAL_SECONDS,
    sink: Sink | None = None,
) -> FileChecksum:
    """Size, MD5 and S3 ETag (for ``part_size``-byte parts) of ``path``, from one read of the file.

    ``chunk_size`` is the read size (any positive value; parts need not be a
    multiple of it). ``progress(bytes_read, bytes_total)`` is called from the
    calling thread at most once per ``progress_interval`` seconds, for logging
    multi-GB files. ``sink(chunk)`` receives every byte read, in order, from
    the buffers that are hashed (the staged local copy is written this way);
    when the file grows it receives one byte past the size before
    :class:`FileChangedError` is raised, so the caller discards what it wrote
    whenever this raises.

    Raises:
        TooManyPartsError: the file needs more than 10,000 parts; raised before reading.
        FileChangedError: the size or modification time differs after reading, or the
            number of bytes read differs from the size (an acquisition still being written).
        OSError: the file cannot be opened or read (``PermissionError``,
            ``FileNotFoundError``, ...), propagated unchanged; its message names the path.
        ValueError: ``part_size`` or ``chunk_size`` is not positive.

    """
    path = Path(path)
    if part_size <= 0:
        raise ValueError(f"part_size must be a positive number of bytes, got {part_size}")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive number of bytes, got {chunk_size}")
    with path.open("rb", buffering=0) as stream:
        before = os.fstat(stream.fileno())
        size = before.st_size
        _check_part_count(path, size, part_size)
        advise_sequential(stream)
        # One byte past the size is read when there is one: growth shows up as an extra byte.
        digests = digest_stream(
            stream,
            part_size,
            size=size,
            limit=size + 1,
            chunk_size=chunk_size,
            progress=progress,
            progress_interval=progress_interval,
            sink=sink,
        )
    _check_unchanged(path, before, digests.size)
    return FileChecksum(size=size, md5=digests.md5, etag=digests.etag)


def safe_join(root: Path, relative_path: str) -> Path:
    """``root/relative_path`` for a relative POSIX path; ``..``, absolute paths and backslashes raise ``ValueError``."""
    relative = PurePosixPath(relative_path)
    if relative.is_absolute() or not relative.parts or ".." in relative.parts or "\\" in relative_path:
        raise ValueError(f"{relative_path!r} is not a relative POSIX path inside {root}")
    return root.joinpath(*relative.parts)


def checksum_files(
    root: Path,
    relative_paths: Iterable[str],
    part_size: int,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Callable[[str, int, int], None] | None = None,
    progress_interval: float = DEFAULT_PROGRESS_INTERVAL_SECONDS,
) -> dict[str, list]:
    """``{relative_path: [size, md5, etag]}`` for each file ``root/relative_path``, keys exactly as given.

    ``relative_paths`` are POSIX paths relative to ``root`` (``..``, absolute
    paths and backslashes are rejected with ``ValueError``).
    ``progress(relative_path, bytes_read, bytes_total)`` is called as in
    :func:`checksum_file`. Errors of :func:`checksum_file` propagate.
    """
    root = Path(root)
    result: dict[str, list] = {}
    for relative_path in relative_paths:
        path = safe_join(root, relative_path)

        def report(done: int, total: int, name: str = relative_path) -> None:
            if progress is not None:
                progress(name, done, total)

        result[relative_path] = checksum_file(
            path,
            part_size,
            chunk_size=chunk_size,
            progress=report if progress is not None else None,
            progress_interval=progress_interval,
        ).as_list()
    return result
