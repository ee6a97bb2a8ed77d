"""Bandwidth windows: one token bucket per worker process, shared by every part of every upload.

``backup.s3.bandwidth`` gives a limit (megabits per second, 10^6 bits) and weekly
windows with limits of their own, read in the facility's time zone (top-level
``timezone``; a window that ends before it starts ends on the next day; on a
daylight-saving day the windows follow the wall clock). A limit of 0 pauses
uploads inside its window: callers wait, re-checking the schedule, and never fail.

:func:`limiter_for` returns the process's :class:`BandwidthLimiter` for a
settings section (one per distinct section, so every upload thread of a worker
shares it). Hook it into a client with :func:`throttle_uploads`: every
``PutObject`` and ``UploadPart`` body then passes the limiter *as it is sent*.
Why not in the body reader itself: botocore reads a body up to three times per
request over plain HTTP (flexible checksum, SigV4 payload hash, then the send;
measured with rawvault's ``PartReader``), so throttling every read would cap
uploads at a third of the limit there. :class:`ThrottledReader` wraps any body
for other uses.

The limiter's clock is injectable (:class:`Clock`), so tests run schedules
with a fake clock and no real sleeping.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

from rawvault.s3.body import RequestBody

if TYPE_CHECKING:
    from shared.settings import BandwidthSettings

BITS_PER_MEGABIT = 1_000_000
BURST_SECONDS = 0.25  # the bucket holds this long's worth of bytes: an idle link may send that much at once
MIN_BURST_BYTES = 256 * 1024
PAUSE_RECHECK_SECONDS = 5.0  # a paused caller looks at the schedule at least this often
THROUGHPUT_WINDOW_SECONDS = 10.0
MINUTES_PER_DAY = 24 * 60
MINUTES_PER_WEEK = 7 * MINUTES_PER_DAY
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
UPLOAD_OPERATIONS = ("PutObject", "UploadPart")


class Clock(Protocol):
    """Time as the limiter sees it: a monotonic clock for rates, the wall clock for the schedule, and sleep."""

    def monotonic(self) -> float: ...

    def now(self) -> datetime: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clocks."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass(frozen=True)
class Window:
    """A weekly window: the days it starts on (0 = Monday), its start and length in minutes, its limit."""

    days: frozenset[int]
    start_minute: int
    length_minutes: int
    limit_mbit: float
    label: str

    def minutes_left(self, minute_of_week: float) -> float | None:
        """Minutes until the window ends when it is open at ``minute_of_week``, else ``None``."""
        for day in self.days:
            into = (minute_of_week - (day * MINUTES_PER_DAY + self.start_minute)) % MINUTES_PER_WEEK
            if into < self.length_minutes:
                return self.length_minutes - into
        return None


@dataclass(frozen=True)
class BandwidthSchedule:
    """Which limit applies when: the windows (read in ``tz``) and the limit outside them (``None``: none)."""

    default_mbit: float | None
    windows: tuple[Window, ...]
    tz: ZoneInfo

    @classmethod
    def from_settings(cls, bandwidth: BandwidthSettings, timezone: str = "UTC") -> BandwidthSchedule:
        """The schedule of a validated ``backup.s3.bandwidth`` section, in time zone ``timezone``."""
        windows = tuple(
            Window(
                days=frozenset(WEEKDAYS.index(day) for day in window.days),
                start_minute=_minutes(window.start) % MINUTES_PER_DAY,
                length_minutes=window.length_minutes,
                limit_mbit=window.limit_mbit,
                label=f"{window.describe()} {timezone}",
            )
            for window in bandwidth.schedule
        )
        return cls(bandwidth.limit_mbit, windows, ZoneInfo(timezone))

    def at(self, when: datetime) -> tuple[float | None, Window | None, float | None]:
        """``(limit in Mbit/s or None, the open window or None, seconds until it closes or None)`` at ``when``."""
        local = when.astimezone(self.tz)
        minute_of_week = local.weekday() * MINUTES_PER_DAY + local.hour * 60 + local.minute + local.second / 60
        for window in self.windows:
            left = window.minutes_left(minute_of_week)
            if left is not None:
                return window.limit_mbit, window, left * 60
        return self.default_mbit, None, None


def _minutes(time_of_day: str) -> int:
    hours, mins = time_of_day.split(":")
    return int(hours) * 60 + int(mins)


@dataclass(frozen=True)
class BandwidthStatus:
    """The limit now and the throughput achieved recently, for the upload's log line."""

    limit_mbit: float | None
    window: str | None
    achieved_mbit: float
    paused: bool

    def describe(self) -> str:
        """E.g. ``bandwidth limit 80 Mbit/s (window mon,fri 08:00-18:00 Europe/Berlin), achieved 79.6 Mbit/s``."""
        if self.paused:
            limit = "uploads paused"
        elif self.limit_mbit is None:
            limit = "no bandwidth limit"
        else:
            limit = f"bandwidth limit {self.limit_mbit:g} Mbit/s"
        where = f" (window {self.window})" if self.window else ""
        return f"{limit}{where}, achieved {self.achieved_mbit:.1f} Mbit/s"


class BandwidthLimiter:
    """A thread-safe token bucket whose rate follows a :class:`BandwidthSchedule`.

    :meth:`throttle` reserves bytes and sleeps until the reservation is
    covered (callers queue in the order they asked); the bucket holds at most
    :data:`BURST_SECONDS` of the current rate. While the limit is 0 callers
    wait, looking at the schedule again at least every
    :data:`PAUSE_RECHECK_SECONDS` and exactly when the pause window ends.
    """

    def __init__(
        self,
        schedule: BandwidthSchedule,
        clock: Clock | None = None,
        *,
        burst_seconds: float = BURST_SECONDS,
        pause_recheck_seconds: float = PAUSE_RECHECK_SECONDS,
    ) -> None:
        self.schedule = schedule
        self.clock = clock or SystemClock()
        self.burst_seconds = burst_seconds
        self.pause_recheck_seconds = pause_recheck_seconds
        self._lock = threading.Lock()
        self._rate: float | None = None  # bytes per second now; None: unlimited, 0: paused
        self._tokens = 0.0
        self._updated = self.clock.monotonic()
        self._sent: deque[tuple[float, int]] = deque()
        self._first_sent: float | None = None
        self._limit: tuple[float | None, Window | None] = (None, None)

    def throttle(self, nbytes: int) -> None:
        """Wait until ``nbytes`` more bytes may be sent under the current limit (never raises for a pause)."""
        remaining = nbytes
        while remaining > 0:
            chunk = min(remaining, self._burst_bytes())
            self._take(chunk)
            remaining -= chunk

    def _burst_bytes(self) -> int:
        with self._lock:
            rate = self._rate
        if not rate:
            return MIN_BURST_BYTES
        return max(MIN_BURST_BYTES, int(rate * self.burst_seconds))

    def _take(self, nbytes: int) -> None:
        while True:
            with self._lock:
                now = self.clock.monotonic()
                limit, _window, seconds_left = self._follow_schedule(now)
                if limit == 0:
                    wait = min(self.pause_recheck_seconds, seconds_left or self.pause_recheck_seconds)
                else:
                    self._record(now, nbytes)
                    wait = 0.0
                    if self._rate is not None:
                        self._tokens -= nbytes
                        wait = max(0.0, -self._tokens / self._rate)
            if limit == 0:
                self.clock.sleep(max(wait, 0.001))
                continue
            if wait > 0:
                self.clock.sleep(wait)
            return

    def _follow_schedule(self, now: float) -> tuple[float | None, Window | None, float | None]:
        """Refill the bucket at the old rate up to ``now``, then switch to the limit the schedule gives now."""
        limit, window, seconds_left = self.schedule.at(self.clock.now())
        rate = None if limit is None else limit * BITS_PER_MEGABIT / 8
        if self._rate:
            self._tokens = min(self._tokens + (now - self._updated) * self._rate, self._capacity(self._rate))
        if rate != self._rate:
            if rate:
                # A fresh limit (after a pause, or from no limit) starts with a full bucket; a changed one keeps
                # its reservations (debt) but never more than the new bucket holds.
                self._tokens = self._capacity(rate) if not self._rate else min(self._tokens, self._capacity(rate))
            self._rate = rate
        self._updated = now
        self._limit = (limit, window)
        return limit, window, seconds_left

    def _capacity(self, rate: float) -> float:
        return max(float(MIN_BURST_BYTES), rate * self.burst_seconds)

    def _record(self, now: float, nbytes: int) -> None:
        if self._first_sent is None:
            self._first_sent = now
        self._sent.append((now, nbytes))
        while self._sent and self._sent[0][0] < now - THROUGHPUT_WINDOW_SECONDS:
            self._sent.popleft()

    def status(self) -> BandwidthStatus:
        """The current limit and the throughput of the last :data:`THROUGHPUT_WINDOW_SECONDS` (reservations)."""
        with self._lock:
            now = self.clock.monotonic()
            limit, window, _left = self._follow_schedule(now)
            while self._sent and self._sent[0][0] < now - THROUGHPUT_WINDOW_SECONDS:
                self._sent.popleft()
            started = self._first_sent if self._first_sent is not None else now
            # At least a second: right after the first burst the rate would be meaningless.
            span = max(1.0, min(THROUGHPUT_WINDOW_SECONDS, now - started))
            total = sum(nbytes for _t, nbytes in self._sent)
        achieved = total * 8 / BITS_PER_MEGABIT / span
        return BandwidthStatus(limit, window.label if window else None, achieved, limit == 0)


_LIMITERS: dict[str, BandwidthLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def limiter_for(bandwidth: BandwidthSettings | None, timezone: str = "UTC") -> BandwidthLimiter | None:
    """The limiter of this process for a ``backup.s3.bandwidth`` section (``None``: no section, no limiter).

    One limiter per distinct section and time zone, created on first use: every
    upload thread of the worker process shares it, whatever client it uses.
    """
    if bandwidth is None:
        return None
    key = f"{timezone}|{bandwidth.model_dump_json(by_alias=True)}"
    with _LIMITERS_LOCK:
        limiter = _LIMITERS.get(key)
        if limiter is None:
            limiter = _LIMITERS[key] = BandwidthLimiter(BandwidthSchedule.from_settings(bandwidth, timezone))
        return limiter


class ThrottledReader(RequestBody):
    """A body (``read``, ``seek``, ``tell``, optionally ``len()``) whose every read passes a limiter."""

    def __init__(self, raw: Any, limiter: BandwidthLimiter) -> None:
        self.raw = raw
        self.limiter = limiter

    def read(self, amount: int | None = -1) -> bytes:
        data = self.raw.read(amount)
        if data:
            self.limiter.throttle(len(data))
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def __len__(self) -> int:
        return len(self.raw)

    def close(self) -> None:
        self.raw.close()


def throttle_uploads(client: Any, limiter: BandwidthLimiter | None) -> None:
    """Make every ``PutObject`` / ``UploadPart`` body of ``client`` pass ``limiter`` as it is sent.

    Registered on botocore's ``before-send`` event, after checksums and
    signing read the body, so only the bytes on the wire count (a retried
    request counts again: it is sent again). ``None``: nothing to do.
    """
    if limiter is None:
        return

    def throttle_body(request: Any, **_kwargs: Any) -> None:
        body = request.body
        if body is None or isinstance(body, ThrottledReader):
            return
        if isinstance(body, bytes | bytearray):
            limiter.throttle(len(body))
        elif hasattr(body, "read"):
            request.body = ThrottledReader(body, limiter)

    for operation in UPLOAD_OPERATIONS:
        client.meta.events.register(
            f"before-send.s3.{operation}", throttle_body, unique_id=f"rawvault-bandwidth-{operation}"
        )
