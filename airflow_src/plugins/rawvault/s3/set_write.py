"""What the upload of one set hands to each of its files: how to write them, and what each file gave.

Plain data shared by :mod:`rawvault.s3.upload` (the set), :mod:`rawvault.s3.parallel`
(its files side by side), :mod:`rawvault.s3.upload_file` (one file),
:mod:`rawvault.s3.upload_verify` (the HEAD after an upload) and
:mod:`rawvault.s3.listed_check` (the listing after a set's PUTs).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rawvault.s3.capabilities import StoreCapabilities
from rawvault.s3.file_info import RecordedFile
from rawvault.s3.multipart_resume import UploadIdCallback
from rawvault.s3.objects import ExpectedObject, VerificationMode
from rawvault.s3.put import ObjectSettings, s3_metadata


@dataclass(frozen=True)
class UploadedObject:
    """One file of the set in S3 and how it was verified."""

    path: str
    key: str
    size: int
    md5: str
    etag: str  # recorded (MD5-based) ETag
    s3_etag: str  # the ETag S3 reports (differs from ``etag`` under SSE-KMS)
    checksum_sha256: str | None
    verified_by: VerificationMode
    uploaded: bool  # False: it was there already
    parts_uploaded: int = 0  # multipart: parts sent by this run
    parts_resumed: int = 0  # multipart: parts an earlier run stored, verified and kept

    @classmethod
    def of(
        cls,
        expected: ExpectedObject,
        s3_etag: str,
        checksum_sha256: str | None,
        verified_by: VerificationMode,
        *,
        uploaded: bool,
        parts: tuple[int, int] = (0, 0),
    ) -> UploadedObject:
        """The object S3 holds for ``expected``, as verified; ``parts``: (uploaded, resumed) of a multipart upload."""
        return cls(
            expected.path, expected.key, expected.size, expected.md5, expected.etag, s3_etag, checksum_sha256,
            verified_by, uploaded, *parts,
        )  # fmt: skip


@dataclass
class MultipartHooks:
    """What an upload needs: recorded upload ids, a recorder, the guard, the store's capabilities, the part slots.

    ``part_pool`` runs every request that sends data (a single PUT, each part
    of a multipart upload): the files of a set share it, so at most its
    number of threads are in flight; ``None``: each multipart upload has a
    pool of its own and a PUT runs in the calling thread. ``stop`` is the
    set's stop event (set on its first failure). ``read_slots`` bounds the
    verifications that may read data (a local file hashed under SSE-KMS, an
    object read back) when a set runs more file threads than part slots.
    ``verify_by_listing``: a single PUT whose answer shows the recorded file
    is verified by the set's listing after its PUTs, not by a HEAD of its own
    (:mod:`rawvault.s3.listed_check`).
    """

    known: dict[str, str]
    on_upload_id: UploadIdCallback | None
    guard: Callable[[], None]
    caps: StoreCapabilities | None = None  # None: AWS behaviour
    part_pool: Executor | None = None
    stop: threading.Event | None = None
    read_slots: threading.Semaphore | None = None
    verify_by_listing: bool = False

    def reading(self) -> AbstractContextManager[object]:
        """Held while a verification may read data: at most ``read_slots`` at once (no bound without them)."""
        return self.read_slots if self.read_slots is not None else nullcontext()

    @property
    def overwrites_refused(self) -> bool:
        """The store refuses to replace an object on PUT and on completion (If-None-Match enforced)."""
        return self.caps is None or self.caps.conditional_writes


@dataclass(frozen=True)
class SetWrite:
    """How every object of one set is written: the part size of its recorded ETags, the object settings, metadata."""

    part_size: int
    settings: ObjectSettings
    metadata: Mapping[str, str]

    def create_args(self, md5: str) -> dict[str, Any]:
        """The arguments of the PUT or CreateMultipartUpload of the object whose data has this ``md5``."""
        return {
            "StorageClass": self.settings.storage_class,
            "Metadata": s3_metadata({**self.metadata, "md5": md5}),
            **self.settings.data_args(),
        }


@dataclass(frozen=True)
class AwaitingListing:
    """A single PUT whose answer showed the recorded file's ETag: the set's listing after its PUTs verifies it.

    See :mod:`rawvault.s3.listed_check`; until then it counts for nothing.
    """

    expected: ExpectedObject
    source: Path
    put_answer: Mapping[str, Any]


def expected_object(entry: RecordedFile, key: str, manifest_entry: Mapping[str, Any] | None = None) -> ExpectedObject:
    """What the object of ``entry`` must hold; S3's ETag and SHA-256 from a manifest entry that agrees with it."""
    listed = manifest_entry or {}
    if (listed.get("size"), listed.get("md5"), listed.get("etag")) != (entry.size, entry.md5, entry.etag):
        listed = {}
    return ExpectedObject(
        entry.path, key, entry.size, entry.md5, entry.etag, listed.get("s3_etag") or None,
        listed.get("checksum_sha256") or None,
    )  # fmt: skip
