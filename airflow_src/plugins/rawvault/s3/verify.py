"""Audit the S3 backups against the database with ``head_object``: what is missing or different.

For every selected raw file with ``backup_status = upload_done`` (filters:
instrument, project, raw file id, created since a date; optionally a random
sample of N of them), :func:`verify_backups` checks without downloading:

- every ``file_info`` path ``p`` at ``<key_prefix><p>`` in the bucket of
  ``s3_backup_key``: it exists, its size is the recorded size, and its ETag is
  the recorded (MD5-based) ETag. Under SSE-KMS S3's ETag is not an MD5: then it
  must equal the S3 ETag the manifest recorded at upload (or ``s3_etag`` for a
  single-file raw file), and S3's SHA-256 the manifest's;
- the manifest ``<key_prefix><raw_file_id>.rawvault-manifest.json`` exists,
  and for a multi-file set its ETag is the recorded ``s3_etag``.

Every finding is a :class:`DriftItem`; the :class:`VerifyReport` says what was
checked and renders a table. Only authentication/permission errors stop the
audit (nothing could be checked); other S3 errors become ``error`` items.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from rawvault.s3 import manifest as manifest_mod
from rawvault.s3.errors import S3AccessDeniedError, S3BackupError
from rawvault.s3.integrity import parse_file_info
from rawvault.s3.keys import object_key
from rawvault.s3.remote import (
    ManifestUnreadableError,
    S3UrlError,
    etag_of,
    head,
    is_kms,
    parse_s3_url,
    read_manifest,
    s3_url,
)

log = logging.getLogger(__name__)

MANIFEST_PATH = "<manifest>"
DEFAULT_CONCURRENCY = 8  # raw files checked at a time: head_object is latency-bound, not bandwidth-bound
VERIFY_BATCH = 256  # raw files fetched from the database per batch (bounded memory)


class DriftKind(StrEnum):
    """What is wrong with one object (or raw file)."""

    MISSING = "missing"
    SIZE_DIFFERS = "size differs"
    ETAG_DIFFERS = "ETag differs"
    CHECKSUM_DIFFERS = "checksum differs"
    MANIFEST_MISSING = "manifest missing"
    NOT_RECORDED = "not recorded"  # upload_done, but no s3_backup_key or file_info to check against
    ERROR = "error"  # S3 failed or the object cannot be verified


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
        if self.ok:
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
            "drift": [{**asdict(item), "kind": item.kind.value} for item in self.drift],
        }


def select_raw_files(
    *,
    instrument: str | None = None,
    project: str | None = None,
    raw_file_id: str | None = None,
    since: date | datetime | None = None,
    fallback_project_id: str = "_FALLBACK",
) -> Any:
    """The ``upload_done`` raw files matching the filters, oldest first (a mongoengine queryset)."""
    from shared.db.interface import select_uploaded_raw_files

    return select_uploaded_raw_files(
        instrument=instrument,
        project=project,
        raw_file_id=raw_file_id,
        since=since,
        fallback_project_id=fallback_project_id,
    )


class _RawFileCheck:
    """The checks of one raw file; the manifest is read only when a KMS object needs it."""

    def __init__(self, raw_file: Any, client: Any) -> None:
        self.raw_file = raw_file
        self.client = client
        self.items: list[DriftItem] = []
        self.objects = 0
        self._manifest: dict[str, Any] | None = None
        self._manifest_read = False

    def add(self, kind: DriftKind, path: str, url: str, expected: str = "", actual: str = "", detail: str = "") -> None:
        self.items.append(DriftItem(self.raw_file.id, kind, path, url, expected, actual, detail))

    def manifest_files(self, bucket: str, key: str) -> dict[str, Any]:
        if not self._manifest_read:
            self._manifest_read = True
            try:
                found = read_manifest(self.client, bucket, key)
            except ManifestUnreadableError:
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
        self.check_manifest(bucket, manifest_key, single)
        for path, entry in recorded.items():
            self.check_object(bucket, keys[path], path, entry, manifest_key, single)

    def head(self, bucket: str, key: str, path: str) -> tuple[bool, dict[str, Any] | None]:
        self.objects += 1
        try:
            return True, head(self.client, bucket, key)
        except S3AccessDeniedError:
            raise
        except S3BackupError as error:
            self.add(DriftKind.ERROR, path, s3_url(bucket, key), detail=str(error))
            return False, None

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

    def check_object(self, bucket: str, key: str, path: str, entry: Any, manifest_key: str, single: bool) -> None:
        url = s3_url(bucket, key)
        answered, response = self.head(bucket, key, path)
        if not answered:
            return
        if response is None:
            self.add(DriftKind.MISSING, path, url, f"{entry.size} bytes", "no object")
            return
        size = response.get("ContentLength")
        if size != entry.size:
            self.add(DriftKind.SIZE_DIFFERS, path, url, f"{entry.size} bytes", f"{size} bytes")
            return
        etag = etag_of(response)
        if etag == entry.etag:
            return
        if not is_kms(response):
            self.add(DriftKind.ETAG_DIFFERS, path, url, entry.etag, etag)
            return
        # SSE-KMS: compare with what S3 reported when the object was uploaded and verified.
        recorded = self.manifest_files(bucket, manifest_key).get(path) or {}
        expected_etag = recorded.get("s3_etag") or (self.raw_file.s3_etag if single else None)
        if not expected_etag:
            self.add(
                DriftKind.ERROR, path, url, detail=(
                    "SSE-KMS object (its ETag is not an MD5) and no S3 ETag recorded for it (manifest missing?): "
                    "cannot be verified without downloading; run the restore command to check it"
                ),
            )  # fmt: skip
            return
        if etag != expected_etag:
            self.add(DriftKind.ETAG_DIFFERS, path, url, expected_etag, etag, "SSE-KMS: compared with the manifest")
            return
        remote, expected_sha = response.get("ChecksumSHA256"), recorded.get("checksum_sha256")
        if remote and expected_sha and remote != expected_sha:
            self.add(DriftKind.CHECKSUM_DIFFERS, path, url, expected_sha, remote, "SHA-256 differs from the manifest")


def _sampled(filters: dict[str, Any], sample: int | None, seed: int | None) -> tuple[Iterator[Any], int]:
    """The raw files to check and how many matched; a sample is drawn by the database (never every id)."""
    from shared.db.uploaded import sample_uploaded_raw_files

    if not sample:
        queryset = select_raw_files(**filters)
        return iter(queryset), queryset.count()
    selection = sample_uploaded_raw_files(sample, seed=seed, **filters)
    return iter(selection.raw_files), selection.matched


def _batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def verify_raw_files(
    raw_files: Iterable[Any], client: Any, report: VerifyReport | None = None, *, concurrency: int = 1
) -> VerifyReport:
    """Check ``raw_files`` (``RawFile`` documents) against S3; add to ``report`` (a new one by default).

    ``concurrency`` raw files are checked at a time (boto3 clients are thread-safe); the report keeps
    the order of ``raw_files``.
    """
    report = report or VerifyReport()

    def check(raw_file: Any) -> _RawFileCheck:
        checker = _RawFileCheck(raw_file, client)
        checker.run()
        return checker

    with ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="verify") as pool:
        for batch in _batches((raw_file for raw_file in raw_files if raw_file is not None), VERIFY_BATCH):
            for checker in pool.map(check, batch):
                report.raw_file_ids.append(checker.raw_file.id)
                report.objects_checked += checker.objects
                report.drift.extend(checker.items)
                for item in checker.items:
                    log.warning("drift: %s", item.line())
    return report


def verify_backups(
    client: Any,
    *,
    instrument: str | None = None,
    project: str | None = None,
    raw_file_id: str | None = None,
    since: date | datetime | None = None,
    sample: int | None = None,
    seed: int | None = None,
    fallback_project_id: str = "_FALLBACK",
    concurrency: int = DEFAULT_CONCURRENCY,
) -> VerifyReport:
    """Check every ``upload_done`` raw file matching the filters (or a random ``sample`` of them) against S3.

    ``since`` keeps raw files created on or after that day (UTC). ``sample``
    (``None`` or 0: all) checks that many, chosen at random (``seed`` makes the
    choice reproducible); ``concurrency`` raw files are checked at a time. Raises
    :class:`~rawvault.s3.errors.S3AccessDeniedError` when S3 refuses the
    credentials; everything else found is in the report.
    """
    if sample is not None and sample < 0:
        raise ValueError(f"sample must be 0 or more raw files, got {sample}")
    filters = {
        name: str(value)
        for name, value in {
            "instrument": instrument,
            "project": project,
            "raw_file_id": raw_file_id,
            "since": since,
            "sample": sample,
        }.items()
        if value is not None
    }
    selection = {
        "instrument": instrument,
        "project": project,
        "raw_file_id": raw_file_id,
        "since": since,
        "fallback_project_id": fallback_project_id,
    }
    raw_files, matched = _sampled(selection, sample, seed)
    report = VerifyReport(matched=matched, filters=filters)
    log.info("verifying %s upload_done raw file(s) against S3%s", matched, f" (sample of {sample})" if sample else "")
    verify_raw_files(raw_files, client, report, concurrency=concurrency)
    log.info("%s", report.summary())
    return report
