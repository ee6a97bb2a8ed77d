"""Low free space on each instrument folder and on the backup root (``shutil.disk_usage``)."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from rawvault.alerts.model import Health, Kind, Observation, unknown
from shared.settings import Settings
from shared.settings.alerts import GB

log = logging.getLogger(__name__)

BACKUP_SUBJECT = "disk:backup"
INSTRUMENT_SUBJECT_PREFIX = "disk:instrument:"
SUBJECT_PREFIX = "disk:"
# Healthy again only above the limit plus 5 %: a disk hovering at the limit must not send
# a warning and a recovery at every check.
RECOVERY_MARGIN = 1.05
DiskUsage = Callable[[Path], Any]  # shutil.disk_usage: .total, .used, .free in bytes


def _gb(size: float) -> str:
    return f"{size / GB:,.1f} GB"


def _observe(
    subject: str, what: str, path: Path, limit_gb: float, key: str, hint: str, disk_usage: DiskUsage
) -> Observation:
    try:
        usage = disk_usage(path)
    except OSError as error:
        # Unreadable is not "healthy" and not "low": the share may be rebooting. Keep the last state.
        log.warning("free space of %s (%s) unknown: %s", what, path, error.strerror or error)
        return unknown(subject)
    details = (
        ("folder", str(path)),
        ("free", _gb(usage.free)),
        ("size", _gb(usage.total)),
        ("limit", f"{limit_gb:g} GB ({key})"),
    )
    if limit_gb <= 0 or usage.free >= limit_gb * GB * RECOVERY_MARGIN:
        return Observation(subject, Health.HEALTHY, title=f"{what}: {_gb(usage.free)} free again.", details=details)
    if usage.free >= limit_gb * GB:
        return unknown(subject)  # between the limit and the recovery margin: keep the last state
    return Observation(
        subject,
        Health.BAD,
        state="low_free_space",
        kind=Kind.LOW_FREE_SPACE,
        title=f"Low free space on {what}: {_gb(usage.free)} free (limit {limit_gb:g} GB)",
        details=details,
        hint=hint,
    )


def disk_observations(settings: Settings, disk_usage: DiskUsage = shutil.disk_usage) -> list[Observation]:
    """One observation per instrument folder and one for the backup root."""
    limits = settings.alerts.free_space
    observations = []
    for instrument_id, instrument in settings.instruments.items():
        key = (
            f"alerts.free_space.instruments.{instrument_id}"
            if instrument_id in limits.instruments
            else "alerts.free_space.instrument_min_free_gb"
        )
        hint = (
            f"The instrument writes here: free space on it (acquisitions already backed up are moved into "
            f"{settings.file_mover.target_folder}/ and may be removed from there once their backup is verified)."
        )
        observations.append(
            _observe(
                f"{INSTRUMENT_SUBJECT_PREFIX}{instrument_id}",
                f"instrument folder {instrument_id}",
                instrument.path,
                limits.instrument_limit_gb(instrument_id),
                key,
                hint,
                disk_usage,
            )
        )
    observations.append(
        _observe(
            BACKUP_SUBJECT,
            "the backup root",
            settings.locations.backup,
            limits.backup_min_free_gb,
            "alerts.free_space.backup_min_free_gb",
            "Copies to the local backup fail when it is full: add space (rawvault never deletes from the backup).",
            disk_usage,
        )
    )
    return observations


def free_space_measurements(
    settings: Settings, now: datetime, disk_usage: DiskUsage = shutil.disk_usage
) -> list[dict[str, Any]]:
    """Free and total bytes of every instrument folder and the backup root (unreadable ones left out), to record."""
    folders = {f"instrument:{iid}": instrument.path for iid, instrument in settings.instruments.items()}
    folders["backup"] = settings.locations.backup
    measurements = []
    for folder_id, path in folders.items():
        try:
            usage = disk_usage(path)
        except OSError:
            continue  # logged by the observation of the same folder
        measurements.append(
            {"id": folder_id, "path": str(path), "free_bytes": int(usage.free), "total_bytes": int(usage.total),
             "measured_at": now}
        )  # fmt: skip
    return measurements
