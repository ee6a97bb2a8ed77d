"""Task callable of the ``backup_verifier`` DAG: audit a sample of the S3 backups, fail (red) on drift."""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from rawvault.impl.fail_fast import fail_fast
from shared.settings import get_settings

log = logging.getLogger(__name__)

VERIFIER_SCHEDULE = "@weekly"
# Raw files checked per run, chosen at random (0: all). A head_object per file costs little, but a
# facility has many thousands of raw files; a weekly sample catches systematic loss without listing all.
VERIFIER_SAMPLE = 200
MAX_ITEMS_IN_MESSAGE = 50


def failure_message(report: Any, max_items: int = MAX_ITEMS_IN_MESSAGE) -> str:
    """The failure reason: the summary and the first ``max_items`` drift items, one per line."""
    lines = [report.summary() + ":"]
    lines += [f"  {item.line()}" for item in report.drift[:max_items]]
    if len(report.drift) > max_items:
        lines.append(f"  ... and {len(report.drift) - max_items} more (see the task log for the full table)")
    lines.append(
        "Find out what happened to these objects (versioned buckets keep older versions), then upload the raw "
        "files again (clear upload_to_s3 of their acquisition_handler run) or restore them from the local backup"
    )
    return "\n".join(lines)


@fail_fast  # credentials or permissions (S3PermanentError): a retry cannot help
def verify_backups(**context: Any) -> dict[str, Any]:
    """Check a random sample of the upload_done raw files against S3 (DAG params: sample, instrument, project)."""
    from rawvault.audit import verify_backups as verify
    from rawvault.s3.client import s3_client_for

    params = context.get("params") or {}
    settings = get_settings()
    s3 = settings.backup.s3
    if not settings.s3_enabled or s3 is None:
        raise AirflowFailException("backup.backup_type is not 's3': there are no S3 backups to verify")
    sample = params.get("sample", VERIFIER_SAMPLE)
    client = s3_client_for(s3)
    report = verify(
        client,
        instrument=params.get("instrument") or None,
        project=params.get("project") or None,
        sample=int(sample) if sample is not None else None,
        fallback_project_id=settings.watcher.fallback_project_id,
    )
    log.info("%s", report.table())
    if not report.ok:
        raise AirflowFailException(failure_message(report))
    return {
        "raw_files_checked": len(report.raw_file_ids),
        "raw_files_matched": report.matched,
        "objects_checked": report.objects_checked,
    }
