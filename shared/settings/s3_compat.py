"""Settings for the object stores facilities run: compatibility mode, bandwidth windows, Object Lock, lifecycle.

All of them live under ``backup.s3`` (see :class:`shared.settings.s3.S3Settings`); the facility's time
zone, which the bandwidth windows are read in, is the top-level ``timezone`` key.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BeforeValidator, Field, field_validator, model_validator

from shared.s3_limits import UPLOAD_BACKOFF_CAP_HOURS
from shared.settings.base import FIXES, Section

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_DAY = 24 * 60
# Where lifecycle transitions may go (S3's "waterfall": each class may move only to a later one).
TRANSITION_ORDER = (
    "STANDARD",
    "STANDARD_IA",
    "INTELLIGENT_TIERING",
    "ONEZONE_IA",
    "GLACIER_IR",
    "GLACIER",
    "DEEP_ARCHIVE",
)
TRANSITION_CLASSES = TRANSITION_ORDER[1:]
# S3 refuses transitions to these classes before an object is 30 days old.
MIN_DAYS_BEFORE_IA = 30
MAX_RETENTION_DAYS = 36_500

TIME_FIX = 'write a 24-hour time in quotes, e.g. "08:00" or "18:30" ("24:00" ends a window at midnight)'
FIXES.update(
    {
        "timezone": "write an IANA time zone name, e.g. Europe/Berlin or UTC",
        "backup.s3.compatibility": (
            "use auto (probe each bucket, fall back safely), aws (assume AWS behaviour, no probe) or strict "
            "(probe and refuse a store without conditional writes or SHA-256 checksums)"
        ),
        "backup.s3.reprobe_after_days": "use days above 0 (at most 365), e.g. 7",
        "backup.s3.bandwidth.limit_mbit": "use megabits per second above 0, or remove the key for no limit",
        "backup.s3.object_lock.mode": "use GOVERNANCE or COMPLIANCE",
        "backup.s3.object_lock.days": f"use whole days from 1 to {MAX_RETENTION_DAYS}",
        "backup.s3.lifecycle.transition.storage_class": f"use one of {', '.join(TRANSITION_CLASSES)}",
    }
)


def zone(name: str) -> ZoneInfo:
    """The time zone called ``name``; ``ValueError`` naming it when the IANA database does not know it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


def _time_of_day(value: Any) -> str:
    # YAML 1.1 reads an unquoted 18:00 as the base-60 number 1080: say so instead of "not a string".
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(f"got the number {value}: YAML reads an unquoted time such as 18:00 as a number; {TIME_FIX}")
    if not isinstance(value, str) or not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d|24:00", value.strip()):
        raise ValueError(f"{value!r} is not a time of day: {TIME_FIX}")
    return value.strip()


TimeOfDay = Annotated[str, BeforeValidator(_time_of_day)]


def minutes(time_of_day: str) -> int:
    """Minutes after midnight of ``"HH:MM"``."""
    hours, mins = time_of_day.split(":")
    return int(hours) * 60 + int(mins)


class BandwidthWindow(Section):
    """A weekly time window with its own upload limit, in the facility's time zone (``timezone``)."""

    # The days the window starts on; a window whose end is not after its start ends on the next day.
    days: tuple[Weekday, ...] = WEEKDAYS
    start: TimeOfDay = Field(alias="from")
    end: TimeOfDay = Field(alias="to")
    limit_mbit: Annotated[float, Field(ge=0)]  # 0 pauses uploads inside the window

    @field_validator("days", mode="before")
    @classmethod
    def _days_list(cls, value: Any) -> Any:
        # YAML gives a list; strict mode wants a tuple (hashable, immutable settings).
        if isinstance(value, list):
            value = tuple(value)
        if isinstance(value, tuple) and len(set(value)) != len(value):
            raise ValueError(f"{list(value)} names a day twice")
        if isinstance(value, tuple) and not value:
            raise ValueError(f"list at least one day ({', '.join(WEEKDAYS)})")
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> BandwidthWindow:
        if self.start == "24:00":
            raise ValueError('from "24:00" is the next day\'s "00:00": write that, on the next day')
        if minutes(self.start) == minutes(self.end):
            raise ValueError(
                f"from {self.start!r} and to {self.end!r} give a window of no length: for a whole day write "
                'from: "00:00", to: "24:00"'
            )
        return self

    @property
    def length_minutes(self) -> int:
        """How long the window lasts (it may end on the next day)."""
        return (minutes(self.end) - minutes(self.start)) % MINUTES_PER_DAY or MINUTES_PER_DAY

    def week_intervals(self) -> list[tuple[int, int]]:
        """The window as ``[start, end)`` minutes of the week (Monday 00:00 = 0), split at the week's end."""
        week = 7 * MINUTES_PER_DAY
        intervals = []
        for day in self.days:
            start = WEEKDAYS.index(day) * MINUTES_PER_DAY + minutes(self.start)
            end = start + self.length_minutes
            intervals.append((start, min(end, week)))
            if end > week:
                intervals.append((0, end - week))
        return intervals

    def describe(self) -> str:
        """E.g. ``mon,tue 08:00-18:00``."""
        return f"{','.join(self.days)} {self.start}-{self.end}"


def _clock(minute_of_week: int) -> str:
    day, minute = divmod(minute_of_week, MINUTES_PER_DAY)
    return f"{WEEKDAYS[day]} {minute // 60:02d}:{minute % 60:02d}"


class BandwidthSettings(Section):
    """Upload bandwidth of one worker process: a limit, and weekly windows with limits of their own."""

    # Megabits (10^6 bits) per second outside every window; None: no limit.
    limit_mbit: Annotated[float, Field(gt=0)] | None = None
    schedule: tuple[BandwidthWindow, ...] = ()

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule_list(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value

    @model_validator(mode="after")
    def _no_overlaps(self) -> BandwidthSettings:
        # Overlapping windows would need a rule for which limit wins; refusing them keeps the schedule readable.
        for i, first in enumerate(self.schedule):
            for j in range(i + 1, len(self.schedule)):
                second = self.schedule[j]
                for a_start, a_end in first.week_intervals():
                    for b_start, b_end in second.week_intervals():
                        if max(a_start, b_start) < min(a_end, b_end):
                            raise ValueError(
                                f"schedule windows {i} ({first.describe()}) and {j} ({second.describe()}) overlap at "
                                f"{_clock(max(a_start, b_start))}: make them not overlap (one limit applies at a time)"
                            )
        return self


class ObjectLockSettings(Section):
    """S3 Object Lock retention of every object and manifest rawvault writes."""

    mode: Literal["GOVERNANCE", "COMPLIANCE"]
    days: Annotated[int, Field(ge=1, le=MAX_RETENTION_DAYS)]


class TransitionSettings(Section):
    """Move objects to a colder storage class some days after they were written."""

    days: Annotated[int, Field(ge=0)]
    storage_class: Literal[TRANSITION_CLASSES]  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _ia_minimum(self) -> TransitionSettings:
        if self.storage_class in ("STANDARD_IA", "ONEZONE_IA") and self.days < MIN_DAYS_BEFORE_IA:
            raise ValueError(
                f"S3 moves objects to {self.storage_class} only once they are {MIN_DAYS_BEFORE_IA} days old: set "
                f"days to {MIN_DAYS_BEFORE_IA} or more"
            )
        return self


class LifecycleSettings(Section):
    """Bucket lifecycle rules rawvault applies (each optional; an absent one is not set)."""

    abort_incomplete_multipart_days: Annotated[int, Field(ge=1)] | None = None
    transition: TransitionSettings | None = None
    noncurrent_version_expiration_days: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _some_rule(self) -> LifecycleSettings:
        if (
            self.abort_incomplete_multipart_days is None
            and self.transition is None
            and self.noncurrent_version_expiration_days is None
        ):
            raise ValueError(
                "sets no rule: set abort_incomplete_multipart_days, transition or noncurrent_version_expiration_days, "
                "or remove the lifecycle section"
            )
        return self


def longest_resume_hours(max_upload_attempts: int, upload_timeout_hours: float) -> float:
    """Hours from the start of a multipart upload during which a later attempt may still resume it.

    Every attempt may run ``upload_timeout_hours``, and backup_sweeper waits at most
    :data:`UPLOAD_BACKOFF_CAP_HOURS` before the next one (one cap more than the waits
    between attempts, as a margin for sweep intervals and pool queues).
    """
    return max_upload_attempts * (upload_timeout_hours + UPLOAD_BACKOFF_CAP_HOURS)


def resume_window_problem(
    abort_days: int | None, max_upload_attempts: int, upload_timeout_hours: float
) -> tuple[str, str] | None:
    """``(message, fix)`` when lifecycle would abort multipart uploads that a retry may still resume."""
    if abort_days is None:
        return None
    hours = longest_resume_hours(max_upload_attempts, upload_timeout_hours)
    if abort_days * 24 > hours:
        return None
    needed = int(hours // 24) + 1
    return (
        f"{abort_days} days is not longer than the longest time an upload may still be resumed: "
        f"max_upload_attempts x (upload_timeout_hours + {UPLOAD_BACKOFF_CAP_HOURS:g} h backoff cap) = "
        f"{max_upload_attempts} x ({upload_timeout_hours:g} + {UPLOAD_BACKOFF_CAP_HOURS:g}) h = {hours:g} h, so S3 "
        "could abort an upload that the next attempt would resume",
        f"set it to {needed} or more, or lower backup.s3.max_upload_attempts or backup.s3.upload_timeout_hours",
    )


def compat_cross_checks(
    storage_class: str, max_upload_attempts: int, upload_timeout_hours: float, lifecycle: LifecycleSettings | None
) -> list[tuple[str, str, str]]:
    """Problems of ``backup.s3.lifecycle`` against the rest of ``backup.s3``, as ``(key path, message, fix)``."""
    if lifecycle is None:
        return []
    problems = []
    key = "backup.s3.lifecycle"
    window = resume_window_problem(lifecycle.abort_incomplete_multipart_days, max_upload_attempts, upload_timeout_hours)
    if window:
        problems.append((f"{key}.abort_incomplete_multipart_days", *window))
    transition = lifecycle.transition
    if transition and TRANSITION_ORDER.index(transition.storage_class) <= TRANSITION_ORDER.index(storage_class):
        problems.append(
            (
                f"{key}.transition.storage_class",
                f"S3 cannot move objects from {storage_class} (backup.s3.storage_class) to {transition.storage_class}",
                f"pick a class after {storage_class} in {', '.join(TRANSITION_ORDER)}, or remove the transition",
            )
        )
    return problems
