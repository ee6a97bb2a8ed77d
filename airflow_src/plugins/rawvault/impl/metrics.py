"""Airflow's stats (StatsD, Datadog or OpenTelemetry as ``[metrics]`` configures) behind :mod:`rawvault.metrics`.

Metrics never fail a task: a broken metrics backend is logged and ignored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any, cast

from rawvault import metrics
from rawvault.metrics import StatsSink
from rawvault.s3.file_set import UploadResult
from shared.settings import Settings

log = logging.getLogger(__name__)


def stats_sink() -> StatsSink:
    """Airflow's stats module (the task runner has configured its backend from ``[metrics]``)."""
    from airflow.sdk.observability import stats

    return cast(StatsSink, stats)


def _quietly(emit: Callable[[], Any]) -> None:
    try:
        emit()
    except Exception as error:  # a metrics backend must never fail a backup
        log.warning("metrics not sent: %s: %s", type(error).__name__, error)


def measured_upload(
    instrument_id: str, upload: Callable[[], UploadResult], *, not_failures: tuple[type[BaseException], ...] = ()
) -> UploadResult:
    """Run ``upload()`` and send its metrics: bytes, duration, throughput, resumed parts, or the failure reason.

    ``not_failures``: errors that mean "another run does it" (skipped, not failed): no metric.
    """
    sink, started = stats_sink(), time.monotonic()
    try:
        result = upload()
    except not_failures:
        raise
    except BaseException as error:
        _quietly(partial(metrics.upload_failed, sink, instrument_id=instrument_id, error=error))
        raise
    seconds = time.monotonic() - started
    _quietly(
        lambda: metrics.upload_succeeded(
            sink,
            instrument_id=instrument_id,
            bytes_uploaded=result.bytes_uploaded,
            seconds=seconds,
            parts_resumed=result.parts_resumed,
        )
    )
    return result


def send_backup_state(settings: Settings) -> None:
    """Gauges of the facility's state: raw files per backup status, the unprotected ones and the oldest's age."""
    from rawvault.coverage import coverage_report
    from shared.db.interface import utc_now
    from shared.db.state_counts import backup_status_counts

    def emit() -> None:
        now = utc_now()
        rows = coverage_report(settings, now=now).rows  # oldest first
        oldest = datetime.fromisoformat(rows[0].created_at) if rows else None
        metrics.backup_state(
            stats_sink(), counts=backup_status_counts(), unprotected=len(rows), oldest_unprotected_at=oldest, now=now
        )

    _quietly(emit)
