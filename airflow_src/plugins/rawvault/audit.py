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

from rawvault.s3.client import S3Client
from rawvault.s3.drift import VerifyReport, verify_raw_files
from rawvault.stores import recorded_etag_shapes
from shared.db.interface import raw_files_by_id, uploaded_raw_file_ids
from shared.db.uploaded import sample_uploaded_raw_files
from shared.db.uploaded_filter import FALLBACK_PROJECT_ID, UploadedFilters

if TYPE_CHECKING:
    from shared.settings import ObjectLockSettings

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 8  # raw files checked at a time: head_object is latency-bound, not bandwidth-bound


@dataclass(frozen=True)
class AuditSelection:
    """Which ``upload_done`` raw files an audit or a scrub checks: the filters, a random sample, the fallback project.

    Every filter given must match; ``since`` keeps raw files created on or after that day (UTC); ``project``: raw
    files without a project count as ``fallback_project_id`` (``watcher.fallback_project_id``). ``sample``
    (``None`` or 0: all) checks that many, chosen at random; ``seed`` makes the choice reproducible. Built once by
    the command line or the DAG task and handed to :func:`select_raw_files`, :func:`verify_backups` and
    :func:`rawvault.scrub.scrub_backups`.
    """

    instrument: str | None = None
    project: str | None = None
    raw_file_id: str | None = None
    since: date | datetime | None = None
    sample: int | None = None
    seed: int | None = None
    fallback_project_id: str = FALLBACK_PROJECT_ID

    def __post_init__(self) -> None:
        if self.sample is not None and self.sample < 0:
            raise ValueError(f"sample must be 0 or more raw files, got {self.sample}")

    def filters(self) -> UploadedFilters:
        """The filters as :mod:`shared.db.uploaded_filter` takes them (with the fallback project)."""
        return UploadedFilters(
            instrument=self.instrument, project=self.project, raw_file_id=self.raw_file_id, since=self.since,
            fallback_project_id=self.fallback_project_id,
        )  # fmt: skip

    def describe(self, **extra: object) -> dict[str, str]:
        """The filters and the sample given (and ``extra`` settings of the run) as text, for a report.

        What is ``None`` was not given and is left out; the fallback project is a setting, not a filter.
        """
        given = {name: value for name, value in self.filters().items() if name != "fallback_project_id"}
        given |= {"sample": self.sample, **extra}
        return {name: str(value) for name, value in given.items() if value is not None}


@dataclass
class Selection:
    """The raw files an audit checks: their ids (oldest first), how many matched the filters, the filters."""

    raw_file_ids: list[str]
    matched: int
    filters: dict[str, str]
    raw_files: list[Any] | None = None  # a sample's documents, already read whole (None: read them by id)


def select_raw_files(selection: AuditSelection) -> Selection:
    """The ``upload_done`` raw files ``selection`` names, or a random ``sample`` of them (``seed``: reproducible)."""
    filters, shown = selection.filters(), selection.describe()
    if selection.sample:
        # Drawn by the database through an index (shared.db.uploaded): never every id of every raw file.
        chosen = sample_uploaded_raw_files(selection.sample, seed=selection.seed, **filters)
        return Selection([raw_file.id for raw_file in chosen.raw_files], chosen.matched, shown, chosen.raw_files)
    ids = uploaded_raw_file_ids(**filters)
    return Selection(ids, len(ids), shown)


def verify_backups(
    client: S3Client,
    selection: AuditSelection | None = None,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    object_lock: ObjectLockSettings | None = None,
) -> VerifyReport:
    """Check every ``upload_done`` raw file of ``selection`` (or its random ``sample``) against S3.

    ``selection`` ``None``: every ``upload_done`` raw file. ``concurrency`` raw files are checked at a time. With
    ``object_lock`` (``backup.s3.object_lock``) every object's retention is
    checked too (``retention missing/shorter``). Raises
    :class:`~rawvault.s3.errors.S3AccessDeniedError` when S3 refuses the
    credentials; everything else found is in the report. Re-reading the data
    (scrubbing) is :func:`rawvault.scrub.scrub_backups`.
    """
    selection = selection or AuditSelection()
    selected = select_raw_files(selection)
    report = VerifyReport(matched=selected.matched, filters=selected.filters)
    log.info(
        "verifying %s upload_done raw file(s) against S3%s",
        selected.matched,
        f" (sample of {selection.sample})" if selection.sample else "",
    )
    raw_files = selected.raw_files if selected.raw_files is not None else raw_files_by_id(selected.raw_file_ids)
    verify_raw_files(
        raw_files, client, report, concurrency=concurrency, object_lock=object_lock,
        etag_shapes=recorded_etag_shapes(client),
    )  # fmt: skip
    log.info("%s", report.summary())
    return report
