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
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

from rawvault.s3.client import S3Client
from rawvault.s3.drift import VerifyReport, verify_raw_files
from rawvault.stores import recorded_etag_shapes
from shared.db.interface import raw_files_by_id, uploaded_raw_file_ids
from shared.db.uploaded import sample_uploaded_raw_files

if TYPE_CHECKING:
    from shared.settings import ObjectLockSettings

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 8  # raw files checked at a time: head_object is latency-bound, not bandwidth-bound


class RawFileFilters(TypedDict, total=False):
    """The filters that select ``upload_done`` raw files for an audit or a scrub (every one given must match).

    ``since`` keeps raw files created on or after that day (UTC); ``project``: raw files
    without a project count as the fallback project id.
    """

    instrument: str | None
    project: str | None
    raw_file_id: str | None
    since: date | datetime | None


def describe_filters(filters: RawFileFilters, **extra: object) -> dict[str, str]:
    """The filters given (and ``extra`` settings of the run) as text, for a report: ``None`` means not given."""
    given = {name: filters.get(name) for name in RawFileFilters.__annotations__} | extra
    return {name: str(value) for name, value in given.items() if value is not None}


@dataclass
class Selection:
    """The raw files an audit checks: their ids (oldest first), how many matched the filters, the filters."""

    raw_file_ids: list[str]
    matched: int
    filters: dict[str, str]
    raw_files: list[Any] | None = None  # a sample's documents, already read whole (None: read them by id)


def select_raw_files(
    *,
    sample: int | None = None,
    seed: int | None = None,
    fallback_project_id: str = "_FALLBACK",
    **filters: Unpack[RawFileFilters],
) -> Selection:
    """The ``upload_done`` raw files matching ``filters``, or a random ``sample`` of them (``seed``: reproducible)."""
    if sample is not None and sample < 0:
        raise ValueError(f"sample must be 0 or more raw files, got {sample}")
    shown = describe_filters(filters, sample=sample)
    if sample:
        # Drawn by the database through an index (shared.db.uploaded): never every id of every raw file.
        chosen = sample_uploaded_raw_files(sample, seed=seed, fallback_project_id=fallback_project_id, **filters)
        return Selection([raw_file.id for raw_file in chosen.raw_files], chosen.matched, shown, chosen.raw_files)
    ids = uploaded_raw_file_ids(**filters, fallback_project_id=fallback_project_id)
    return Selection(ids, len(ids), shown)


def verify_backups(
    client: S3Client,
    *,
    sample: int | None = None,
    seed: int | None = None,
    fallback_project_id: str = "_FALLBACK",
    concurrency: int = DEFAULT_CONCURRENCY,
    object_lock: ObjectLockSettings | None = None,
    **filters: Unpack[RawFileFilters],
) -> VerifyReport:
    """Check every ``upload_done`` raw file matching ``filters`` (or a random ``sample`` of them) against S3.

    ``since`` keeps raw files created on or after that day (UTC). ``sample``
    (``None`` or 0: all) checks that many, chosen at random (``seed`` makes the
    choice reproducible); ``concurrency`` raw files are checked at a time. With
    ``object_lock`` (``backup.s3.object_lock``) every object's retention is
    checked too (``retention missing/shorter``). Raises
    :class:`~rawvault.s3.errors.S3AccessDeniedError` when S3 refuses the
    credentials; everything else found is in the report. Re-reading the data
    (scrubbing) is :func:`rawvault.scrub.scrub_backups`.
    """
    selection = select_raw_files(sample=sample, seed=seed, fallback_project_id=fallback_project_id, **filters)
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
