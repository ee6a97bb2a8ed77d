"""Bandwidth windows with a fake clock: schedule lookup, rates, bursts, pauses, midnight and DST; the registry."""

from __future__ import annotations

import io
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from rawvault.s3 import bandwidth
from rawvault.s3.bandwidth import (
    BandwidthLimiter,
    BandwidthSchedule,
    ThrottledReader,
    limiter_for,
)
from shared.settings import UPLOAD_BACKOFF_CAP_HOURS, BandwidthSettings

MB = 1_000_000
WORKDAYS = ["mon", "tue", "wed", "thu", "fri"]
KIB = 1024


class FakeClock:
    """A wall clock starting at ``start`` and a monotonic clock; sleeping advances both, instantly."""

    def __init__(self, start: datetime) -> None:
        self.start = start
        self.elapsed = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.elapsed

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.elapsed)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.elapsed += seconds


def settings(limit_mbit: float | None = None, *windows: dict) -> BandwidthSettings:
    return BandwidthSettings.model_validate({"limit_mbit": limit_mbit, "schedule": list(windows)})


def limiter(section: BandwidthSettings, start: datetime, timezone: str = "UTC") -> tuple[BandwidthLimiter, FakeClock]:
    clock = FakeClock(start)
    return BandwidthLimiter(BandwidthSchedule.from_settings(section, timezone), clock), clock


def send(limiter_: BandwidthLimiter, total: int, chunk: int = 128 * KIB) -> None:
    while total > 0:
        limiter_.throttle(min(chunk, total))
        total -= chunk


# 2026-11-30 is a Monday.
MONDAY = datetime(2026, 11, 30, tzinfo=UTC)


def test_limit_comes_from_the_window_open_in_the_facility_time_zone() -> None:
    section = settings(100, {"days": WORKDAYS, "from": "08:00", "to": "18:00", "limit_mbit": 20})
    schedule = BandwidthSchedule.from_settings(section, "Europe/Berlin")  # UTC+1 in November
    assert schedule.at(MONDAY.replace(hour=6, minute=59))[0] == 100  # 07:59 in Berlin
    limit, window, left = schedule.at(MONDAY.replace(hour=7))  # 08:00 in Berlin
    assert (limit, left) == (20, 10 * 3600)
    assert window is not None and window.label == "mon,tue,wed,thu,fri 08:00-18:00 Europe/Berlin"
    assert schedule.at(MONDAY.replace(hour=17))[0] == 100  # 18:00 in Berlin: the window has ended
    assert schedule.at(MONDAY + timedelta(days=5, hours=10))[0] == 100  # Saturday


def test_a_window_that_ends_before_it_starts_crosses_midnight() -> None:
    section = settings(None, {"days": ["fri"], "from": "22:00", "to": "06:00", "limit_mbit": 0})
    schedule = BandwidthSchedule.from_settings(section)
    friday = MONDAY + timedelta(days=4)
    assert schedule.at(friday.replace(hour=21, minute=59))[0] is None
    assert schedule.at(friday.replace(hour=22))[0] == 0
    assert schedule.at(friday + timedelta(days=1, hours=5, minutes=59))[0] == 0  # Saturday 05:59
    assert schedule.at(friday + timedelta(days=1, hours=6))[0] is None  # Saturday 06:00
    assert schedule.at(friday + timedelta(days=2, hours=3))[0] is None  # Sunday night: not a Friday window


def test_a_sunday_night_window_continues_into_monday() -> None:
    section = settings(50, {"days": ["sun"], "from": "23:00", "to": "01:00", "limit_mbit": 5})
    schedule = BandwidthSchedule.from_settings(section)
    assert schedule.at(MONDAY.replace(hour=0, minute=30))[0] == 5
    assert schedule.at(MONDAY.replace(hour=1))[0] == 50


def test_windows_follow_the_wall_clock_across_daylight_saving_time() -> None:
    section = settings(None, {"days": WORKDAYS, "from": "08:00", "to": "18:00", "limit_mbit": 10})
    schedule = BandwidthSchedule.from_settings(section, "Europe/Berlin")
    # 06:30 UTC is 07:30 on Friday 27 March 2026 (CET, UTC+1) but 08:30 on Monday 30 March (CEST, UTC+2).
    assert schedule.at(datetime(2026, 3, 27, 6, 30, tzinfo=UTC))[0] is None
    assert schedule.at(datetime(2026, 3, 30, 6, 30, tzinfo=UTC))[0] == 10


def test_a_pause_on_the_dst_night_ends_at_its_wall_clock_end() -> None:
    # Sunday 29 March 2026, Berlin: 02:00 CET jumps to 03:00 CEST, so 01:00-04:00 lasts two real hours.
    section = settings(80, {"days": ["sun"], "from": "01:00", "to": "04:00", "limit_mbit": 0})
    limiter_, clock = limiter(section, datetime(2026, 3, 29, 0, 30, tzinfo=UTC), "Europe/Berlin")  # 01:30 CET
    limiter_.throttle(1000)
    assert clock.now() == datetime(2026, 3, 29, 2, 0, tzinfo=UTC)  # 04:00 CEST
    assert max(clock.sleeps) <= bandwidth.PAUSE_RECHECK_SECONDS


def test_rate_matches_the_limit() -> None:
    limiter_, clock = limiter(settings(80), MONDAY)  # 80 Mbit/s = 10 MB/s
    send(limiter_, 100 * MB)
    # 100 MB at 10 MB/s, less the bucket's first burst (0.25 s worth).
    assert clock.elapsed == pytest.approx(10.0 - bandwidth.BURST_SECONDS, abs=0.02)
    assert limiter_.status().achieved_mbit == pytest.approx(80, rel=0.03)


def test_an_idle_link_may_burst_only_the_bucket() -> None:
    limiter_, clock = limiter(settings(80), MONDAY)
    send(limiter_, 10 * MB)
    clock.sleep(60)  # idle for a minute: tokens refill, but only up to the bucket's size
    before = clock.elapsed
    limiter_.throttle(int(10 * MB * bandwidth.BURST_SECONDS))  # one full bucket: no wait
    assert clock.elapsed == before
    limiter_.throttle(MB)  # anything more waits at the rate
    assert clock.elapsed - before == pytest.approx(0.1, abs=0.001)


def test_no_limit_never_waits() -> None:
    limiter_, clock = limiter(settings(None), MONDAY)
    send(limiter_, 500 * MB)
    assert clock.elapsed == 0
    assert limiter_.status().describe().startswith("no bandwidth limit")


def test_a_pause_window_holds_callers_until_it_ends_then_the_limit_applies() -> None:
    section = settings(80, {"from": "10:00", "to": "10:05", "limit_mbit": 0})
    limiter_, clock = limiter(section, MONDAY.replace(hour=10, minute=4, second=30))
    status = limiter_.status()
    assert status.paused and status.window == "mon,tue,wed,thu,fri,sat,sun 10:00-10:05 UTC"
    assert status.describe().startswith("uploads paused (window ")
    limiter_.throttle(1000)
    assert clock.now() == MONDAY.replace(hour=10, minute=5)  # released exactly at the window's end
    assert not limiter_.status().paused
    started = clock.elapsed
    send(limiter_, 20 * MB)
    assert clock.elapsed - started == pytest.approx(2.0 - bandwidth.BURST_SECONDS, abs=0.02)


def test_the_limit_changes_at_a_window_edge_during_a_transfer() -> None:
    section = settings(80, {"from": "12:00", "to": "13:00", "limit_mbit": 8})
    limiter_, clock = limiter(section, MONDAY.replace(hour=11, minute=59, second=58))
    # A first burst, 2 s at 10 MB/s up to 12:00, then 18 MB at 1 MB/s.
    send(limiter_, int(10 * MB * bandwidth.BURST_SECONDS) + 20 * MB + 18 * MB)
    assert clock.now() == pytest.approx(MONDAY.replace(hour=12, minute=0, second=18), abs=timedelta(seconds=0.3))
    assert limiter_.status().limit_mbit == 8


def test_a_large_request_is_split_so_a_pause_can_still_stop_it() -> None:
    section = settings(8, {"from": "10:00", "to": "11:00", "limit_mbit": 0})
    limiter_, clock = limiter(section, MONDAY.replace(hour=9, minute=59, second=50))
    limiter_.throttle(50 * MB)  # 50 s at 1 MB/s: the pause from 10:00 to 11:00 interrupts it
    assert clock.now() >= MONDAY.replace(hour=11, minute=0, second=39)


def test_threads_share_one_bucket() -> None:
    limiter_ = BandwidthLimiter(BandwidthSchedule.from_settings(settings(80)))  # the real clock
    started = time.monotonic()
    threads = [threading.Thread(target=send, args=(limiter_, 2 * MB)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # 8 MB at 10 MB/s less one burst: a lower bound only (the machine may be slower, never faster).
    assert time.monotonic() - started >= 0.8 - bandwidth.BURST_SECONDS - 0.01


def test_throttled_reader_passes_every_byte_read() -> None:
    calls: list[int] = []

    class Recording(BandwidthLimiter):
        def throttle(self, nbytes: int) -> None:
            calls.append(nbytes)

    reader = ThrottledReader(io.BytesIO(b"x" * 1000), Recording(BandwidthSchedule.from_settings(settings(None))))
    assert reader.read(300) == b"x" * 300
    reader.seek(0)
    assert len(reader.read()) == 1000
    assert calls == [300, 1000] and reader.tell() == 1000


def test_one_limiter_per_section_in_a_process() -> None:
    window = {"days": ["mon"], "from": "08:00", "to": "18:00", "limit_mbit": 8}
    section = settings(80, window)
    first = limiter_for(section, "Europe/Berlin")
    assert first is limiter_for(settings(80, dict(window)), "Europe/Berlin")
    assert first is not limiter_for(section, "UTC")
    assert limiter_for(None) is None


def test_backoff_cap_in_settings_is_the_sweeper_one() -> None:
    from rawvault.sweeper import MAX_BACKOFF

    assert timedelta(hours=UPLOAD_BACKOFF_CAP_HOURS) == MAX_BACKOFF
