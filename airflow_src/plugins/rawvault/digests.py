"""THE digest engine: one read of a file (or a byte range) gives its size, MD5, S3 ETag and optional SHA-256.

Every hash rawvault computes over file content comes from here: the
checksum of an acquisition (:mod:`rawvault.checksum`), the verified local
copy (:mod:`rawvault.local_backup`, whose copy is written from the same
buffers through ``sink``), the check of a stored part when a multipart
upload resumes, the SHA-256 proof under SSE-KMS and the verification of a
restored file. The part plan lives here too, so that the ETag computed
before an upload and the parts the upload sends follow one rule.

**ETag rule** (the uploader follows it, so the ETag is known before uploading):

- a file of at most ``part_size`` bytes (including an empty file) is uploaded
  with a single PUT, and its ETag is its plain MD5 in hex (no ``-1`` suffix);
- a larger file is uploaded as a multipart upload whose parts are exactly
  ``part_size`` bytes (the last one shorter), and its ETag is
  ``md5(concatenated binary part MD5s)`` in hex plus ``-<number of parts>``.

S3's SHA-256 (``ChecksumSHA256``, base64) follows the same layout: of the
whole file for a single PUT, ``sha256(concatenated binary part SHA-256s)``
for a multipart upload (S3 shows it with ``-<number of parts>``).

**Speed.** The file is read once, with unbuffered ``readinto`` into a small
ring of preallocated buffers; each chunk goes to single-thread workers (the
whole-file MD5, the per-part MD5s, the per-part SHA-256s, and the ``sink``
that writes a copy). ``hashlib`` and ``os.write`` release the GIL, so the
hashes and the copy run side by side on the cores while the calling thread
already reads the next chunk (which also overlaps network-share I/O with
hashing and writing). Memory is bounded by the ring
(``RING_BUFFERS x chunk_size``), never a whole part. On these 2-core
machines this is as fast as ``md5sum`` (see ``bench/README.md``).
No database, no boto3.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final, Protocol, TypedDict, Unpack

from shared.s3_limits import MIB, S3_MAX_PARTS

__all__ = [
    "CHECKSUM_ALGORITHM",
    "EMPTY_MD5",
    "MIB",
    "READ_CHUNK_BYTES",
    "S3_MAX_PARTS",
    "Digests",
    "PartPlan",
    "digest_file",
    "digest_stream",
    "multipart_parts",
    "part_count",
    "plan_parts",
    "s3_etag",
    "split_checksum",
    "uses_multipart",
]

# The flexible checksum every upload request carries and S3 validates (and reports back).
CHECKSUM_ALGORITHM: Final = "SHA256"
READ_CHUNK_BYTES = 8 * MIB
# Buffers in the read ring: one being read while up to three are being hashed.
RING_BUFFERS = 4
DEFAULT_PROGRESS_INTERVAL_SECONDS = 10.0

EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"
_MD5_DIGEST_SIZE = 16

ProgressCallback = Callable[[int, int], None]
Sink = Callable[[memoryview], object]
_Consumer = Callable[[memoryview], object]


class _Hash(Protocol):
    def update(self, data: memoryview, /) -> None: ...

    def digest(self) -> bytes: ...

    def hexdigest(self) -> str: ...


class _Readable(Protocol):
    def readinto(self, buffer: memoryview, /) -> int | None: ...


def _md5() -> _Hash:
    return hashlib.md5(usedforsecurity=False)


# --- the part plan ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartPlan:
    """One part of an upload: its number (from 1), offset and size in the file."""

    number: int
    offset: int
    size: int


def uses_multipart(size: int, part_size: int) -> bool:
    """Whether a file of ``size`` bytes is uploaded as a multipart upload (``size > part_size``)."""
    return size > part_size


def part_count(size: int, part_size: int) -> int:
    """Number of S3 upload parts for ``size`` bytes: 1 for a single PUT, else ``ceil(size / part_size)``."""
    if part_size <= 0:
        raise ValueError(f"part_size must be a positive number of bytes, got {part_size}")
    return -(-size // part_size) if uses_multipart(size, part_size) else 1


def multipart_parts(size: int, part_size: int) -> int | None:
    """Parts of a multipart upload of ``size`` bytes; ``None`` when it is one PUT (``size <= part_size``)."""
    return part_count(size, part_size) if uses_multipart(size, part_size) else None


def plan_parts(size: int, part_size: int) -> list[PartPlan]:
    """The parts of a file of ``size`` bytes: ``part_size`` each, the last one shorter."""
    return [
        PartPlan(n + 1, n * part_size, min(part_size, size - n * part_size)) for n in range(part_count(size, part_size))
    ]


def s3_etag(part_md5_digests: list[bytes]) -> str:
    """The S3 ETag (without quotes) of an object uploaded in parts with these binary MD5 digests.

    No parts (an empty file) gives the MD5 of nothing,
    ``d41d8cd98f00b204e9800998ecf8427e``; exactly one part means the file
    fits in one part and was uploaded with a single PUT, so the ETag is that
    part's plain MD5 in hex, without a ``-1`` suffix; two or more parts give
    ``hex(md5(digest_1 + ... + digest_N)) + "-N"``.
    """
    for digest in part_md5_digests:
        if len(digest) != _MD5_DIGEST_SIZE:
            raise ValueError(f"a part digest must be a {_MD5_DIGEST_SIZE}-byte binary MD5, got {len(digest)} bytes")
    if not part_md5_digests:
        return EMPTY_MD5
    if len(part_md5_digests) == 1:
        return part_md5_digests[0].hex()
    combined = _md5()
    combined.update(memoryview(b"".join(part_md5_digests)))
    return f"{combined.hexdigest()}-{len(part_md5_digests)}"


def split_checksum(value: str | None) -> tuple[str | None, int | None]:
    """S3's ``ChecksumSHA256`` as ``(base64 value, parts)``; composite values may end in ``-<parts>``."""
    if not value:
        return None, None
    base, _, parts = value.partition("-")
    return base, int(parts) if parts.isdigit() else None


# --- the engine ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Digests:
    """What one read of a file (or byte range) gave, laid out like its upload with ``part_size`` parts."""

    size: int  # bytes read
    md5: str  # hex, of all bytes read
    etag: str  # S3 ETag (without quotes) for the part size; the MD5 when no part size was given
    sha256: str | None  # base64, S3's form (whole, or composite of the parts); None unless asked for
    parts: int | None  # parts of the multipart upload, None for a single PUT


class _PartHasher:
    """A digest of each consecutive ``part_size`` bytes of a stream fed in chunks of any length."""

    def __init__(self, part_size: int, factory: Callable[[], _Hash]) -> None:
        self.part_size = part_size
        self.factory = factory
        self.digests: list[bytes] = []
        self._current = factory()
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
                self._current = self.factory()
                self._filled = 0

    def finish(self) -> list[bytes]:
        if self._filled:
            self.digests.append(self._current.digest())
            self._filled = 0
        return self.digests


def _sha256() -> _Hash:
    return hashlib.sha256()


def digest_stream(
    stream: _Readable,
    part_size: int | None,
    *,
    size: int,
    limit: int | None = None,
    sha256: bool = False,
    sink: Sink | None = None,
    chunk_size: int = READ_CHUNK_BYTES,
    progress: ProgressCallback | None = None,
    progress_interval: float = DEFAULT_PROGRESS_INTERVAL_SECONDS,
) -> Digests:
    """Hash what ``stream`` yields (at most ``limit`` bytes; ``None``: to its end) in one read.

    ``size`` is the expected length: it decides whether per-part digests are
    needed (a multipart upload) and is reported to ``progress(bytes_read,
    size)``, called from the calling thread at most once per
    ``progress_interval`` seconds. ``part_size`` ``None`` skips the parts
    (the ETag is then the MD5). ``sink(chunk)`` receives every chunk, in
    order, on a worker thread of its own, before the chunk's buffer is read
    into again (e.g. to write a copy from the hashed buffers); an error it
    raises stops the read and propagates. The caller compares
    ``Digests.size`` with what it expected.
    """
    if part_size is not None and part_size <= 0:
        raise ValueError(f"part_size must be a positive number of bytes, got {part_size}")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive number of bytes, got {chunk_size}")
    multipart = part_size is not None and uses_multipart(size, part_size)
    whole = _md5()
    part_md5 = _PartHasher(part_size, _md5) if multipart and part_size else None
    # A single PUT's SHA-256 is the one of its only "part": the whole file.
    part_sha = _PartHasher(part_size or max(size, 1), _sha256) if sha256 else None
    hashers: list[_Hash | _PartHasher] = [h for h in (whole, part_md5, part_sha) if h is not None]
    consumers: list[_Consumer] = [h.update for h in hashers] + ([sink] if sink is not None else [])
    bytes_read = _read_into_consumers(stream, consumers, limit, chunk_size, size, progress, progress_interval)
    md5 = whole.hexdigest()
    part_digests = part_md5.finish() if part_md5 is not None else []
    etag = s3_etag(part_digests) if part_md5 is not None else md5
    sha_digests = part_sha.finish() if part_sha is not None else []
    checksum = None
    if part_sha is not None:
        if len(sha_digests) > 1 or multipart:
            checksum = base64.b64encode(hashlib.sha256(b"".join(sha_digests)).digest()).decode()
        else:
            checksum = base64.b64encode(sha_digests[0] if sha_digests else hashlib.sha256().digest()).decode()
    return Digests(bytes_read, md5, etag, checksum, len(part_digests) if multipart else None)


def _read_into_consumers(
    stream: _Readable,
    consumers: list[_Consumer],
    limit: int | None,
    chunk_size: int,
    size: int,
    progress: ProgressCallback | None,
    progress_interval: float,
) -> int:
    """The read loop: fill the ring, hand each chunk to one worker per consumer, in order; return the bytes read."""
    threaded = limit is None or limit > chunk_size
    # A read that fits in one chunk is done inline into a buffer of exactly the limit.
    buffer_size = chunk_size if threaded or limit is None else max(limit, 1)
    ring = [memoryview(bytearray(buffer_size)) for _ in range(RING_BUFFERS if threaded else 1)]
    pending: deque[list[Future[object]]] = deque()
    bytes_read = index = 0
    last_report = time.monotonic()
    with ExitStack() as stack:
        # One single-thread worker per consumer: each sees the chunks in read order.
        workers = (
            [stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="digest")) for _ in consumers]
            if threaded
            else []
        )
        while limit is None or bytes_read < limit:
            if len(pending) == len(ring):  # the oldest buffer must be consumed before it is refilled
                for future in pending.popleft():
                    future.result()
            buffer = ring[index] if limit is None else ring[index][: min(buffer_size, limit - bytes_read)]
            count = stream.readinto(buffer)
            if not count:
                break
            bytes_read += count
            chunk = buffer[:count]
            if workers:
                pending.append([worker.submit(c, chunk) for worker, c in zip(workers, consumers, strict=True)])
                index = (index + 1) % len(ring)
            else:
                for consumer in consumers:
                    consumer(chunk)
            if progress is not None and time.monotonic() - last_report >= progress_interval:
                progress(bytes_read, size)
                last_report = time.monotonic()
        for futures in pending:
            for future in futures:
                future.result()
    return bytes_read


def _open(path: Path) -> io.FileIO:
    return Path(path).open("rb", buffering=0)


class DigestOptions(TypedDict, total=False):
    """The options of :func:`digest_stream` that :func:`digest_file` passes on."""

    sha256: bool
    sink: Sink | None
    chunk_size: int
    progress: ProgressCallback | None
    progress_interval: float


def digest_file(
    path: Path, part_size: int | None, *, offset: int = 0, length: int | None = None, **options: Unpack[DigestOptions]
) -> Digests:
    """Digests of ``path`` (or of ``length`` bytes from ``offset``) from one read; see :func:`digest_stream`.

    A byte range is read up to ``length`` bytes (fewer when the file is
    shorter: compare ``Digests.size``); a whole file to its end. Opening or
    reading errors (``OSError``) propagate; their message names the path.
    """
    with _open(path) as stream:
        size = os.fstat(stream.fileno()).st_size - offset if length is None else length
        if offset:
            stream.seek(offset)
        advise_sequential(stream)
        return digest_stream(stream, part_size, size=size, limit=length, **options)


def advise_sequential(stream: IO[bytes]) -> None:
    """Tell the kernel the file is read once from start to end (a larger read-ahead); only a hint."""
    if hasattr(os, "posix_fadvise"):
        with suppress(OSError, AttributeError, ValueError):
            os.posix_fadvise(stream.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
