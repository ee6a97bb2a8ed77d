"""The two alert use cases: one check (observe, record the changes, send) and one day's digest."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from rawvault.alerts.delivery import DeliveryReport, Sender, deliver_pending
from rawvault.alerts.digest import digest_message, digest_subject
from rawvault.alerts.disks import DiskUsage, disk_observations, free_space_measurements
from rawvault.alerts.model import Health, Kind, Observation
from rawvault.alerts.raw_files import (
    STUCK_GRACE,
    SUBJECT_PREFIX,
    RuleContext,
    gone,
    raw_file_alert_state,
)
from rawvault.alerts.reconcile import RecordedChanges, plan_changes, record_changes
from rawvault.alerts.totals import record_due_totals
from shared.db.alert_queries import raw_files_by_id, raw_files_needing_attention
from shared.db.alerts import BASELINE_SUBJECT, alert_records, fresh_delivery, open_alert_records, record_new_alert
from shared.db.free_space import record_free_space
from shared.db.models import utc_now
from shared.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class CheckReport:
    """What one alert check found, recorded and sent."""

    observed: int = 0
    bad: int = 0
    recorded: RecordedChanges = field(default_factory=RecordedChanges)
    delivery: DeliveryReport = field(default_factory=DeliveryReport)

    def summary(self) -> dict[str, object]:
        """Counts for the task's return value (XCom) and log."""
        return {
            "observed": self.observed,
            "bad": self.bad,
            "baseline": self.recorded.baseline,
            "announced": len(self.recorded.announced),
            "grouped": len(self.recorded.grouped),
            "lost_race": len(self.recorded.lost_race),
            "sent": dict(self.delivery.sent),
            "failed_channels": dict(self.delivery.failed),
            "waiting": dict(self.delivery.waiting),
        }


def rule_context(settings: Settings, now: datetime, ui_base_url: str | None) -> RuleContext:
    """The raw file rules' context from the settings."""
    s3 = settings.backup.s3
    return RuleContext(
        now=now,
        deadline=timedelta(hours=settings.backup.deadline_hours),
        s3=settings.s3_enabled,
        ui_base_url=ui_base_url,
        max_upload_attempts=s3.max_upload_attempts if settings.s3_enabled and s3 else None,
    )


def raw_file_observations(settings: Settings, now: datetime, ui_base_url: str | None) -> list[Observation]:
    """Every raw file that may be bad now, and every one the ledger holds a bad state for."""
    ctx = rule_context(settings, now, ui_base_url)
    found = {
        raw_file.id: raw_file
        for raw_file in raw_files_needing_attention(
            overdue_before=now - ctx.deadline,
            lease_expired_before=now - STUCK_GRACE,
            s3=ctx.s3,
        )
    }
    open_ids = [subject.removeprefix(SUBJECT_PREFIX) for subject in open_alert_records([SUBJECT_PREFIX])]
    found.update(raw_files_by_id(raw_file_id for raw_file_id in open_ids if raw_file_id not in found))
    observations = [raw_file_alert_state(raw_file, ctx) for raw_file in found.values()]
    return observations + [gone(raw_file_id) for raw_file_id in open_ids if raw_file_id not in found]


def run_check(
    settings: Settings,
    senders: Mapping[str, Sender],
    *,
    now: datetime | None = None,
    ui_base_url: str | None = None,
    disk_usage: DiskUsage = shutil.disk_usage,
) -> CheckReport:
    """One alert check: observe raw files and disks, record each change of state once, send what is pending."""
    now = now or utc_now()
    # The Backups page shows the last free space (the api-server may not mount the shares).
    record_free_space(free_space_measurements(settings, now, disk_usage))
    record_due_totals(settings, now)  # and the totals per instrument and project, at most hourly
    observations = raw_file_observations(settings, now, ui_base_url) + disk_observations(settings, disk_usage)
    report = CheckReport(observed=len(observations), bad=sum(o.health == Health.BAD for o in observations))
    subjects = [o.subject for o in observations if o.health != Health.UNKNOWN]
    records = alert_records([*subjects, BASELINE_SUBJECT])
    baseline = BASELINE_SUBJECT not in records
    changes = plan_changes(observations, records)
    report.recorded = record_changes(
        changes,
        channels=settings.alerts.channels.names(),
        label=settings.alerts.label,
        max_messages=settings.alerts.max_messages_per_check,
        baseline=baseline,
        now=now,
    )
    report.delivery = deliver_pending(senders, now=now)
    log.info("alert check: %s", report.summary())
    return report


def run_digest(
    settings: Settings,
    senders: Mapping[str, Sender],
    *,
    day: date,
    now: datetime | None = None,
    disk_usage: DiskUsage | None = None,
) -> DeliveryReport:
    """Record ``day``'s digest once (a second run that day records nothing) and send what is pending."""
    now = now or utc_now()
    subject = digest_subject(day)
    if subject not in alert_records([subject]):
        message = digest_message(settings, day=day, now=now, disk_usage=disk_usage)
        deliveries = {channel: fresh_delivery() for channel in settings.alerts.channels.names()}
        if record_new_alert(
            subject, state="sent", kind=Kind.DIGEST.value, message=message, deliveries=deliveries, now=now
        ):
            log.info("digest %s recorded: %s", day, message["title"])
    else:
        log.info("the digest of %s was recorded already: only pending deliveries are sent", day)
    return deliver_pending(senders, now=now)
