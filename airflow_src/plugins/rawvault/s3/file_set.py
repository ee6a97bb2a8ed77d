"""One raw file's set in S3: its layout, what an upload did, and the read-only check of a complete set.

- :class:`SetLayout`: the validated ``file_info`` of a set, the key of each
  file (``<key_prefix><path>``) and of its manifest, and the set's manifest.
- :class:`UploadResult`: what :func:`rawvault.s3.upload.upload_file_set` did
  (or what :func:`check_complete_set` found): the objects, the manifest's ETag,
  whether the manifest was written or replaced.
- :func:`check_complete_set`: is a set recorded as complete still complete in
  S3? One GET of the manifest and a HEAD of every object, each asked
  :func:`~rawvault.s3.objects.check_object`; nothing written, no local file read.
  A backup run for a raw file recorded ``upload_done`` asks it first, and
  repairs the set (:mod:`rawvault.backup`) when it finds a problem.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from rawvault.s3 import manifest as manifest_mod
from rawvault.s3.capabilities import EtagShape
from rawvault.s3.client import S3Client
from rawvault.s3.errors import ExistingObjectMismatchError, UnsafePathError
from rawvault.s3.file_info import RecordedFile, parse_file_info
from rawvault.s3.keys import object_key, validate_key_prefix
from rawvault.s3.objects import VerificationMode, check_object, etag_of, head
from rawvault.s3.set_write import UploadedObject, expected_object


@dataclass
class UploadResult:
    """What :func:`rawvault.s3.upload.upload_file_set` did, or what :func:`check_complete_set` found."""

    bucket: str
    key_prefix: str
    raw_file_id: str
    manifest_key: str
    objects: dict[str, UploadedObject] = field(default_factory=dict)
    manifest_etag: str = ""
    manifest_written: bool = False
    replaced_manifest_etag: str = ""  # the ETag of the manifest this run replaced ("" when it replaced none)

    @property
    def uploaded(self) -> list[str]:
        """Paths uploaded in this run."""
        return [path for path, obj in self.objects.items() if obj.uploaded]

    @property
    def skipped(self) -> list[str]:
        """Paths that were in S3 already (verified)."""
        return [path for path, obj in self.objects.items() if not obj.uploaded]

    @property
    def bytes_uploaded(self) -> int:
        """Bytes of the files uploaded in this run."""
        return sum(obj.size for obj in self.objects.values() if obj.uploaded)

    @property
    def parts_resumed(self) -> int:
        """Parts of multipart uploads that an earlier run had stored and this run completed."""
        return sum(obj.parts_resumed for obj in self.objects.values())

    @property
    def already_complete(self) -> bool:
        """The set was complete in S3 before this run (nothing was written)."""
        return not self.uploaded and not self.manifest_written

    @property
    def s3_backup_key(self) -> str:
        """``s3://<bucket>/<key_prefix>``: every path ``p`` is at ``<key_prefix><p>``."""
        return f"s3://{self.bucket}/{self.key_prefix}"

    @property
    def s3_etag(self) -> str:
        """A single file's S3 ETag; for a set of several files, the S3 ETag of its manifest."""
        if len(self.objects) == 1:
            return next(iter(self.objects.values())).s3_etag
        return self.manifest_etag


@dataclass(frozen=True)
class SetLayout:
    """A validated set: its recorded files by path, their keys and the manifest key."""

    recorded: dict[str, RecordedFile]
    keys: dict[str, str]
    manifest_key: str

    @classmethod
    def of(cls, key_prefix: str, file_info: Mapping[str, Any], raw_file_id: str) -> SetLayout:
        """The layout of ``file_info`` under ``key_prefix``; unsafe paths or prefixes raise."""
        validate_key_prefix(key_prefix)
        recorded = parse_file_info(file_info)
        keys = {path: object_key(key_prefix, path) for path in recorded}
        manifest_key = manifest_mod.manifest_key(key_prefix, raw_file_id)
        if manifest_key in keys.values():
            raise UnsafePathError(f"file_info path {manifest_key!r} collides with the manifest key of the raw file")
        return cls(recorded, keys, manifest_key)

    def manifest(
        self, result: UploadResult, part_size: int, metadata: Mapping[str, str], objects: Mapping[str, UploadedObject]
    ) -> dict[str, Any]:
        """The set's manifest; with ``objects``, what S3 reported for each (omitted: only the identity)."""
        files: dict[str, dict[str, Any]] = {}
        for path, entry in self.recorded.items():
            files[path] = {"key": self.keys[path], "size": entry.size, "md5": entry.md5, "etag": entry.etag}
            obj = objects.get(path)
            if obj is not None:
                # How the content is proven, from what S3 holds (so the same objects give the same manifest).
                proven_by = _proven_by(obj, entry)
                files[path].update(
                    {"s3_etag": obj.s3_etag, "checksum_sha256": obj.checksum_sha256, "verified_by": proven_by.value}
                )
        return manifest_mod.build(
            raw_file_id=result.raw_file_id, bucket=result.bucket, key_prefix=result.key_prefix, part_size=part_size,
            metadata=metadata, files=files,
        )  # fmt: skip


def _proven_by(obj: UploadedObject, entry: RecordedFile) -> VerificationMode:
    """How an object's content is proven, from S3's values: ETag, whole-file MD5, SHA-256, else its bytes.

    By the ETag where it is the recorded one or the whole file's MD5; else (SSE-KMS, a store's own ETags) by
    the SHA-256 checked at upload, or, where S3 keeps none, by the bytes read back.
    """
    if obj.s3_etag == entry.etag:
        return VerificationMode.ETAG
    if obj.s3_etag == entry.md5:
        return VerificationMode.WHOLE_MD5
    return VerificationMode.CHECKSUM if obj.checksum_sha256 else VerificationMode.CONTENT


def read_set_manifest(client: S3Client, bucket: str, key: str) -> tuple[dict[str, Any], str] | None:
    """The manifest at ``key`` and its ETag, ``None`` when there is none; anything else there fails."""
    try:
        return manifest_mod.read(client, bucket, key)
    except manifest_mod.ManifestUnreadableError as error:
        raise ExistingObjectMismatchError(
            f"s3://{bucket}/{key} is where the raw file's manifest belongs, but it holds something else ({error}): "
            "rawvault never overwrites it; move it away by hand"
        ) from None


MANIFEST_ENTRY = "<manifest>"


@dataclass
class SetState:
    """What :func:`check_complete_set` found: the objects that hold their file, and every problem."""

    result: UploadResult  # the verified objects (``objects``) and the manifest's ETag (``manifest_etag``)
    problems: dict[str, str] = field(default_factory=dict)  # path (or MANIFEST_ENTRY) -> what is wrong

    @property
    def complete(self) -> bool:
        """Every object holds its file and the manifest describes them."""
        return not self.problems

    def summary(self, limit: int = 5) -> str:
        """The problems in one line (the first ``limit``)."""
        items = [f"{path}: {problem}" for path, problem in sorted(self.problems.items())]
        more = f"; and {len(items) - limit} more" if len(items) > limit else ""
        return "; ".join(items[:limit]) + more


def check_complete_set(
    client: S3Client,
    *,
    bucket: str,
    key_prefix: str,
    file_info: Mapping[str, Any],
    part_size: int,
    raw_file_id: str,
    metadata: Mapping[str, str] | None = None,
    etag_shape: EtagShape = EtagShape.PART_MD5S,
    concurrency: int = 8,
) -> SetState:
    """Whether the set recorded as complete is complete in S3; reads the manifest and HEADs every object.

    Every object must hold its file by :func:`~rawvault.s3.objects.check_object`
    (size and ETag; under SSE-KMS the S3 ETag and SHA-256 the manifest
    recorded), and the manifest must describe this set and every object's S3
    ETag and SHA-256. Writes nothing and reads no local file: an object only
    the local file could prove (SSE-KMS, the manifest does not vouch for it)
    is a problem for the upload to settle. S3 errors are raised (classified),
    so an unreachable S3 is never taken for an incomplete set. ``etag_shape``:
    the store's multipart ETag shape as probed (default: AWS's). The HEADs go
    ``concurrency`` at a time.
    """
    layout = SetLayout.of(key_prefix, file_info, raw_file_id)
    result = UploadResult(bucket, key_prefix, raw_file_id, layout.manifest_key)
    state = SetState(result)
    try:
        found = read_set_manifest(client, bucket, layout.manifest_key)
    except ExistingObjectMismatchError as error:
        found, state.problems[MANIFEST_ENTRY] = None, str(error)
    listed = found[0].get("files") or {} if found else {}
    expectations = {
        path: expected_object(entry, layout.keys[path], listed.get(path)) for path, entry in layout.recorded.items()
    }
    heads = _head_all(client, bucket, [expected.key for expected in expectations.values()], concurrency)
    for path, expected in expectations.items():
        response = heads[expected.key]
        verdict = check_object(response, expected, etag_shape=etag_shape)
        if not verdict.ok or response is None:
            state.problems[path] = verdict.problem
            continue
        assert verdict.how is not None
        result.objects[path] = UploadedObject.of(
            expected, etag_of(response), response.get("ChecksumSHA256"), verdict.how, uploaded=False
        )
    if found is None:
        state.problems.setdefault(MANIFEST_ENTRY, "missing")
    elif not manifest_mod.same_set(found[0], layout.manifest(result, part_size, dict(metadata or {}), {})):
        state.problems[MANIFEST_ENTRY] = "describes another set than the recorded file_info"
    elif not state.problems:
        current = layout.manifest(result, part_size, dict(metadata or {}), result.objects)
        stale = manifest_mod.stale_files(found[0], current)
        if stale:
            state.problems[MANIFEST_ENTRY] = f"records other S3 ETags or checksums for {', '.join(stale)}"
    result.manifest_etag = found[1] if found else ""
    return state


def _head_all(client: S3Client, bucket: str, keys: list[str], concurrency: int) -> dict[str, dict[str, Any] | None]:
    """``head()`` of every key, ``concurrency`` at a time (a set of many small files waits for none of them)."""
    with ThreadPoolExecutor(max(1, min(concurrency, len(keys) or 1)), thread_name_prefix="rawvault-head") as pool:
        return dict(zip(keys, pool.map(lambda key: head(client, bucket, key), keys), strict=True))
