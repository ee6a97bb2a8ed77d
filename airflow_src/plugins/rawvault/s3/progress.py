"""Progress lines for long uploads: bytes done, percent, rate and ETA, at most every ``interval`` seconds."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from shared.s3_limits import MIB

DEFAULT_INTERVAL_SECONDS = 20.0


def format_bytes(size: float) -> str:
    """``size`` in B, KiB, MiB, GiB or TiB with one decimal."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def format_duration(seconds: float) -> str:
    """``seconds`` as ``H:MM:SS``."""
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class ProgressReporter:
    """A thread-safe boto3 transfer ``Callback`` that logs the progress of a whole upload.

    boto3 calls it from its transfer threads with the bytes sent since the
    last call (negative when a retried request rewinds). It logs one line at
    most every ``interval`` seconds and one at :meth:`finish`.
    """

    def __init__(
        self,
        total_bytes: int,
        *,
        label: str = "upload",
        interval: float = DEFAULT_INTERVAL_SECONDS,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
        status: Callable[[], str | None] | None = None,
    ) -> None:
        self.total_bytes = total_bytes
        self.status = status  # e.g. the bandwidth limit and achieved throughput, appended to every line
        self.label = label
        self.interval = interval
        self.logger = logger or logging.getLogger(__name__)
        self.clock = clock
        self.done_bytes = 0
        self.lines = 0
        self._lock = threading.Lock()
        self._started = clock()
        self._last_logged = self._started

    def __call__(self, bytes_transferred: int) -> None:
        with self._lock:
            self.done_bytes = max(0, self.done_bytes + bytes_transferred)
            now = self.clock()
            if now - self._last_logged < self.interval:
                return
            self._last_logged = now
            line = self._line(now)
        self.logger.info("%s", line)

    def snapshot(self) -> dict[str, float]:
        """Bytes done and total, the average rate (bytes/s) and the ETA (s; -1 while unknown), for a record."""
        with self._lock:
            done, elapsed = self.done_bytes, self.clock() - self._started
        rate = done / elapsed if elapsed > 0 else 0.0
        remaining = max(0, self.total_bytes - done)
        return {
            "bytes_done": done,
            "bytes_total": self.total_bytes,
            "bytes_per_second": round(rate, 1),
            "eta_seconds": round(remaining / rate, 1) if rate > 0 else -1,
        }

    def finish(self) -> None:
        """Log the final line (total, average rate, elapsed time)."""
        with self._lock:
            now = self.clock()
            elapsed = now - self._started
            rate = self.done_bytes / elapsed if elapsed > 0 else 0.0
            self.lines += 1
        self.logger.info(
            "%s: done, %s in %s (%.1f MiB/s)%s",
            self.label,
            format_bytes(self.done_bytes),
            format_duration(elapsed),
            rate / MIB,
            self._status(),
        )

    def _status(self) -> str:
        described = self.status() if self.status is not None else None
        return f"; {described}" if described else ""

    def _line(self, now: float) -> str:
        elapsed = now - self._started
        rate = self.done_bytes / elapsed if elapsed > 0 else 0.0
        percent = 100.0 * self.done_bytes / self.total_bytes if self.total_bytes else 100.0
        remaining = max(0, self.total_bytes - self.done_bytes)
        eta = format_duration(remaining / rate) if rate > 0 else "unknown"
        self.lines += 1
        return (
            f"{self.label}: {format_bytes(self.done_bytes)} of {format_bytes(self.total_bytes)} ({percent:.1f}%), "
            f"{rate / MIB:.1f} MiB/s, ETA {eta}{self._status()}"
        )
