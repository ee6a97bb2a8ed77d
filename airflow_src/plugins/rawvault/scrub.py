"""Use case "scrub": re-read the stored data of raw files, in S3 and in the local backup, and record what it found.

HEAD-only checks trust what the store says about an object; a scrub reads the
bytes. For each selected ``upload_done`` raw file it runs the audit's checks
(:mod:`rawvault.s3.drift`) and additionally:

- reads every object back in ranged GETs of one upload part each and hashes
  it (MD5, the ETag for the recorded part size, S3's SHA-256 when the manifest
  recorded one): ``content differs (S3)`` when the bytes are not the recorded file;
- re-hashes every local backup copy (``<locations.backup>/<backup_base_path>/<path>``)
  against the recorded size, MD5 and ETag: ``local copy differs`` /
  ``local copy missing``.

Which raw files: with a byte budget, the least recently scrubbed first (never
scrubbed first) whose data fit in it (:func:`shared.db.scrub.select_for_scrub`),
skipping those scrubbed after ``due_before``; without one, the audit's
selection (filters, random sample). At most the budget is read from S3, and
at most the budget from the local backup.

Each raw file whose scrub completed gets ``scrubbed_at``, ``scrub_status``
(``ok`` / ``drift``) and ``scrub_details`` (the drift lines); the alert check
announces drift once (``rawvault.alerts.raw_files.scrub_drift``) and the
recovery when a later scrub is clean. A raw file whose scrub only met S3
errors keeps its previous result and is tried again next time.
"""

from __future__ import annotations

import logging
import stat
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, cast

from rawvault.audit import AuditSelection, select_raw_files
from rawvault.digests import digest_file
from rawvault.locations import backup_folder
from rawvault.s3.client import S3Client
from rawvault.s3.drift import DriftItem, DriftKind, ReadData, RecordedBackup, VerifyReport, verify_raw_files
from rawvault.s3.errors import S3BackupError
from rawvault.s3.file_info import RecordedFile, parse_file_info
from rawvault.s3.objects import ExpectedObject, check_content
from rawvault.s3.progress import format_bytes
from rawvault.s3.readback import BudgetExhaustedError, ByteBudget
from rawvault.stores import recorded_etag_shapes
from shared.db.interface import RawFileNotFoundError, raw_files_by_id
from shared.db.models import RawFile, utc_now
from shared.db.scrub import record_scrub_result, select_for_scrub
from shared.db.uploaded import count_uploaded, uploaded_query

if TYPE_CHECKING:
    from shared.settings import Settings

log = logging.getLogger(__name__)

# Raw files re-read at a time: each read streams through the digest engine's ring of buffers (32 MiB) and keeps
# one connection busy; two saturate these 2-core machines' hashing.
DEFAULT_SCRUB_CONCURRENCY = 2


@dataclass(frozen=True)
class ScrubBudget:
    """A budgeted scrub: the least recently scrubbed raw files whose data fit in ``max_bytes``.

    ``max_bytes`` is read at most from S3 and at most again from the local backup. ``due_before`` (only with a
    budget, hence here): skip raw files scrubbed at or after it (``None``: every raw file is due).
    """

    max_bytes: int
    due_before: datetime | None = None


def check_local_copies(raw_file: RawFile, settings: Settings, budget: ByteBudget) -> tuple[list[DriftItem], int]:
    """Re-hash the local backup copies of ``raw_file`` against its ``file_info``: ``(drift items, bytes read)``."""
    try:
        recorded = parse_file_info(dict(raw_file.file_info or {}))
    except S3BackupError:
        return [], 0  # the S3 half reports it as "not recorded"
    folder = backup_folder(raw_file, settings)
    part_size = raw_file.etag_part_size or settings.part_size_bytes
    items: list[DriftItem] = []
    total = 0
    for path, entry in recorded.items():
        item, count = _check_local_copy(raw_file.id, folder / path, entry, part_size, budget)
        total += count
        if item is not None:
            items.append(item)
    return items, total


def _check_local_copy(
    raw_file_id: str, local: Path, entry: RecordedFile, part_size: int, budget: ByteBudget
) -> tuple[DriftItem | None, int]:
    """One local copy: ``(drift item or None, bytes read)``."""

    def drift(kind: DriftKind, expected: str, actual: str, detail: str) -> tuple[DriftItem, int]:
        return DriftItem(raw_file_id, kind, entry.path, str(local), expected, actual, detail), 0

    restore_hint = f"restore it from S3 (scripts/rawvault.sh restore {raw_file_id} <folder>) and compare"
    try:
        status = local.lstat()
    except FileNotFoundError:
        return drift(
            DriftKind.LOCAL_MISSING, f"{entry.size} bytes", "no file", f"the local copy is gone: {restore_hint}"
        )
    except OSError as error:
        return drift(DriftKind.LOCAL_DIFFERS, f"{entry.size} bytes", "unreadable", f"cannot be read ({error})")
    if not stat.S_ISREG(status.st_mode):
        return drift(DriftKind.LOCAL_DIFFERS, "a regular file", "not a regular file", "a link or folder took its place")
    if status.st_size != entry.size:
        detail = f"the local copy has another size: {restore_hint}"
        return drift(DriftKind.LOCAL_DIFFERS, f"{entry.size} bytes", f"{status.st_size} bytes", detail)
    try:
        budget.take(entry.size, str(local))
    except BudgetExhaustedError as error:
        return drift(DriftKind.ERROR, "", "", str(error))
    try:
        digests = digest_file(local, part_size)
    except OSError as error:  # a failing disk: exactly what a scrub is for
        return drift(DriftKind.LOCAL_DIFFERS, f"MD5 {entry.md5}", "unreadable", f"reading it failed ({error})")
    verdict = check_content(digests, ExpectedObject(entry.path, "", entry.size, entry.md5, entry.etag))
    if verdict.ok:
        return None, digests.size
    detail = f"its bytes are not the recorded data (same size, other content): {restore_hint}"
    item = DriftItem(
        raw_file_id, DriftKind.LOCAL_DIFFERS, entry.path, str(local), verdict.expected, verdict.actual, detail
    )
    return item, digests.size


def scrub_backups(
    client: S3Client,
    settings: Settings,
    selection: AuditSelection | None = None,
    *,
    budget: ScrubBudget | None = None,
    concurrency: int = DEFAULT_SCRUB_CONCURRENCY,
    record: bool = True,
    now: datetime | None = None,
) -> VerifyReport:
    """Scrub the selected raw files (see the module docstring); record the results unless ``record`` is false.

    ``selection`` (``None``: every ``upload_done`` raw file) names the raw files; with a ``budget`` its filters
    narrow the least recently scrubbed ones (its sample is left out), without one the audit's selection (its
    filters, its random ``sample``) is read without a byte limit.

    Raises :class:`~rawvault.s3.errors.S3AccessDeniedError` when S3 refuses
    the credentials; everything else found is in the report.
    """
    selection = selection or AuditSelection(fallback_project_id=settings.watcher.fallback_project_id)
    budget_bytes = budget.max_bytes if budget else None
    if budget is None:
        selected = select_raw_files(selection)
        ids, report = selected.raw_file_ids, VerifyReport(matched=selected.matched, filters=selected.filters)
    else:
        filters = selection.filters()
        chosen = select_for_scrub(budget_bytes=budget.max_bytes, due_before=budget.due_before, **filters)
        matched = count_uploaded(uploaded_query(**filters))  # never a count of them all
        # The budget chooses the raw files, not a sample: the report shows the budget.
        shown = replace(selection, sample=None).describe(budget_bytes=budget.max_bytes)
        report = VerifyReport(matched=matched, filters=shown)
        ids = chosen.raw_file_ids
        report.notes += [
            f"{rid} was not re-read: its {format_bytes(size)} exceed the whole budget of "
            f"{format_bytes(budget.max_bytes)} per run; raise backup.scrub.budget_gb_per_run above it"
            for rid, size in chosen.too_large
        ]
    log.info("scrubbing %d raw file(s): re-reading their S3 objects and local backup copies", len(ids))
    local_budget = ByteBudget(budget_bytes)

    def local_check(raw_file: RecordedBackup) -> tuple[list[DriftItem], int]:
        return check_local_copies(cast(RawFile, raw_file), settings, local_budget)

    read = ReadData(ByteBudget(budget_bytes), settings.part_size_bytes, also=local_check)
    lock = settings.backup.s3.object_lock if settings.backup.s3 else None
    verify_raw_files(
        raw_files_by_id(ids), client, report, concurrency=concurrency, read=read, object_lock=lock,
        etag_shapes=recorded_etag_shapes(client),
    )  # fmt: skip
    if record:
        record_scrub_results(report, now or utc_now())
    log.info("%s", report.summary())
    return report


def record_scrub_results(report: VerifyReport, at: datetime) -> dict[str, str]:
    """Record each scrubbed raw file's result; return ``{raw file id: "ok" | "drift" | "not recorded"}``."""
    items: dict[str, list[DriftItem]] = defaultdict(list)
    for item in report.drift:
        items[item.raw_file_id].append(item)
    outcome = {}
    for raw_file_id in report.raw_file_ids:
        found = items.get(raw_file_id, [])
        if found and all(item.kind is DriftKind.ERROR for item in found):
            # S3 failed or the budget ran out: not a finding about the data; the next scrub tries again.
            outcome[raw_file_id] = "not recorded"
            continue
        try:
            record_scrub_result(raw_file_id, drift=[item.line() for item in found], at=at)
        except RawFileNotFoundError:  # deleted while it was being scrubbed: nothing to record it on
            outcome[raw_file_id] = "not recorded"
            continue
        outcome[raw_file_id] = "drift" if found else "ok"
    return outcome
