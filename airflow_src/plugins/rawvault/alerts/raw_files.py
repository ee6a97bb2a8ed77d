"""THE rules that turn a raw file's state into an alert state, and the link to the task log that failed.

:func:`raw_file_alert_state` tries :data:`RAW_FILE_RULES` in order (most
urgent first); the first that matches gives the subject's bad state. A new
state (e.g. a re-drive that gave up) is one rule function and one line in
that tuple. No rule matching: the raw file is healthy when its backup is
verified (:func:`protected_statuses`), otherwise it is on its way and the
ledger keeps what it last announced (a retry running neither re-alerts nor
counts as a recovery).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from urllib.parse import quote

from rawvault import keys
from rawvault.alerts.model import Health, Kind, Observation, unknown
from rawvault.claim import GAVE_UP_MARK
from rawvault.keys import run_id_for
from rawvault.purge_errors import check_of
from rawvault.redrive import GAVE_UP_MARK as REDRIVE_GAVE_UP_MARK
from shared.db.models import BackupStatus, RawFile, RawFileStatus, ScrubStatus
from shared.db.predicates import PURGED_STATUS, is_unprotected, protected_statuses

SUBJECT_PREFIX = "raw_file:"
PURGED = PURGED_STATUS  # RawFile.status of a raw file deleted from the share after a re-checked backup
# backup_sweeper releases an upload whose claim lease expired at its next sweep; still held this long after
# the lease ran out, nobody is releasing it (the sweeper is not running).
STUCK_GRACE = timedelta(hours=1)
MAX_REASON_CHARS = 1500
HANDLER_DAG = keys.handler_dag_id
FILE_MOVER_DAG = keys.file_mover_dag_id
# Step named in status_details ("<step>: <reason>") -> the DAG (id of an instrument) and task that ran it.
STEP_TASKS = {
    keys.MONITOR_ACQUISITION_TASK: (HANDLER_DAG, keys.MONITOR_ACQUISITION_TASK),
    keys.COMPUTE_CHECKSUM_TASK: (HANDLER_DAG, keys.COMPUTE_CHECKSUM_TASK),
    keys.COPY_RAW_FILE_TASK: (HANDLER_DAG, keys.COPY_RAW_FILE_TASK),
    keys.UPLOAD_TO_S3_TASK: (HANDLER_DAG, keys.UPLOAD_TO_S3_TASK),
    keys.START_FILE_MOVER_TASK: (HANDLER_DAG, keys.START_FILE_MOVER_TASK),
    "file mover": (FILE_MOVER_DAG, keys.MOVE_RAW_FILE_TASK),
    keys.MOVE_RAW_FILE_TASK: (FILE_MOVER_DAG, keys.MOVE_RAW_FILE_TASK),
}
_STEP_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_ ]{2,40}):\s+(.*)$", re.DOTALL)  # "<step>: <reason>"


@dataclass(frozen=True)
class RuleContext:
    """What the rules need besides the raw file."""

    now: datetime
    deadline: timedelta
    s3: bool
    ui_base_url: str | None = None
    max_upload_attempts: int | None = None


def subject_of(raw_file_id: str) -> str:
    """The ledger subject of a raw file."""
    return f"{SUBJECT_PREFIX}{raw_file_id}"


def dag_url(base_url: str | None, dag_id: str) -> str | None:
    """The Airflow UI page of a DAG (its runs); None without the UI's address."""
    return f"{base_url.rstrip('/')}/dags/{quote(dag_id, safe='')}" if base_url else None


def task_log_url(base_url: str | None, dag_id: str, run_id: str, task_id: str | None = None) -> str | None:
    """The Airflow UI page of a task of a DAG run (its log), or of the run without ``task_id``."""
    url = dag_url(base_url, dag_id)
    if url is None:
        return None
    url = f"{url}/runs/{quote(run_id, safe='')}"
    return f"{url}/tasks/{quote(task_id, safe='')}" if task_id else url


def split_step(details: str | None) -> tuple[str, str]:
    """``("compute_checksum", "reason")`` from ``"compute_checksum: reason"``; no step: ``("", details)``."""
    text = (details or "").strip()
    match = _STEP_RE.match(text)
    return (match.group(1).strip(), match.group(2).strip()) if match else ("", text)


def _link(raw_file: RawFile, step: str, ctx: RuleContext) -> str | None:
    dag, task = STEP_TASKS.get(step, (HANDLER_DAG, None))
    # A re-driven handler's latest run is "...__redrive<N>"; the file mover is started once, under run_id_for.
    run_id = keys.handler_run_id(raw_file.id, raw_file.redrive_count or 0) if dag is HANDLER_DAG else None
    return task_log_url(ctx.ui_base_url, dag(raw_file.instrument_id), run_id or run_id_for(raw_file.id), task)


def _reason(text: str | None) -> str:
    text = (text or "").strip() or "(no reason recorded)"
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


def _details(raw_file: RawFile, *pairs: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    created = raw_file.created_at
    base = (
        ("raw file", raw_file.id),
        ("instrument", raw_file.instrument_id or "?"),
        ("project", raw_file.project_id or "-"),
        ("acquired", f"{created:%Y-%m-%d %H:%M} UTC" if created else "?"),
    )
    return base + tuple(pairs)


def _named(raw_file: RawFile) -> str:
    """How every message names a raw file."""
    return f"{raw_file.id} ({raw_file.instrument_id})"


def _bad(
    raw_file: RawFile,
    kind: Kind,
    state: str,
    title: str,
    facts: tuple[tuple[str, str], ...],
    link: str | None,
    hint: str,
) -> Observation:
    """A bad state of ``raw_file``: its details are the raw file's identity, then ``facts``."""
    return Observation(
        subject_of(raw_file.id),
        Health.BAD,
        state=state,
        kind=kind,
        title=title,
        details=_details(raw_file, *facts),
        link=link,
        hint=hint,
    )


def _failed(raw_file: RawFile, ctx: RuleContext, state: str, step: str, reason: str, hint: str) -> Observation:
    title = f"Backup failed: {_named(raw_file)} at {step or 'an unknown step'}"
    facts = (("step", step or "?"), ("reason", _reason(reason)))
    return _bad(raw_file, Kind.FAILED_BACKUP, state, title, facts, _link(raw_file, step, ctx), hint)


def redrive_gave_up(raw_file: RawFile, ctx: RuleContext) -> Observation | None:
    """status=error and acquisition_redrive stopped starting its handler again ("gave up after N re-drives")."""
    if raw_file.status != RawFileStatus.ERROR.value:
        return None
    step, reason = split_step(raw_file.status_details)
    if not reason.startswith(REDRIVE_GAVE_UP_MARK):
        return None
    task = STEP_TASKS.get(step, (None, step or "the red task"))[1]
    observation = _failed(
        raw_file,
        ctx,
        f"redrive_gave_up:{step or 'unknown'}",
        step,
        reason,
        f"acquisition_redrive no longer starts it again: fix the cause, then clear {task} of this run.",
    )
    return replace(observation, title=f"Re-drives given up: {_named(raw_file)} at {step or '?'}")


def pipeline_error(raw_file: RawFile, ctx: RuleContext) -> Observation | None:
    """status=error: a pipeline step failed (step and reason from status_details)."""
    if raw_file.status != RawFileStatus.ERROR.value:
        return None
    step, reason = split_step(raw_file.status_details)
    task = STEP_TASKS.get(step, (None, step or "the red task"))[1]
    hint = f"Fix the cause named in the reason, then clear {task} of this run in the Airflow UI."
    if raw_file.error_transient:
        hint = (
            f"The cause may go away by itself: acquisition_redrive starts the handler again with backoff "
            f"(re-drives so far: {raw_file.redrive_count or 0}); a recovery message follows once it is backed up. "
            + hint
        )
    return _failed(raw_file, ctx, f"pipeline_error:{step or 'unknown'}", step, reason, hint)


def copying_failed(raw_file: RawFile, ctx: RuleContext) -> Observation | None:
    """The verified local copy failed."""
    if raw_file.backup_status != BackupStatus.COPYING_FAILED.value:
        return None
    hint = "Fix the cause named in the reason, then clear copy_raw_file of this run in the Airflow UI."
    return _failed(raw_file, ctx, "copying_failed", "copy_raw_file", raw_file.backup_status_details, hint)


def _attempts(raw_file: RawFile, ctx: RuleContext) -> str:
    attempts = raw_file.s3_upload_attempts or 0
    return f"{attempts} of {ctx.max_upload_attempts}" if ctx.max_upload_attempts else str(attempts)


def upload_gave_up(raw_file: RawFile, ctx: RuleContext) -> Observation | None:
    """upload_failed and backup_sweeper stopped retrying (its "gave up after" mark in the details)."""
    details = raw_file.backup_status_details or ""
    if not ctx.s3 or raw_file.backup_status != BackupStatus.UPLOAD_FAILED.value or GAVE_UP_MARK not in details:
        return None
    title = f"S3 upload given up: {_named(raw_file)} after {_attempts(raw_file, ctx)} attempts"
    hint = "backup_sweeper no longer retries it: fix the cause, then clear upload_to_s3 of this run."
    facts = (("step", "upload_to_s3"), ("reason", _reason(details)))
    link = _link(raw_file, "upload_to_s3", ctx)
    return _bad(raw_file, Kind.STUCK_UPLOAD, "upload_gave_up", title, facts, link, hint)


def upload_failed(raw_file: RawFile, ctx: RuleContext) -> Observation | None:
    """upload_failed: the S3 upload failed; backup_sweeper retries it with backoff."""
    if not ctx.s3 or raw_file.backup_status != BackupStatus.UPLOAD_FAILED.value:
        return None
    hint = (
        f"backup_sweeper retries it with backoff (attempts so far: {_attempts(raw_file, ctx)}); a recovery message "
        "follows when it succeeds. If the reason is not transient, fix it and clear upload_to_s3 of this run."
    )
    return _failed(raw_file, ctx, "upload_failed", "upload_to_s3", raw_file.backup_status_details, hint)


def upload_stuck(raw_file: RawFile, ctx: RuleContext) -> Observation | None:
    """upload_in_progress whose claim lease ran out more than STUCK_GRACE ago: nobody released it."""
    expires = raw_file.upload_claim_expires_at
    if not ctx.s3 or raw_file.backup_status != BackupStatus.UPLOAD_IN_PROGRESS.value or expires is None:
        return None
    if expires > ctx.now - STUCK_GRACE:
        return None
    facts = (("claimed by", raw_file.upload_claim_owner or "?"), ("claim expired", f"{expires:%Y-%m-%d %H:%M} UTC"))
    hint = (
        "Its upload stopped renewing its claim and backup_sweeper has not released it since: check that "
        "backup_sweeper runs and that the s3_uploader worker is up."
    )
    link = _link(raw_file, "upload_to_s3", ctx)
    return _bad(raw_file, Kind.STUCK_UPLOAD, "upload_stuck", f"S3 upload stuck: {_named(raw_file)}", facts, link, hint)


def deadline_breached(raw_file: RawFile, ctx: RuleContext) -> Observation | None:
    """Acquired longer ago than backup.deadline_hours without a verified backup (the rule of shared.db.predicates)."""
    if not is_unprotected(raw_file, s3=ctx.s3, overdue_before=ctx.now - ctx.deadline):
        return None
    created = raw_file.created_at
    hours = (ctx.now - created).total_seconds() / 3600
    what = "verified S3 copy" if ctx.s3 else "verified local backup"
    facts = (
        ("status", raw_file.status or "-"),
        ("backup status", raw_file.backup_status or "none yet"),
        ("deadline", f"{ctx.deadline.total_seconds() / 3600:g} h (backup.deadline_hours)"),
    )
    title = f"No {what} after {hours:.0f} h: {_named(raw_file)}"
    hint = "Open its acquisition_handler run to see where it waits."
    return _bad(raw_file, Kind.DEADLINE, "deadline", title, facts, _link(raw_file, "", ctx), hint)


def purge_blocked(raw_file: RawFile, ctx: RuleContext) -> Observation | None:
    """A moved set the purge keeps because a check failed (purge_blocked_reason: "<check>: <reason>")."""
    reason = raw_file.purge_blocked_reason
    if not reason or raw_file.status != RawFileStatus.MOVED.value:
        return None
    check = check_of(reason) or "unknown"
    dag_id = keys.file_remover_dag_id(raw_file.instrument_id)
    title = f"Purge held back: {_named(raw_file)}: the {check} check failed"
    hint = (
        f"{dag_id} keeps this set on the share until every check passes again. Fix what the reason names "
        "(a damaged local or S3 copy: back the raw file up again; a changed or extra file on the share: find out "
        "who wrote it); the next run checks again."
    )
    # One message per failing check, not per run that finds it again.
    state = f"purge_blocked:{check}"
    facts = (("check", check), ("reason", _reason(reason)))
    return _bad(raw_file, Kind.FAILED_BACKUP, state, title, facts, dag_url(ctx.ui_base_url, dag_id), hint)


def scrub_drift(raw_file: RawFile, ctx: RuleContext) -> Observation | None:
    """Its last scrub re-read the data in S3 and the local backup and found something missing or different."""
    if raw_file.scrub_status != ScrubStatus.DRIFT.value:
        return None
    scrubbed = raw_file.scrubbed_at
    facts = (
        ("scrubbed", f"{scrubbed:%Y-%m-%d %H:%M} UTC" if scrubbed else "?"),
        ("found", _reason(raw_file.scrub_details)),
    )
    title = f"Stored data differs: {_named(raw_file)} failed its scrub"
    hint = (
        "One copy no longer holds the recorded data. Keep the good copy: restore from S3 "
        "(scripts/rawvault.sh restore) or from the local backup, then replace the damaged one; "
        f"scripts/rawvault.sh verify --read-data --raw-file-id {raw_file.id} re-checks it (a clean result "
        "sends a recovery)."
    )
    link = dag_url(ctx.ui_base_url, keys.VERIFIER_DAG_ID)
    return _bad(raw_file, Kind.DATA_DRIFT, "scrub_drift", title, facts, link, hint)


Rule = Callable[[RawFile, RuleContext], "Observation | None"]
# Most urgent first: the first rule that matches names the raw file's state.
RAW_FILE_RULES: tuple[Rule, ...] = (
    scrub_drift,
    redrive_gave_up,
    pipeline_error,
    copying_failed,
    upload_gave_up,
    upload_failed,
    upload_stuck,
    deadline_breached,
    purge_blocked,
)


def raw_file_alert_state(raw_file: RawFile, ctx: RuleContext) -> Observation:
    """The alert state of one raw file: bad (which), healthy (verified backup), or unknown (on its way)."""
    for rule in RAW_FILE_RULES:
        observation = rule(raw_file, ctx)
        if observation is not None:
            return observation
    if raw_file.backup_status in protected_statuses(ctx.s3) or raw_file.status == PURGED:
        what = "a verified S3 copy" if ctx.s3 else "a verified local backup"
        return Observation(
            subject_of(raw_file.id),
            Health.HEALTHY,
            title=f"{_named(raw_file)} now has {what} (backup status {raw_file.backup_status}).",
            details=_details(raw_file),
        )
    return unknown(subject_of(raw_file.id))


def gone(raw_file_id: str) -> Observation:
    """A raw file the ledger holds a bad state for, no longer in the database: nothing left to alert on."""
    return Observation(
        subject_of(raw_file_id),
        Health.HEALTHY,
        title=f"{raw_file_id} is no longer in the database (collection raw_file).",
    )
