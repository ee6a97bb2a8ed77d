"""rawvault's metrics as plain functions: what to measure and under which name, without Airflow.

The names and tags are documented in README "Metrics". The sink is Airflow's
own stats (``airflow.sdk.observability.stats``: StatsD, Datadog or
OpenTelemetry as ``[metrics]`` configures), handed in by
:mod:`rawvault.impl.metrics`; tests pass a recorder. Plain StatsD drops tags,
so the one dimension that matters most for each counter (failure reason,
backup status) is also part of the name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Protocol

from shared.s3_limits import MIB

PREFIX = "rawvault"
UPLOAD_BYTES = f"{PREFIX}.upload.bytes"
UPLOAD_DURATION = f"{PREFIX}.upload.duration"
UPLOAD_THROUGHPUT = f"{PREFIX}.upload.throughput_mib_s"
UPLOAD_PARTS_RESUMED = f"{PREFIX}.upload.parts_resumed"
UPLOAD_DONE = f"{PREFIX}.upload.done"
UPLOAD_FAILURES = f"{PREFIX}.upload.failures"  # + ".<reason>"
OLDEST_UNPROTECTED_AGE = f"{PREFIX}.coverage.oldest_unprotected_age_seconds"
UNPROTECTED = f"{PREFIX}.coverage.unprotected"
RAW_FILES = f"{PREFIX}.raw_files"  # + ".<backup_status>" ("none": no backup started yet)


class StatsSink(Protocol):
    """The part of Airflow's stats module rawvault uses (``incr``, ``gauge``, ``timing`` with tags)."""

    def incr(self, stat: str, count: int = 1, *, tags: dict[str, str] | None = None) -> None: ...

    def gauge(self, stat: str, value: float, *, tags: dict[str, str] | None = None) -> None: ...

    def timing(self, stat: str, dt: float, *, tags: dict[str, str] | None = None) -> None: ...


def failure_reason(error: BaseException) -> str:
    """A short, bounded name for why an upload failed: the error's class in snake case (``s3_transient``)."""
    name = type(error).__name__.removesuffix("Error").removesuffix("Exception") or "unknown"
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def upload_succeeded(
    sink: StatsSink, *, instrument_id: str, bytes_uploaded: int, seconds: float, parts_resumed: int
) -> None:
    """One upload run that ended verified: bytes sent, duration (ms), throughput, resumed parts."""
    tags = {"instrument": instrument_id}
    sink.incr(UPLOAD_DONE, tags=tags)
    sink.incr(UPLOAD_BYTES, bytes_uploaded, tags=tags)
    sink.timing(UPLOAD_DURATION, seconds * 1000.0, tags=tags)
    if bytes_uploaded and seconds > 0:
        sink.gauge(UPLOAD_THROUGHPUT, round(bytes_uploaded / MIB / seconds, 3), tags=tags)
    if parts_resumed:
        sink.incr(UPLOAD_PARTS_RESUMED, parts_resumed, tags=tags)


def upload_failed(sink: StatsSink, *, instrument_id: str, error: BaseException) -> str:
    """One upload run that failed: ``rawvault.upload.failures.<reason>``; returns the reason."""
    reason = failure_reason(error)
    sink.incr(f"{UPLOAD_FAILURES}.{reason}", tags={"instrument": instrument_id, "reason": reason})
    return reason


def backup_state(
    sink: StatsSink,
    *,
    counts: Mapping[str | None, int],
    unprotected: int,
    oldest_unprotected_at: datetime | None,
    now: datetime,
) -> None:
    """The facility's state: raw files per backup status, unprotected count, age of the oldest unprotected one."""
    for status, count in counts.items():
        name = status or "none"
        sink.gauge(f"{RAW_FILES}.{name}", count, tags={"backup_status": name})
    sink.gauge(UNPROTECTED, unprotected)
    age = (now - oldest_unprotected_at).total_seconds() if oldest_unprotected_at else 0.0
    sink.gauge(OLDEST_UNPROTECTED_AGE, round(max(0.0, age), 1))
