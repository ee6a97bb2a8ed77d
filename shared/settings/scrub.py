"""The ``backup.scrub`` section: how much data the scheduled verifier re-reads per run, and within which period."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from shared.settings.alerts import GB
from shared.settings.base import FIXES, Section

# backup_verifier runs weekly (rawvault.impl.verify_tasks.VERIFIER_SCHEDULE): a shorter period cannot be kept.
SCRUB_RUN_INTERVAL_DAYS = 7
DEFAULT_SCRUB_BUDGET_GB = 50.0
DEFAULT_SCRUB_PERIOD_DAYS = 90.0

FIXES.update(
    {
        "backup.scrub.budget_gb_per_run": (
            "use GB (10^9 bytes) of 0 or more: what one backup_verifier run may download from S3 and re-read from "
            "the local backup (0: no scrubbing); every uploaded byte must fit in period_days' runs"
        ),
        "backup.scrub.period_days": (
            f"use days from {SCRUB_RUN_INTERVAL_DAYS} (backup_verifier runs weekly) to 3650: every object is re-read "
            "once within this period"
        ),
    }
)


class ScrubSettings(Section):
    """Scrubbing: backup_verifier re-reads raw files (S3 objects and local copies), least recently scrubbed first."""

    # Bytes one run may re-read (from S3, and the same raw files from the local backup); 0: no scrubbing.
    budget_gb_per_run: Annotated[float, Field(ge=0, le=10**6)] = DEFAULT_SCRUB_BUDGET_GB
    # A raw file is re-read once within this period: runs skip raw files scrubbed more recently.
    period_days: Annotated[float, Field(ge=SCRUB_RUN_INTERVAL_DAYS, le=3650)] = DEFAULT_SCRUB_PERIOD_DAYS

    @property
    def budget_bytes(self) -> int:
        """The budget per run in bytes."""
        return int(self.budget_gb_per_run * GB)

    @property
    def enabled(self) -> bool:
        return self.budget_gb_per_run > 0
