"""Size, MD5 and S3 ETag of raw files, computed from a single read of each file.

``compute_checksum`` records ``[size, md5, etag]`` per file in
``RawFile.file_info``; ``upload_to_s3`` later compares the ETag S3 reports with
the one recorded here. Plain Python: no Airflow import.

**ETag rule** (the uploader follows it, so the ETag is known before uploading):

- a file of at most ``part_size`` bytes (including an empty file) is uploaded
  with a single PUT, and its ETag is its plain MD5 in hex (no ``-1`` suffix);
- a larger file is uploaded as a multipart upload whose parts are exactly
  ``part_size`` bytes (the last one shorter), and its ETag is
  ``md5(concatenated binary part MD5s)`` in hex plus ``-<number of parts>``.

With boto3 this means ``TransferConfig(multipart_threshold=part_size + 1,
multipart_chunksize=part_size)``: boto3 switches to multipart when
``size >= multipart_threshold``.

**Speed.** :func:`checksum_file` reads the file once, with unbuffered
``readinto`` into a small ring of preallocated buffers, and hands each chunk to
two single-thread workers: one feeds the whole-file MD5, the other the per-part
MD5s. ``hashlib`` releases the GIL while hashing large buffers, so the two
hashes run side by side on two cores while the calling thread already reads
the next chunk (which also overlaps network-share I/O with hashing). Memory is
bounded by the ring (``RING_BUFFERS x chunk_size``), never a whole part. On
these 2-core machines this is as fast as ``md5sum`` (see ``bench/README.md``).
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

MIB = 1024 * 1024
# S3 allows at most 10,000 parts per multipart upload (mirrors shared.settings.S3_MAX_PARTS).
S3_MAX_PARTS = 10_000
DEFAULT_CHUNK_SIZE = 8 * MIB
# Buffers in the read ring: one being read while up to three are being hashed.
RING_BUFFERS = 4
DEFAULT_PROGRESS_INTERVAL_SECONDS = 10.0

EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"
_MD5_DIGEST_SIZE = 16

ProgressCallback = Callable[[int, int], None]


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


def _md5() -> hashlib._Hash:
    return hashlib.md5(usedforsecurity=False)


def uses_multipart(size: int, part_size: int) -> bool:
    """Whether a file of ``size`` bytes is uploaded as a multipart upload (``size > part_size``)."""
    return size > part_size


def part_count(size: int, part_size: int) -> int:
    """Number of S3 upload parts for ``size`` bytes: 1 for a single PUT, else ``ceil(size / part_size)``."""
    if part_size <= 0:
        raise ValueError(f"part_size must be a positive number of bytes, got {part_size}")
    return math.ceil(size / part_size) if uses_multipart(size, part_size) else 1


def s3_etag(part_md5_digests: list[bytes]) -> str:
    """The S3 ETag (without quotes) of an object uploaded in parts with these binary MD5 digests.

    Rule (see the module docstring): no parts (an empty file) gives the MD5 of
    nothing, ``d41d8cd98f00b204e9800998ecf8427e``; exactly one part means the
    file fits in one part and was uploaded with a single PUT, so the ETag is
    that part's plain MD5 in hex, without a ``-1`` suffix; two or more parts
    give ``hex(md5(digest_1 + ... + digest_N)) + "-N"``.
    """
    for digest in part_md5_digests:
        if len(digest) != _MD5_DIGEST_SIZE:
            raise ValueError(f"a part digest must be a {_MD5_DIGEST_SIZE}-byte binary MD5, got {len(digest)} bytes")
    if not part_md5_digests:
        return EMPTY_MD5
    if len(part_md5_digests) == 1:
        return part_md5_digests[0].hex()
    combined = _md5()
    combined.update(b"".join(part_md5_digests))
    return f"{combined.hexdigest()}-{len(part_md5_digests)}"


class _PartHasher:
    """MD5 of each consecutive ``part_size`` bytes of a stream fed in chunks of any length."""

    def __init__(self, part_size: int) -> None:
        self.part_size = part_size
        self.digests: list[bytes] = []
        self._current = _md5()
        self._filled = 0

    def update(self, data: memoryview) -> None:
        pos, end = 0, len(data)
        while pos < end:
            take = min(self.part_size - self._filled, end - pos)
            self._current.update(data[pos : pos + take])
            self._filled += take
            pos += take
            if self._filled == self.part_size:
                self.digests.append(self._current.digest())
                self._current = _md5()
                self._filled = 0

    def finish(self) -> list[bytes]:
        if self._filled:
            self.digests.append(self._current.digest())
            self._filled = 0
        return self.digests


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
) -> FileChecksum:
    """Size, MD5 and S3 ETag (for ``part_size``-byte parts) of ``path``, from one read of the file.

    ``chunk_size`` is the read size (any positive value; parts need not be a
    multiple of it). ``progress(bytes_read, bytes_total)`` is called from the
    calling thread at most once per ``progress_interval`` seconds, for logging
    multi-GB files.

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
        if hasattr(os, "posix_fadvise"):
            with suppress(OSError):  # only a read-ahead hint
                os.posix_fadvise(stream.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)

        whole = _md5()
        parts = _PartHasher(part_size) if uses_multipart(size, part_size) else None
        threaded = size > chunk_size
        # A file that fits in one chunk is read inline into a buffer one byte larger
        # than the file, so that growth shows up as an extra byte read.
        buffer_size = chunk_size if threaded else size + 1
        ring = [memoryview(bytearray(buffer_size)) for _ in range(RING_BUFFERS if threaded else 1)]
        pending: deque[list[Future[None]]] = deque()
        bytes_read = 0
        last_report = time.monotonic()

        with ExitStack() as workers:
            whole_worker = parts_worker = None
            if threaded:
                whole_worker = workers.enter_context(ThreadPoolExecutor(1, thread_name_prefix="checksum-md5"))
                if parts is not None:
                    parts_worker = workers.enter_context(ThreadPoolExecutor(1, thread_name_prefix="checksum-parts"))
            index = 0
            while bytes_read <= size:  # one byte past the size means the file grew: stop reading
                if len(pending) == len(ring):  # the oldest buffer must be hashed before it is refilled
                    for future in pending.popleft():
                        future.result()
                count = stream.readinto(ring[index])
                if not count:
                    break
                bytes_read += count
                chunk = ring[index][:count]
                if whole_worker is None:
                    whole.update(chunk)
                    if parts is not None:
                        parts.update(chunk)
                else:
                    futures = [whole_worker.submit(whole.update, chunk)]
                    if parts_worker is not None and parts is not None:
                        futures.append(parts_worker.submit(parts.update, chunk))
                    pending.append(futures)
                    index = (index + 1) % len(ring)
                if progress is not None and time.monotonic() - last_report >= progress_interval:
                    progress(bytes_read, size)
                    last_report = time.monotonic()
            for futures in pending:
                for future in futures:
                    future.result()

    _check_unchanged(path, before, bytes_read)
    md5 = whole.hexdigest()
    etag = s3_etag(parts.finish()) if parts is not None else md5
    return FileChecksum(size=size, md5=md5, etag=etag)


def _safe_join(root: Path, relative_path: str) -> Path:
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
        path = _safe_join(root, relative_path)

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
