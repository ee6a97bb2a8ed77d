"""Task callable of ``file_remover.<instrument>``: one purge run (:mod:`rawvault.purge`)."""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from rawvault.impl.fail_fast import fail_fast
from rawvault.purge_report import PurgeReport
from shared.settings import get_settings

log = logging.getLogger(__name__)

MAX_SETS_IN_MESSAGE = 20


def failure_message(report: PurgeReport, max_sets: int = MAX_SETS_IN_MESSAGE) -> str:
    """Why the run is red: the summary and each set held back by a failed check."""
    lines = [report.summary() + ":"]
    lines += [f"  {outcome.raw_file_id}: {outcome.reason}" for outcome in report.held_back[:max_sets]]
    if len(report.held_back) > max_sets:
        lines.append(f"  ... and {len(report.held_back) - max_sets} more (see the task log for the table)")
    lines.append("Each reason is also on the raw file (purge_blocked_reason); fix the cause, the next run checks again")
    return "\n".join(lines)


@fail_fast
def purge_backed_up_sets(instrument_id: str, **context: Any) -> dict[str, Any]:
    """Delete backed-up sets until the instrument folder has purge.min_free_gb free; the report goes to XCom.

    A set held back by a failed check is announced by the alerts (once per change); without
    alerts (``alerts.enabled: false``) the task turns red instead, so that someone sees it.
    """
    from rawvault.purge import purge_instrument

    settings = get_settings()
    report = purge_instrument(instrument_id, settings)
    log.info("%s", report.table())
    if report.held_back and not settings.alerts.enabled:
        raise AirflowFailException(failure_message(report))
    return report.as_dict()
