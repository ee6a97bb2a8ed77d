"""Drift between the recorded backups and S3, found with ``head_object`` (and by re-reading): the S3 half of the audit.

For every given raw file (``upload_done``; see :mod:`rawvault.audit` for the
selection) :func:`verify_raw_files` checks:

- every ``file_info`` path ``p`` at ``<key_prefix><p>`` in the bucket of
  ``s3_backup_key`` holds the recorded file, by
  :func:`rawvault.s3.objects.check_object` (size and ETag; under SSE-KMS S3's
  ETag and SHA-256 against the manifest's record, or ``s3_etag`` for a
  single-file raw file);
- the manifest ``<key_prefix><raw_file_id>.rawvault-manifest.json`` exists,
  and for a multi-file set its ETag is the recorded ``s3_etag``;
- with ``backup.s3.object_lock`` (``object_lock``): the bucket has Object Lock
  (read once per bucket), and every object and the manifest have a retention
  of the configured mode lasting the configured days from when they were
  written (:class:`rawvault.s3.retention.RetentionAudit`): ``retention missing/shorter``.

With :class:`ReadData` (scrubbing, ``verify --read-data``) every object whose
metadata looks right is also read back in ranged GETs of one upload part each
and hashed (:func:`rawvault.s3.readback.read_back`): MD5 and ETag, and S3's
SHA-256 when the manifest recorded one, within the run's byte budget; bytes
that are not the recorded file are ``content differs (S3)``, which a store
reporting a stale or forged ETag cannot hide. ``ReadData.also`` adds checks of
the same raw file outside S3 (the local backup copies, by the caller).

Every finding is a :class:`DriftItem`; the :class:`VerifyReport` says what was
checked and renders a table. Only authentication/permission errors stop the
audit (nothing could be checked); other S3 errors become ``error`` items.
No database: raw files are any objects with ``id``, ``s3_backup_key``,
``s3_etag`` and ``file_info``.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from rawvault.s3 import manifest as manifest_mod
from rawvault.s3.capabilities import EtagShape
from rawvault.s3.client import S3Client
from rawvault.s3.errors import S3AccessDeniedError, S3BackupError
from rawvault.s3.file_info import RecordedFile, parse_file_info
from rawvault.s3.keys import S3UrlError, object_key, parse_s3_url, s3_url
from rawvault.s3.objects import ExpectedObject, ObjectVerdict, VerdictKind, check_object, etag_of, head
from rawvault.s3.progress import format_bytes
from rawvault.s3.readback import ByteBudget, read_back
from rawvault.s3.retention import RetentionAudit

if TYPE_CHECKING:
    from shared.settings import ObjectLockSettings

log = logging.getLogger(__name__)

MANIFEST_PATH = "<manifest>"
VERIFY_BATCH = 256  # raw files taken from the iterable per batch (bounded memory)


class RecordedBackup(Protocol):
    """What the audit needs of a raw file (a ``RawFile`` document, or any object with these attributes)."""

    id: str
    s3_backup_key: str | None
    s3_etag: str | None
    file_info: Mapping[str, Any] | None
    etag_part_size: int | None


class DriftKind(StrEnum):
    """What is wrong with one object (or raw file)."""

    MISSING = "missing"
    SIZE_DIFFERS = "size differs"
    ETAG_DIFFERS = "ETag differs"
    CHECKSUM_DIFFERS = "checksum differs"
    MANIFEST_MISSING = "manifest missing"
    NOT_RECORDED = "not recorded"  # upload_done, but no s3_backup_key or file_info to check against
    CONTENT_DIFFERS = "content differs (S3)"  # read back: its bytes are not the recorded file
    LOCAL_DIFFERS = "local copy differs"  # the local backup copy's bytes are not the recorded file
    LOCAL_MISSING = "local copy missing"
    RETENTION = "retention missing/shorter"  # backup.s3.object_lock: the object (or its bucket) is not locked so
    ERROR = "error"  # S3 failed or the object cannot be verified


# Found by re-reading the data (scrubbing) rather than by metadata.
READ_DATA_KINDS = frozenset({DriftKind.CONTENT_DIFFERS, DriftKind.LOCAL_DIFFERS, DriftKind.LOCAL_MISSING})


@dataclass(frozen=True)
class DriftItem:
    """One difference between the database and S3."""

    raw_file_id: str
    kind: DriftKind
    path: str  # the file_info path, or MANIFEST_PATH
    url: str  # s3://bucket/key ("" when unknown)
    expected: str = ""
    actual: str = ""
    detail: str = ""

    def line(self) -> str:
        """One readable line."""
        text = f"{self.raw_file_id}: {self.kind.value}: {self.url or self.path}"
        if self.expected or self.actual:
            text += f" (expected {self.expected or '-'}, found {self.actual or '-'})"
        return text + (f"; {self.detail}" if self.detail else "")


@dataclass
class VerifyReport:
    """The outcome of :func:`verify_backups`."""

    raw_file_ids: list[str] = field(default_factory=list)
    objects_checked: int = 0
    drift: list[DriftItem] = field(default_factory=list)
    matched: int = 0  # raw files that matched the filters, before sampling
    filters: dict[str, Any] = field(default_factory=dict)
    read_data: bool = False  # objects and local copies were re-read (scrubbing)
    bytes_read_s3: int = 0
    bytes_read_local: int = 0
    notes: list[str] = field(default_factory=list)  # what the selection left out and why

    @property
    def ok(self) -> bool:
        """Nothing missing or different."""
        return not self.drift

    @property
    def drifted_raw_file_ids(self) -> list[str]:
        """Raw files with at least one drift item, in report order."""
        return list(dict.fromkeys(item.raw_file_id for item in self.drift))

    def summary(self) -> str:
        """One line: what was checked and how many problems."""
        checked = f"checked {len(self.raw_file_ids)} raw file(s)"
        if self.matched > len(self.raw_file_ids):
            checked += f" (a random sample of the {self.matched} matching)"
        checked += f", {self.objects_checked} object(s)"
        if self.read_data:
            checked += (
                f", re-read {format_bytes(self.bytes_read_s3)} from S3 and {format_bytes(self.bytes_read_local)} "
                "from the local backup"
            )
        if self.ok:
            if self.read_data:
                return f"{checked}: every byte is the recorded data"
            return f"{checked}: all present with the recorded size and ETag"
        return (
            f"{checked}: {len(self.drift)} problem(s) in {len(self.drifted_raw_file_ids)} raw file(s) "
            "(missing or different in S3)"
        )

    def table(self) -> str:
        """The summary and, when there is drift, one row per item."""
        if self.ok:
            return self.summary()
        header = ("RAW FILE", "PROBLEM", "OBJECT", "EXPECTED", "FOUND", "DETAIL")
        rows = [
            (item.raw_file_id, item.kind.value, item.url or item.path, item.expected, item.actual, item.detail)
            for item in self.drift
        ]
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
        lines = [self.summary(), ""]
        for row in [header, *rows]:
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            lines.append("  ".join([*cells, row[-1]]).rstrip())
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "ok": self.ok,
            "summary": self.summary(),
            "raw_files_checked": len(self.raw_file_ids),
            "raw_files_matched": self.matched,
            "objects_checked": self.objects_checked,
            "filters": self.filters,
            "read_data": self.read_data,
            "bytes_read_s3": self.bytes_read_s3,
            "bytes_read_local": self.bytes_read_local,
            "notes": self.notes,
            "drift": [{**asdict(item), "kind": item.kind.value} for item in self.drift],
        }


_DRIFT_OF = {
    VerdictKind.MISSING: DriftKind.MISSING,
    VerdictKind.SIZE_DIFFERS: DriftKind.SIZE_DIFFERS,
    VerdictKind.ETAG_DIFFERS: DriftKind.ETAG_DIFFERS,
    VerdictKind.CHECKSUM_DIFFERS: DriftKind.CHECKSUM_DIFFERS,
    VerdictKind.CONTENT_DIFFERS: DriftKind.CONTENT_DIFFERS,
    VerdictKind.CANNOT_VERIFY: DriftKind.ERROR,
}

ExtraCheck = Callable[[RecordedBackup], tuple[list[DriftItem], int]]  # (items, bytes read) of one raw file


@dataclass
class ReadData:
    """Scrubbing: re-read the objects within ``budget``; ``also`` checks each raw file elsewhere (its local copy)."""

    budget: ByteBudget
    fallback_part_size: int
    also: ExtraCheck | None = None


class _RawFileCheck:
    """The checks of one raw file; the manifest is read only when a KMS object needs it."""

    def __init__(
        self, raw_file: RecordedBackup, client: S3Client, read: ReadData | None = None,
        retention: RetentionAudit | None = None, etag_shapes: Callable[[str], EtagShape] | None = None,
    ) -> None:  # fmt: skip
        self.etag_shapes = etag_shapes
        self.raw_file = raw_file
        self.client = client
        self.read = read
        self.retention = retention  # checked per object once the bucket has Object Lock
        self.etag_shape = EtagShape.PART_MD5S  # of the raw file's bucket's store (set in run)
        self.items: list[DriftItem] = []
        self.objects = 0
        self.bytes_read_s3 = 0
        self.bytes_read_local = 0
        self._manifest: dict[str, Any] | None = None
        self._manifest_read = False

    def add(self, kind: DriftKind, path: str, url: str, expected: str = "", actual: str = "", detail: str = "") -> None:
        self.items.append(DriftItem(self.raw_file.id, kind, path, url, expected, actual, detail))

    def manifest_files(self, bucket: str, key: str) -> dict[str, Any]:
        if not self._manifest_read:
            self._manifest_read = True
            try:
                found = manifest_mod.read(self.client, bucket, key)
            except manifest_mod.ManifestUnreadableError:
                found = None  # reported by the manifest check
            self._manifest = found[0] if found else None
        return (self._manifest or {}).get("files") or {}

    def run(self) -> None:
        raw_file = self.raw_file
        try:
            bucket, key_prefix = parse_s3_url(raw_file.s3_backup_key or "")
        except S3UrlError:
            self.add(
                DriftKind.NOT_RECORDED, "", "", "s3://<bucket>/<key_prefix>", repr(raw_file.s3_backup_key),
                "upload_done without a valid s3_backup_key: upload it again",
            )  # fmt: skip
            return
        try:
            recorded = parse_file_info(dict(raw_file.file_info or {}))
            keys = {path: object_key(key_prefix, path) for path in recorded}
            manifest_key = manifest_mod.manifest_key(key_prefix, raw_file.id)
        except (S3BackupError, ValueError) as error:
            self.add(DriftKind.NOT_RECORDED, "", s3_url(bucket, key_prefix), detail=f"cannot be checked: {error}")
            return
        single = len(recorded) == 1
        self.etag_shape = self.etag_shapes(bucket) if self.etag_shapes else EtagShape.PART_MD5S
        if self.retention is not None and (problem := self.retention.bucket_problem(bucket)):
            self.add(DriftKind.RETENTION, "", s3_url(bucket, key_prefix), detail=f"bucket {bucket}: {problem}")
            self.retention = None  # the objects' retention headers prove nothing there
        self.check_manifest(bucket, manifest_key, single)
        for path, entry in recorded.items():
            self.check_object(bucket, keys[path], entry, manifest_key, single)
        if self.read is not None and self.read.also is not None:
            items, count = self.read.also(raw_file)
            self.items.extend(items)
            self.bytes_read_local += count

    def head(self, bucket: str, key: str, path: str) -> tuple[bool, dict[str, Any] | None]:
        self.objects += 1
        try:
            response = head(self.client, bucket, key)
        except S3AccessDeniedError:
            raise
        except S3BackupError as error:
            self.add(DriftKind.ERROR, path, s3_url(bucket, key), detail=str(error))
            return False, None
        if response is not None and self.retention is not None:
            problem = self.retention.object_problem(response)
            if problem:
                self.add(DriftKind.RETENTION, path, s3_url(bucket, key), detail=problem)
        return True, response

    def check_manifest(self, bucket: str, key: str, single: bool) -> None:
        url = s3_url(bucket, key)
        answered, response = self.head(bucket, key, MANIFEST_PATH)
        if not answered:
            return
        if response is None:
            self.add(DriftKind.MANIFEST_MISSING, MANIFEST_PATH, url, "present", "missing")
            return
        recorded_etag = self.raw_file.s3_etag
        if not single and recorded_etag and etag_of(response) != recorded_etag:
            self.add(
                DriftKind.ETAG_DIFFERS, MANIFEST_PATH, url, recorded_etag, etag_of(response),
                "the manifest was replaced (s3_etag of a set is its manifest's ETag)",
            )  # fmt: skip

    def check_object(self, bucket: str, key: str, entry: RecordedFile, manifest_key: str, single: bool) -> None:
        answered, response = self.head(bucket, key, entry.path)
        if not answered:
            return
        expected = ExpectedObject(entry.path, key, entry.size, entry.md5, entry.etag)
        verdict = check_object(response, expected, etag_shape=self.etag_shape)
        if verdict.kind is VerdictKind.CANNOT_VERIFY or self.read is not None:
            # An ETag that is no MD5 (SSE-KMS, a store's own): compare with what S3 reported when the object was
            # uploaded and verified; scrubbing also compares the bytes with the SHA-256 recorded there.
            listed = self.manifest_files(bucket, manifest_key).get(entry.path) or {}
            s3_etag = listed.get("s3_etag") or (self.raw_file.s3_etag if single else None)
            expected = ExpectedObject(
                entry.path, key, entry.size, entry.md5, entry.etag, s3_etag, listed.get("checksum_sha256") or None
            )
            verdict = check_object(response, expected, etag_shape=self.etag_shape)
        if (
            self.read is not None
            and response is not None
            and verdict.kind in (VerdictKind.OK, VerdictKind.CANNOT_VERIFY)
        ):
            verdict = self.read_back(bucket, response, expected)
        if not verdict.ok:
            self.report(verdict, entry.path, s3_url(bucket, key))

    def read_back(self, bucket: str, response: dict[str, Any], expected: ExpectedObject) -> ObjectVerdict:
        """The verdict on the object's bytes (scrubbing); an S3 failure or the budget is an ``error`` item."""
        assert self.read is not None
        part_size = self.raw_file.etag_part_size or self.manifest_part_size() or self.read.fallback_part_size
        try:
            verdict, count = read_back(
                self.client, bucket, response, expected, part_size=part_size, budget=self.read.budget, sha256=True
            )
        except S3AccessDeniedError:
            raise
        except S3BackupError as error:
            return ObjectVerdict(VerdictKind.CANNOT_VERIFY, problem=str(error))
        self.bytes_read_s3 += count
        return verdict

    def manifest_part_size(self) -> int | None:
        part_size = (self._manifest or {}).get("part_size")
        return part_size if isinstance(part_size, int) and part_size > 0 else None

    def report(self, verdict: ObjectVerdict, path: str, url: str) -> None:
        kind = _DRIFT_OF[verdict.kind]
        if kind is DriftKind.ERROR:
            self.add(kind, path, url, detail=verdict.problem)
        elif kind is DriftKind.CONTENT_DIFFERS:  # every difference found in the bytes, as the detail
            self.add(kind, path, url, verdict.expected, verdict.actual, f"read back: {verdict.problem}")
        else:
            self.add(kind, path, url, verdict.expected, verdict.actual, verdict.note)


def _batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def verify_raw_files(
    raw_files: Iterable[RecordedBackup | None], client: S3Client, report: VerifyReport | None = None, *,
    concurrency: int = 1, read: ReadData | None = None, object_lock: ObjectLockSettings | None = None,
    etag_shapes: Callable[[str], EtagShape] | None = None,
) -> VerifyReport:  # fmt: skip
    """Check ``raw_files`` (``RawFile`` documents; ``None`` ones are skipped) against S3; add to ``report``.

    ``concurrency`` raw files are checked at a time (boto3 clients are thread-safe); the report keeps
    the order of ``raw_files``. With ``read``, their data are re-read too; with ``object_lock``, their
    retention is checked (see the module docstring). ``etag_shapes(bucket)``: the multipart ETag shape
    of a bucket's store as probed (default: AWS's).
    """
    report = report or VerifyReport()
    report.read_data = report.read_data or read is not None
    retention = RetentionAudit(client, object_lock) if object_lock is not None else None

    def check(raw_file: RecordedBackup) -> _RawFileCheck:
        checker = _RawFileCheck(raw_file, client, read, retention, etag_shapes)
        checker.run()
        return checker

    with ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="verify") as pool:
        for batch in _batches((raw_file for raw_file in raw_files if raw_file is not None), VERIFY_BATCH):
            for checker in pool.map(check, batch):
                report.raw_file_ids.append(checker.raw_file.id)
                report.objects_checked += checker.objects
                report.bytes_read_s3 += checker.bytes_read_s3
                report.bytes_read_local += checker.bytes_read_local
                report.drift.extend(checker.items)
                for item in checker.items:
                    log.warning("drift: %s", item.line())
    return report
