"""Use case "verify/audit": select the uploaded raw files from the database, sample them, check them in S3.

The selection (filters: instrument, project, raw file id, created since a
date) is a read of :mod:`shared.db.interface`; the checks are
:mod:`rawvault.s3.drift` (``head_object`` only, nothing downloaded; with
``backup.s3.object_lock`` also each object's retention). Scrubbing,
which re-reads the data, is :mod:`rawvault.scrub`.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, TypedDict, Unpack

from rawvault.s3.drift import VerifyReport, verify_raw_files
from rawvault.stores import recorded_etag_shapes
from shared.db.interface import raw_files_by_id, uploaded_raw_file_ids

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from shared.settings import ObjectLockSettings

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 8  # raw files checked at a time: head_object is latency-bound, not bandwidth-bound


class RawFileFilters(TypedDict, total=False):
    """The filters that select ``upload_done`` raw files for an audit or a scrub (every one given must match).

    ``since`` keeps raw files created on or after that day (UTC); ``project``
    is the fallback project id for raw files without one.
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
    ids = uploaded_raw_file_ids(**filters, fallback_project_id=fallback_project_id)
    matched = len(ids)
    if sample:
        rng = random.Random(seed)  # noqa: S311 - choosing a sample to audit, not a secret
        chosen = set(rng.sample(ids, min(sample, len(ids))))
        ids = [rid for rid in ids if rid in chosen]
    return Selection(ids, matched, describe_filters(filters, sample=sample))


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
    verify_raw_files(
        raw_files_by_id(selection.raw_file_ids), client, report, concurrency=concurrency, object_lock=object_lock,
        etag_shapes=recorded_etag_shapes(client),
    )  # fmt: skip
    log.info("%s", report.summary())
    return report
