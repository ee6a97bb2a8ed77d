"""Why the purge keeps a set: the check that failed and a reason that names the thing.

``str(PurgeBlockedError)`` is ``"<check>: <reason>"``, what ``RawFile.purge_blocked_reason``
records and the alert rule reads the check from (:func:`check_of`).
"""

from __future__ import annotations

from enum import StrEnum


class Check(StrEnum):
    """The purge's checks (and the deletion itself), in the order they run."""

    RECORD = "record"  # the RawFile: moved, backup status, what is recorded
    SHARE = "share"  # the set on the share is exactly the recorded one (fresh MD5s)
    LOCAL = "local"  # the local backup copy: every file, size and fresh MD5
    S3 = "s3"  # the manifest and every object in S3
    DELETE = "delete"  # deleting stopped midway (the next run finishes it)


class PurgeBlockedError(Exception):
    """A set may not be deleted now: ``check`` failed for ``reason``."""

    def __init__(self, check: Check, reason: str) -> None:
        super().__init__(f"{check.value}: {reason}")
        self.check = check
        self.reason = reason


def check_of(recorded_reason: str | None) -> str | None:
    """The check named at the start of a recorded ``purge_blocked_reason``; None when there is none."""
    if not recorded_reason:
        return None
    name = recorded_reason.split(":", 1)[0].strip()
    return name if name in {check.value for check in Check} else "unknown"
