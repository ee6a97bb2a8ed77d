"""Scrubbing's S3 half: read an object's bytes back and hash them, within a byte budget.

:func:`read_back` fetches the object in ranged GETs of exactly one upload part
each (the part size of the recorded ETag), pinned to the version ``head_object``
saw (``If-Match`` its ETag in an unversioned bucket), and feeds them as one
stream to the digest engine: MD5, the S3 ETag for the part size and, when
asked, S3's SHA-256. :func:`rawvault.s3.objects.check_content` then decides
whether those bytes are the recorded file. Memory is the digest engine's ring
of buffers, never a whole part.

Every GET first takes its bytes from a :class:`ByteBudget` shared by all
objects of a run, so a run never reads more than its budget even if a
selection was wrong. No database.

The upload uses the same reading as its last resort: :func:`check_or_read_back`
reads back an object whose metadata cannot prove its content (a store whose
ETags are not MD5s of the content and that keeps no SHA-256), rather than
skipping its verification.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rawvault.digests import digest_stream, plan_parts
from rawvault.s3.capabilities import EtagShape
from rawvault.s3.client import S3Client
from rawvault.s3.errors import S3BackupError, classify
from rawvault.s3.keys import s3_url
from rawvault.s3.objects import (
    ExpectedObject,
    ObjectVerdict,
    VerdictKind,
    check_content,
    check_object,
    etag_of,
    is_kms,
    version_of,
)

log = logging.getLogger(__name__)


class BudgetExhaustedError(S3BackupError):
    """A read would go beyond the run's byte budget: it is not made."""


class ByteBudget:
    """Bytes a run may still read (thread-safe); ``limit`` ``None``: no limit, only counted."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def take(self, count: int, what: str) -> None:
        """Count ``count`` bytes about to be read; raise :class:`BudgetExhaustedError` if they do not fit."""
        with self._lock:
            if self.limit is not None and self.used + count > self.limit:
                raise BudgetExhaustedError(
                    f"reading {count} bytes of {what} would exceed the run's budget ({self.used} of {self.limit} "
                    "bytes used): not read in this run"
                )
            self.used += count

    def give_back(self, count: int) -> None:
        """Return bytes taken but not read (a GET that failed)."""
        with self._lock:
            self.used -= count


class RangedObjectReader:
    """An object's first ``size`` bytes as one stream (``readinto``), fetched one upload part per ranged GET."""

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        key: str,
        response: Mapping[str, Any],
        *,
        size: int,
        part_size: int,
        budget: ByteBudget,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.key = key
        self.version = version_of(response)
        self.etag = etag_of(response)
        self.parts = plan_parts(size, part_size) if size else []
        self.budget = budget
        self.bytes_read = 0
        self._body: Any = None
        self._left = 0  # bytes of the current part still to read

    def _open_next_part(self) -> bool:
        if not self.parts:
            return False
        part = self.parts.pop(0)
        where = s3_url(self.bucket, self.key)
        self.budget.take(part.size, where)
        args: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self.key,
            "Range": f"bytes={part.offset}-{part.offset + part.size - 1}",
        }
        if self.version:
            args["VersionId"] = self.version  # exactly the version head_object saw
        elif self.etag:
            args["IfMatch"] = self.etag  # unversioned: fail rather than read an object replaced meanwhile
        try:
            self._body = self.client.get_object(**args)["Body"]
        except Exception as error:
            self.budget.give_back(part.size)
            raise classify(error, f"reading back {where} (bytes {args['Range'][6:]})") from error
        self._left = part.size
        return True

    def readinto(self, buffer: memoryview) -> int:
        """Fill ``buffer`` with the next bytes; 0 at the end of the recorded size."""
        while self._left == 0:
            if self._body is not None:
                self._body.close()
                self._body = None
            if not self._open_next_part():
                return 0
        data = self._body.read(min(len(buffer), self._left))
        if not data:  # the object is shorter than head_object said: the digests will show it
            self._left = 0
            self.parts.clear()
            return 0
        count = len(data)
        buffer[:count] = data
        self._left -= count
        self.bytes_read += count
        return count

    def close(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None


def read_back(
    client: S3Client,
    bucket: str,
    response: Mapping[str, Any],
    expected: ExpectedObject,
    *,
    part_size: int,
    budget: ByteBudget,
    sha256: bool = False,
) -> tuple[ObjectVerdict, int]:
    """Read the object ``expected.key`` (as ``response`` from ``head_object`` describes it) and compare its bytes.

    Returns :func:`~rawvault.s3.objects.check_content`'s verdict and the bytes
    read. ``sha256`` also compares S3's SHA-256 (when ``expected`` records
    one). Raises :class:`BudgetExhaustedError` before any byte beyond the
    budget, an :class:`~rawvault.s3.errors.S3BackupError` when S3 fails.
    """
    reader = RangedObjectReader(
        client, bucket, expected.key, response, size=expected.size, part_size=part_size, budget=budget
    )
    try:
        digests = digest_stream(reader, part_size, size=expected.size, sha256=sha256)
    finally:
        reader.close()
    return check_content(digests, expected, sha256=sha256), reader.bytes_read


def check_or_read_back(
    client: S3Client,
    bucket: str,
    response: Mapping[str, Any] | None,
    expected: ExpectedObject,
    *,
    local_file: Path,
    part_size: int,
    etag_shape: EtagShape = EtagShape.PART_MD5S,
) -> ObjectVerdict:
    """:func:`~rawvault.s3.objects.check_object`, and where that cannot decide for a non-KMS object, its bytes.

    A store whose ETags are not MD5s of the content (``etag_shape`` OTHER) and
    that reports no SHA-256 leaves the metadata unable to prove anything: the
    object is read back in ranged GETs and hashed against the recorded size,
    MD5 and ETag (verified by ``content``). Never skipped. SSE-KMS objects keep
    their own rule (S3 always reports their SHA-256).
    """
    verdict = check_object(response, expected, local_file=local_file, part_size=part_size, etag_shape=etag_shape)
    if verdict.kind is not VerdictKind.CANNOT_VERIFY or response is None or is_kms(response):
        return verdict
    log.info("%s: %s; reading it back to verify it", s3_url(bucket, expected.key), verdict.problem)
    verdict, count = read_back(client, bucket, response, expected, part_size=part_size, budget=ByteBudget())
    log.info("%s: read back %d bytes: %s", s3_url(bucket, expected.key), count, verdict.problem or "the recorded file")
    return verdict
