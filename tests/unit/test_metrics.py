"""rawvault's metrics as plain functions (issue 17 item 3): names, tags, reasons; never failing an upload."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rawvault import metrics
from rawvault.claim import UploadInProgressError
from rawvault.impl import metrics as edge
from rawvault.s3.errors import S3AccessDeniedError, S3TransientError
from rawvault.s3.file_set import UploadResult


class Recorder:
    """A StatsSink that keeps (kind, name, value, tags)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, float, dict[str, str] | None]] = []

    def incr(self, stat: str, count: int = 1, *, tags: dict[str, str] | None = None) -> None:
        self.sent.append(("incr", stat, count, tags))

    def gauge(self, stat: str, value: float, *, tags: dict[str, str] | None = None) -> None:
        self.sent.append(("gauge", stat, value, tags))

    def timing(self, stat: str, dt: float, *, tags: dict[str, str] | None = None) -> None:
        self.sent.append(("timing", stat, dt, tags))

    def names(self) -> list[str]:
        return [name for _, name, _, _ in self.sent]


def test_failure_reasons_are_short_bounded_names() -> None:
    assert metrics.failure_reason(S3TransientError("x")) == "s3_transient"
    assert metrics.failure_reason(S3AccessDeniedError("x")) == "s3_access_denied"
    assert metrics.failure_reason(TimeoutError()) == "timeout"


def test_upload_and_state_metrics() -> None:
    sink = Recorder()
    metrics.upload_succeeded(sink, instrument_id="tims1", bytes_uploaded=64 << 20, seconds=2.0, parts_resumed=3)
    assert sink.sent == [
        ("incr", "rawvault.upload.done", 1, {"instrument": "tims1"}),
        ("incr", "rawvault.upload.bytes", 64 << 20, {"instrument": "tims1"}),
        ("timing", "rawvault.upload.duration", 2000.0, {"instrument": "tims1"}),
        ("gauge", "rawvault.upload.throughput_mib_s", 32.0, {"instrument": "tims1"}),
        ("incr", "rawvault.upload.parts_resumed", 3, {"instrument": "tims1"}),
    ]
    sink = Recorder()
    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    metrics.backup_state(
        sink,
        counts={None: 2, "upload_done": 5},
        unprotected=2,
        oldest_unprotected_at=now - timedelta(hours=30),
        now=now,
    )
    assert ("gauge", "rawvault.raw_files.none", 2, {"backup_status": "none"}) in sink.sent
    assert ("gauge", "rawvault.raw_files.upload_done", 5, {"backup_status": "upload_done"}) in sink.sent
    assert ("gauge", "rawvault.coverage.oldest_unprotected_age_seconds", 108000.0, None) in sink.sent


def test_measured_upload_counts_failures_by_reason_but_not_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    sink = Recorder()
    monkeypatch.setattr(edge, "stats_sink", lambda: sink)

    def failing() -> UploadResult:
        raise S3TransientError("S3 down")

    with pytest.raises(S3TransientError):
        edge.measured_upload("thermo1", failing)
    assert sink.sent == [
        ("incr", "rawvault.upload.failures.s3_transient", 1, {"instrument": "thermo1", "reason": "s3_transient"})
    ]

    def held_by_another_run() -> UploadResult:
        raise UploadInProgressError("another run uploads it")

    with pytest.raises(UploadInProgressError):
        edge.measured_upload("thermo1", held_by_another_run, not_failures=(UploadInProgressError,))
    assert len(sink.sent) == 1


def test_a_broken_metrics_backend_never_fails_the_upload(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken(Recorder):
        def incr(self, *args: Any, **kwargs: Any) -> None:
            raise OSError("statsd host unreachable")

    monkeypatch.setattr(edge, "stats_sink", Broken)
    result = UploadResult("b", "p/", "r.raw", "p/r.raw.rawvault-manifest.json")
    assert edge.measured_upload("thermo1", lambda: result) is result
