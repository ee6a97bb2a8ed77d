"""Use case "verify/audit": select the uploaded raw files from the database, sample them, check them in S3.

The selection (filters: instrument, project, raw file id, created since a
date) is a read of :mod:`shared.db.interface`; the checks are
:mod:`rawvault.s3.drift` (``head_object`` only, nothing downloaded; with
``backup.s3.object_lock`` also each object's retention). Scrubbing,
which re-reads the data, is :mod:`rawvault.scrub`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from rawvault.s3.drift import VerifyReport, verify_raw_files
from rawvault.stores import recorded_etag_shapes
from shared.db.interface import raw_files_by_id, uploaded_raw_file_ids
from shared.db.uploaded import sample_uploaded_raw_files

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from shared.settings import ObjectLockSettings

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 8  # raw files checked at a time: head_object is latency-bound, not bandwidth-bound


@dataclass
class Selection:
    """The raw files an audit checks: their ids (oldest first), how many matched the filters, the filters."""

    raw_file_ids: list[str]
    matched: int
    filters: dict[str, str]
    raw_files: list[Any] | None = None  # a sample's documents, already read whole (None: read them by id)


def select_raw_files(
    *,
    instrument: str | None = None,
    project: str | None = None,
    raw_file_id: str | None = None,
    since: date | datetime | None = None,
    sample: int | None = None,
    seed: int | None = None,
    fallback_project_id: str = "_FALLBACK",
) -> Selection:
    """The ``upload_done`` raw files matching the filters, or a random ``sample`` of them (``seed``: reproducible)."""
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
    if sample:
        # Drawn by the database through an index (shared.db.uploaded): never every id of every raw file.
        chosen = sample_uploaded_raw_files(
            sample, seed=seed, instrument=instrument, project=project, raw_file_id=raw_file_id, since=since,
            fallback_project_id=fallback_project_id,
        )  # fmt: skip
        return Selection([raw_file.id for raw_file in chosen.raw_files], chosen.matched, filters, chosen.raw_files)
    ids = uploaded_raw_file_ids(
        instrument=instrument, project=project, raw_file_id=raw_file_id, since=since,
        fallback_project_id=fallback_project_id,
    )  # fmt: skip
    return Selection(ids, len(ids), filters)


def verify_backups(
    client: S3Client,
    *,
    instrument: str | None = None,
    project: str | None = None,
    raw_file_id: str | None = None,
    since: date | datetime | None = None,
    sample: int | None = None,
    seed: int | None = None,
    fallback_project_id: str = "_FALLBACK",
    concurrency: int = DEFAULT_CONCURRENCY,
    object_lock: ObjectLockSettings | None = None,
) -> VerifyReport:
    """Check every ``upload_done`` raw file matching the filters (or a random ``sample`` of them) against S3.

    ``since`` keeps raw files created on or after that day (UTC). ``sample``
    (``None`` or 0: all) checks that many, chosen at random (``seed`` makes the
    choice reproducible); ``concurrency`` raw files are checked at a time. With
    ``object_lock`` (``backup.s3.object_lock``) every object's retention is
    checked too (``retention missing/shorter``). Raises
    :class:`~rawvault.s3.errors.S3AccessDeniedError` when S3 refuses the
    credentials; everything else found is in the report. Re-reading the data
    (scrubbing) is :func:`rawvault.scrub.scrub_backups`.
    """
    selection = select_raw_files(
        instrument=instrument, project=project, raw_file_id=raw_file_id, since=since, sample=sample, seed=seed,
        fallback_project_id=fallback_project_id,
    )  # fmt: skip
    report = VerifyReport(matched=selection.matched, filters=selection.filters)
    log.info(
        "verifying %s upload_done raw file(s) against S3%s",
        selection.matched,
        f" (sample of {sample})" if sample else "",
    )
    raw_files = selection.raw_files if selection.raw_files is not None else raw_files_by_id(selection.raw_file_ids)
    verify_raw_files(
        raw_files, client, report, concurrency=concurrency, object_lock=object_lock,
        etag_shapes=recorded_etag_shapes(client),
    )  # fmt: skip
    log.info("%s", report.summary())
    return report
