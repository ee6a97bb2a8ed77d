"""Task callable of the ``backup_verifier`` DAG: audit a sample of the S3 backups and scrub within the budget.

Fails (red) on drift, listing it. Scrubbing (``backup.scrub``) re-reads at most
``budget_gb_per_run`` per run, least recently scrubbed raw files first, and
skips raw files re-read more recently than ``period_days`` minus one run
interval, so every object is re-read within the period while the budget
suffices (the run says when it does not).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from rawvault.impl.fail_fast import fail_fast
from shared.settings import get_settings
from shared.settings.scrub import SCRUB_RUN_INTERVAL_DAYS

if TYPE_CHECKING:
    from rawvault.audit import AuditSelection

log = logging.getLogger(__name__)

VERIFIER_SCHEDULE = "@weekly"
VERIFIER_INTERVAL = timedelta(days=SCRUB_RUN_INTERVAL_DAYS)  # the schedule above, for the scrub's period
# Raw files checked per run, chosen at random (0: all). A head_object per file costs little, but a
# facility has many thousands of raw files; a weekly sample catches systematic loss without listing all.
VERIFIER_SAMPLE = 200
MAX_ITEMS_IN_MESSAGE = 50


def failure_message(report: Any, max_items: int = MAX_ITEMS_IN_MESSAGE, *, notes: tuple[str, ...] = ()) -> str:
    """The failure reason: the summary and the first ``max_items`` drift items, one per line."""
    lines = [report.summary() + ":"]
    lines += [f"  {item.line()}" for item in report.drift[:max_items]]
    if len(report.drift) > max_items:
        lines.append(f"  ... and {len(report.drift) - max_items} more (see the task log for the full table)")
    lines += [f"  {note}" for note in notes]
    if report.drift:
        lines.append(
            "Find out what happened to these objects (versioned buckets keep older versions), then upload the raw "
            "files again (clear upload_to_s3 of their acquisition_handler run) or restore them from the local backup"
        )
    return "\n".join(lines)


def _scrub(client: Any, settings: Any, selection: AuditSelection, params: dict[str, Any]) -> tuple[Any, int]:
    """The scrub of this run and how many raw files are behind the period (``None``: no scrub in this run).

    The budget chooses the least recently scrubbed raw files among ``selection``'s filters (not its sample).
    """
    from rawvault.scrub import ScrubBudget, scrub_backups
    from shared.db.models import utc_now
    from shared.db.scrub import count_not_scrubbed_since

    scrub = settings.backup.scrub
    if not scrub.enabled or params.get("scrub") is False:
        return None, 0
    now = utc_now()
    period = timedelta(days=scrub.period_days)
    report = scrub_backups(
        client, settings, selection,
        budget=ScrubBudget(scrub.budget_bytes, due_before=now - period + VERIFIER_INTERVAL), now=now,
    )  # fmt: skip
    behind = count_not_scrubbed_since(now - period)
    if behind:
        log.warning(
            "%d upload_done raw file(s) were not re-read within backup.scrub.period_days (%g days): at %g GB per "
            "run the scrub cannot keep up (after a first deployment it catches up run by run); raise "
            "backup.scrub.budget_gb_per_run if this number does not fall",
            behind, scrub.period_days, scrub.budget_gb_per_run,
        )  # fmt: skip
    return report, behind


@fail_fast  # credentials or permissions (S3PermanentError): a retry cannot help
def verify_backups(**context: Any) -> dict[str, Any]:
    """Check a random sample of the upload_done raw files against S3 and scrub (DAG params: sample, scrub, ...)."""
    from rawvault.audit import AuditSelection
    from rawvault.audit import verify_backups as verify
    from rawvault.s3.client import s3_client_for

    params = context.get("params") or {}
    settings = get_settings()
    s3 = settings.backup.s3
    if not settings.s3_enabled or s3 is None:
        raise AirflowFailException("backup.backup_type is not 's3': there are no S3 backups to verify")
    sample = params.get("sample", VERIFIER_SAMPLE)
    client = s3_client_for(s3)
    selection = AuditSelection(
        instrument=params.get("instrument") or None, project=params.get("project") or None,
        sample=int(sample) if sample is not None else None, fallback_project_id=settings.watcher.fallback_project_id,
    )  # fmt: skip
    report = verify(client, selection, object_lock=s3.object_lock)
    log.info("%s", report.table())
    scrubbed, behind = _scrub(client, settings, selection, params)
    if scrubbed is not None:
        log.info("scrub: %s", scrubbed.table())
    problems = [failure_message(report)] if not report.ok else []
    if scrubbed is not None and (scrubbed.drift or scrubbed.notes):
        problems.append("scrub: " + failure_message(scrubbed, notes=tuple(scrubbed.notes)))
    if problems:
        raise AirflowFailException("\n".join(problems))
    result = {
        "raw_files_checked": len(report.raw_file_ids),
        "raw_files_matched": report.matched,
        "objects_checked": report.objects_checked,
    }
    if scrubbed is not None:
        result.update(
            raw_files_scrubbed=len(scrubbed.raw_file_ids),
            scrub_bytes_read_s3=scrubbed.bytes_read_s3,
            scrub_bytes_read_local=scrubbed.bytes_read_local,
            not_scrubbed_within_period=behind,
        )
    return result
