"""acquisition_redrive's rules: start an acquisition handler again, without a person, when that can help.

:func:`plan_redrives` runs on ``acquisition.redrive_schedule`` (the DAG
``acquisition_redrive``, maintenance queue, one run at a time) over the raw
files whose handler has not finished (:func:`shared.db.redrive_queries.handler_unfinished`):

- **Failed for a transient cause** (``status=error``, ``error_transient``,
  recorded by :func:`rawvault.failures.record_failure`): re-driven once its
  backoff has passed since ``error_at`` (``acquisition.redrive_delay_minutes
  x 2^re-drives``, at most :data:`rawvault.keys.MAX_REDRIVE_DELAY`) and its
  current handler run is no longer queued or running. A permanent cause is
  never re-driven and stays visible.
- **Handler run missing**: the raw file has not changed for
  :func:`missing_run_grace` and its current handler run does not exist (the
  watcher's trigger was lost, the run was deleted): re-driven. A ``queued``
  raw file waits while its instrument watcher still has a trigger to run (a
  busy instrument queue delays it): the watcher starts it under its current
  run id, and a re-drive now would start a second run beside it.
- **Handler run ended without recording**: the run is over (failed, or
  marked by hand) while the raw file still says ``queued``, monitoring,
  checksumming or copying: the task was killed without a callback, or
  MongoDB was down when it failed. The failure is recorded now (transient)
  and re-driven after its backoff like any other.

Whether a run exists or is still active comes from Airflow through the
:class:`AirflowView` the task passes in (the Task SDK's DAG run queries;
a task may not read the metadata database itself). A re-drive is a
compare-and-set on ``redrive_count`` (and the status and update time read),
so two sweeps never start the same raw file twice; it sets ``status=queued``
and gets the run id ``keys.handler_run_id(id, N)`` (``__redrive<N>``). After
``acquisition.max_redrives`` the raw file stays ``error`` with "gave up after
N re-drives" in ``status_details`` (an alert of its own) until a person acts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from croniter import croniter

from rawvault import keys
from rawvault.failures import MAX_REASON_CHARS, attempt_expectation, record_failure
from rawvault.sweeper import capped_backoff
from shared.db.interface import update_raw_file, utc_now
from shared.db.models import BackupStatus, RawFile, RawFileStatus
from shared.db.redrive_queries import handler_unfinished
from shared.settings import Settings

log = logging.getLogger(__name__)

# (DAG id, run id) -> the run's state ("queued", "running", "success", "failed"), None when there is no such run.
RunState = Callable[[str, str], "str | None"]
# instrument id -> whether its instrument_watcher still has start_acquisition_handler triggers to run.
TriggersPending = Callable[[str], bool]
ALIVE_RUN_STATES = frozenset({"queued", "running"})
GAVE_UP_MARK = "gave up after"  # in status_details: the alert rule redrive_gave_up looks for it
MAX_REDRIVES_PER_SWEEP = 200
# The step a raw file waits in (by its status) when its handler run was lost: the task a person would clear.
STEP_OF_STATUS = {
    RawFileStatus.QUEUED.value: keys.MONITOR_ACQUISITION_TASK,
    RawFileStatus.MONITORING_ACQUISITION.value: keys.MONITOR_ACQUISITION_TASK,
    RawFileStatus.MONITORING_DONE.value: keys.COMPUTE_CHECKSUM_TASK,
    RawFileStatus.CHECKSUMMING.value: keys.COMPUTE_CHECKSUM_TASK,
    RawFileStatus.CHECKSUMMING_DONE.value: keys.COPY_RAW_FILE_TASK,
}
_COPY_NOT_DONE = (None, BackupStatus.COPYING_IN_PROGRESS.value, BackupStatus.COPYING_FAILED.value)


def _no_triggers_pending(_instrument_id: str) -> bool:
    return False


@dataclass(frozen=True)
class AirflowView:
    """What Airflow says about handler and watcher runs, through the Task SDK (a task may not read its database)."""

    run_state: RunState
    triggers_pending: TriggersPending = _no_triggers_pending


@dataclass(frozen=True)
class Redrive:
    """One acquisition handler run to trigger now: re-drive ``attempt`` of a raw file."""

    raw_file_id: str
    instrument_id: str
    attempt: int
    why: str

    @property
    def dag_id(self) -> str:
        return keys.handler_dag_id(self.instrument_id)

    @property
    def run_id(self) -> str:
        return keys.handler_run_id(self.raw_file_id, self.attempt)


@dataclass
class RedriveReport:
    """What one sweep of acquisition_redrive found."""

    redrives: list[Redrive] = field(default_factory=list)
    recorded: list[str] = field(default_factory=list)  # handler runs ended without recording: recorded now
    waiting: dict[str, datetime] = field(default_factory=dict)  # raw file id -> when its re-drive is due
    running: list[str] = field(default_factory=list)  # failed, but its handler run is still active
    permanent: list[str] = field(default_factory=list)
    gave_up: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # Airflow could not say whether its run exists


@dataclass(frozen=True)
class RedrivePolicy:
    """The bounds of one sweep, worked out from the settings."""

    max_redrives: int
    base_minutes: float
    missing_grace: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> RedrivePolicy:
        acquisition = settings.acquisition
        return cls(acquisition.max_redrives, acquisition.redrive_delay_minutes, missing_run_grace(settings))

    def backoff(self, redrives: int) -> timedelta:
        """The wait after a failure before re-drive ``redrives + 1``."""
        return capped_backoff(redrives, self.base_minutes, keys.MAX_REDRIVE_DELAY)


def watcher_period(schedule: str) -> timedelta:
    """Time between two runs of a cron schedule (one hour if croniter cannot tell, e.g. ``@quarterly``)."""
    try:
        times = croniter(schedule, datetime(2026, 1, 1, tzinfo=UTC))
        first = times.get_next(datetime)
        return times.get_next(datetime) - first
    except Exception:  # croniter raises several types for what it cannot iterate
        return timedelta(hours=1)


def missing_run_grace(settings: Settings) -> timedelta:
    """How long a raw file may sit unchanged without a handler run before it counts as lost.

    Long enough for the watcher to trigger it (twice its schedule: a failed
    trigger is repeated by its next run) and for 15 monitor pokes; at least a
    minute, at most an hour (a watcher that runs once a day re-triggers too late).
    """
    wanted = max(
        timedelta(seconds=15 * settings.acquisition.poke_interval_seconds),
        2 * watcher_period(settings.watcher.schedule),
        timedelta(minutes=1),
    )
    return min(wanted, timedelta(hours=1))


def handler_open(raw_file: RawFile) -> bool:
    """Whether the handler has not finished with a raw file: in a pipeline status before its verified copy."""
    if raw_file.status == RawFileStatus.CHECKSUMMING_DONE.value:
        return raw_file.backup_status in _COPY_NOT_DONE
    return raw_file.status in STEP_OF_STATUS


class _Sweep:
    """One pass over the unfinished raw files (keeps each rule in a method of its own)."""

    def __init__(self, settings: Settings, now: datetime, airflow: AirflowView) -> None:
        self.settings = settings
        self.policy = RedrivePolicy.from_settings(settings)
        self.now = now
        self.airflow = airflow
        self._pending: dict[str, bool] = {}  # per instrument, asked once per sweep
        self.report = RedriveReport()

    def watcher_will_trigger(self, raw_file: RawFile) -> bool:
        """Whether the raw file is queued and its watcher still has triggers to run (asked once per instrument)."""
        if raw_file.status != RawFileStatus.QUEUED.value:
            return False  # the watcher starts queued raw files only
        instrument_id = raw_file.instrument_id
        if instrument_id not in self._pending:
            try:
                self._pending[instrument_id] = self.airflow.triggers_pending(instrument_id)
            except Exception as error:  # the API server is down: assume they are, decide at the next sweep
                log.warning(
                    "cannot tell whether %s has triggers pending: %s", keys.watcher_dag_id(instrument_id), error
                )
                self._pending[instrument_id] = True
        return self._pending[instrument_id]

    def state_of(self, raw_file: RawFile) -> tuple[bool, str | None]:
        """(known, state) of the raw file's current handler run."""
        run_id = keys.handler_run_id(raw_file.id, raw_file.redrive_count or 0)
        try:
            return True, self.airflow.run_state(keys.handler_dag_id(raw_file.instrument_id), run_id)
        except Exception as error:  # the API server is down: decide at the next sweep
            log.warning("%s: cannot read the state of handler run %s: %s", raw_file.id, run_id, error)
            self.report.unknown.append(raw_file.id)
            return False, None

    def failed(self, raw_file: RawFile) -> None:
        """status=error: re-drive a transient failure once due, never a permanent one."""
        if raw_file.error_step not in keys.HANDLER_PIPELINE_TASKS or raw_file.error_transient is None:
            return  # not a handler step's recorded failure (the file mover, or written by hand): a person's
        if not raw_file.error_transient:
            self.report.permanent.append(raw_file.id)
            return
        redrives = raw_file.redrive_count or 0
        if redrives >= self.policy.max_redrives:
            self.give_up_failed(raw_file, redrives)
            return
        due = (raw_file.error_at or raw_file.db_updated_at or self.now) + self.policy.backoff(redrives)
        if due > self.now:
            self.report.waiting[raw_file.id] = due
            return
        known, state = self.state_of(raw_file)
        if not known:
            return
        if state in ALIVE_RUN_STATES:  # another task of its run still works (e.g. the upload beside the mover)
            self.report.running.append(raw_file.id)
            return
        self.claim(raw_file, redrives, raw_file.status_details or raw_file.error_step)

    def unfinished(self, raw_file: RawFile) -> None:
        """An open pipeline status: fine while its run is active; a lost run is re-driven, an ended one recorded."""
        last = raw_file.db_updated_at or raw_file.redriven_at or raw_file.created_at
        if last is not None and self.now - last < self.policy.missing_grace:
            return  # changed recently: its run is making progress (or about to be triggered)
        known, state = self.state_of(raw_file)
        if not known or state in ALIVE_RUN_STATES:
            return
        redrives = raw_file.redrive_count or 0
        run_id = keys.handler_run_id(raw_file.id, redrives)
        step = STEP_OF_STATUS.get(raw_file.status or "", keys.COPY_RAW_FILE_TASK)
        if state is not None:
            reason = (
                f"its acquisition_handler run {run_id} ended {state} while the raw file was still {raw_file.status} "
                "(the task was killed without a callback, or MongoDB was unreachable when it failed)"
            )
            if record_failure(raw_file.id, step=step, reason=reason, transient=True, redrives=redrives, at=self.now):
                self.report.recorded.append(raw_file.id)
            return
        if self.watcher_will_trigger(raw_file):
            self.report.waiting[raw_file.id] = self.now + self.policy.missing_grace
            return
        why = f"{step}: its acquisition_handler run {run_id} does not exist (the trigger was lost)"
        if redrives >= self.policy.max_redrives:
            self.report.gave_up.append(raw_file.id)
            reason = f"{GAVE_UP_MARK} {redrives} re-drives: its handler run {run_id} does not exist"
            record_failure(raw_file.id, step=step, reason=reason, transient=True, redrives=redrives, at=self.now)
            return
        # A re-drive whose run never appeared (its trigger failed too) waits its backoff like a failure.
        due = raw_file.redriven_at + self.policy.backoff(redrives - 1) if raw_file.redriven_at else self.now
        if due > self.now:
            self.report.waiting[raw_file.id] = due
            return
        self.claim(raw_file, redrives, why)

    def give_up_failed(self, raw_file: RawFile, redrives: int) -> None:
        """Say once in status_details that the re-drives gave up (the failure itself stays as recorded)."""
        self.report.gave_up.append(raw_file.id)
        details = raw_file.status_details or ""
        if GAVE_UP_MARK in details:
            return
        step = raw_file.error_step or ""
        reason = details.removeprefix(f"{step}: ")
        text = f"{step}: {GAVE_UP_MARK} {redrives} re-drives; clear {step} to retry by hand. Last error: {reason}"
        unchanged = {"status": RawFileStatus.ERROR.value, "error_at": raw_file.error_at}
        expected = unchanged | attempt_expectation(redrives)
        update_raw_file(raw_file.id, expected=expected, status_details=text[:MAX_REASON_CHARS])

    def claim(self, raw_file: RawFile, redrives: int, why: str) -> None:
        """Compare-and-set the next re-drive on the raw file; only the sweep that wins it triggers the run."""
        attempt = redrives + 1
        details = f"re-driven by {keys.REDRIVE_DAG_ID} ({attempt} of {self.policy.max_redrives}) after {why}"
        won = update_raw_file(
            raw_file.id,
            expected={
                **attempt_expectation(redrives),
                "status": raw_file.status,
                "db_updated_at": raw_file.db_updated_at,
            },
            status=RawFileStatus.QUEUED.value,
            status_details=details[:MAX_REASON_CHARS],
            redrive_count=attempt,
            redriven_at=self.now,
        )
        if won:
            self.report.redrives.append(Redrive(raw_file.id, raw_file.instrument_id, attempt, why))
        else:
            log.info("%s: changed while this sweep looked at it: left to the next sweep", raw_file.id)


def plan_redrives(settings: Settings, airflow: AirflowView, now: datetime | None = None) -> RedriveReport:
    """Decide and claim the re-drives of one sweep (see the module docstring); the caller triggers the runs."""
    sweep = _Sweep(settings, now or utc_now(), airflow)
    for raw_file in handler_unfinished():
        if len(sweep.report.redrives) >= MAX_REDRIVES_PER_SWEEP:
            break  # the next sweep takes the rest
        if raw_file.instrument_id not in settings.instruments:
            continue  # an instrument no longer configured has no handler DAG to start
        if raw_file.status == RawFileStatus.ERROR.value:
            sweep.failed(raw_file)
        elif handler_open(raw_file):
            sweep.unfinished(raw_file)
    return sweep.report


def log_report(report: RedriveReport, settings: Settings) -> None:
    """One log line per kind of finding (the task log of acquisition_redrive)."""
    if report.recorded:
        log.warning("handler runs ended without recording a failure, recorded now: %s", ", ".join(report.recorded))
    if report.gave_up:
        log.error(
            "%d raw file(s) failed again after %d re-drives; gave up (clear the failed task to retry by hand): %s",
            len(report.gave_up),
            settings.acquisition.max_redrives,
            ", ".join(report.gave_up),
        )
    if report.permanent:
        log.info("%d raw file(s) failed for a permanent cause (not re-driven)", len(report.permanent))
    if report.waiting:
        log.info(
            "%d re-drive(s) wait for their backoff, next at %s",
            len(report.waiting),
            min(report.waiting.values()).isoformat(timespec="seconds"),
        )
    for redrive in report.redrives:
        log.warning("%s: starting %s run %s (%s)", redrive.raw_file_id, redrive.dag_id, redrive.run_id, redrive.why)
    log.info("re-driving %d acquisition handler(s)", len(report.redrives))
