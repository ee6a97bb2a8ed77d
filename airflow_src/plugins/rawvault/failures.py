"""A failed acquisition handler task, recorded on its ``RawFile``: step, reason, time, transient or permanent.

:func:`is_transient` is THE classification: a cause that may go away by
itself (the share or the database unreachable, a timeout, an ``OSError`` on
the share, S3 unreachable) is transient and ``acquisition_redrive`` starts the
handler again later; a cause that a retry cannot fix (a conflict in the
backup, files that changed, the wrong instrument, missing permissions: the
:data:`PERMANENT_ERRORS` that ``fail_fast`` turns into ``AirflowFailException``)
is permanent and stays visible until a person fixes it.

:func:`record_failure` is the only writer of ``error_step``, ``error_at`` and
``error_transient`` (with ``status=error`` and ``status_details`` =
``"<step>: <reason>"``, the form the alert rules read). It never marks a raw
file that has moved on: one moved off the share (or purged), or one that a
later re-drive owns (see :func:`attempt_expectation`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from rawvault.acquisition import AcquisitionGoneError, WrongInstrumentError
from rawvault.checksum import FileChangedError, TooManyPartsError
from rawvault.file_mover import MoveRefusedError
from rawvault.local_backup import BackupConflictError, CopyVerificationError
from rawvault.pipeline import FileInfoMismatchError
from rawvault.s3.errors import S3PermanentError, S3TransientError
from shared.db.interface import DB_ERRORS, DatabaseError, update_raw_file, utc_now
from shared.db.models import RawFileStatus
from shared.instrument_types import RawFileSetError

log = logging.getLogger(__name__)

# Errors a retry cannot fix: fail_fast fails their task at once (AirflowFailException), and they are never re-driven.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    AcquisitionGoneError,
    WrongInstrumentError,
    BackupConflictError,
    CopyVerificationError,
    TooManyPartsError,
    RawFileSetError,
    MoveRefusedError,
    FileInfoMismatchError,
    S3PermanentError,
    PermissionError,  # an OSError, but access rights do not come back by themselves
)
# Causes that may go away by themselves. FileChangedError: a file still being written while it was read.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    S3TransientError,
    DatabaseError,
    *DB_ERRORS,
    TimeoutError,
    FileChangedError,
    OSError,  # the share unmounted, renamed or unreachable; the backup disk busy
)
# Statuses past the handler's reach: a late failure of an old run never marks these "error".
_SETTLED_STATUSES = ("moved", "purged")
MAX_REASON_CHARS = 2000
KILLED_REASON = (
    "the task stopped without reporting an error: its worker was killed or lost, or it stopped sending "
    "heartbeats (Airflow's task heartbeat timeout)"
)


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and the errors it was raised from (``__cause__``, else ``__context__``), without loops."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_transient(
    error: BaseException | None,
    *,
    permanent: tuple[type[BaseException], ...] = (),
    transient: tuple[type[BaseException], ...] = (),
) -> bool:
    """Whether the cause of a failed task may go away by itself (re-drive it) or not (leave it to a person).

    The error and the errors it was raised from are looked at in turn, the
    outermost first; the first that is a known kind decides: ``permanent``
    (e.g. Airflow's ``AirflowFailException``, which ``fail_fast`` raises for
    :data:`PERMANENT_ERRORS`) and :data:`PERMANENT_ERRORS` are permanent,
    ``transient`` (e.g. Airflow's timeouts) and :data:`TRANSIENT_ERRORS` are
    transient. No error at all (the task was killed from outside) is
    transient; an error of no known kind too, so that re-drives, which are
    capped, try again rather than leave an acquisition unprotected.
    """
    if error is None:
        return True
    for link in _chain(error):
        if isinstance(link, permanent + PERMANENT_ERRORS):
            return False
        if isinstance(link, transient + TRANSIENT_ERRORS):
            return True
    return True


def describe(error: BaseException | None) -> str:
    """The reason recorded for a failure: ``"<type>: <message>"`` (no error: the task was killed from outside)."""
    if error is None:
        return KILLED_REASON
    text = str(error).strip()
    cause = error.__cause__
    if cause is not None and text.startswith(f"{type(cause).__name__}: "):
        return text  # fail_fast's AirflowFailException names the permanent error it wraps already
    return f"{type(error).__name__}: {text or '(no message)'}"


def attempt_expectation(redrives: int) -> dict[str, Any]:
    """The compare-and-set that a run of re-drive ``redrives`` still owns the raw file (0: first run, or never set)."""
    values: list[int | None] = [redrives, None] if redrives == 0 else [redrives]
    return {"redrive_count__in": values}


def record_failure(
    raw_file_id: str,
    *,
    step: str,
    reason: str,
    transient: bool,
    redrives: int | None = None,
    at: datetime | None = None,
) -> bool:
    """Record a failed handler step on the raw file: ``status=error``, ``"<step>: <reason>"``, time, kind.

    ``redrives``: the re-drive the failed run belongs to; a run that a later
    re-drive has replaced records nothing (its raw file has moved on). A raw
    file moved off the share (or purged) is never marked. Returns whether it
    was recorded.
    """
    expected: dict[str, Any] = {"status__nin": list(_SETTLED_STATUSES)}
    if redrives is not None:
        expected |= attempt_expectation(redrives)
    details = f"{step}: {reason}"
    recorded = update_raw_file(
        raw_file_id,
        expected=expected,
        status=RawFileStatus.ERROR.value,
        status_details=details[:MAX_REASON_CHARS],
        error_step=step,
        error_at=at or utc_now(),
        error_transient=transient,
    )
    if not recorded:
        log.warning(
            "%s: the failure of %s was not recorded: the raw file was moved, purged or re-driven since (%s)",
            raw_file_id,
            step,
            reason[:200],
        )
    return recorded
