"""Decide when an acquisition has finished: its main file stopped growing, or a newer one started."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from rawvault.keys import handler_dag_id
from shared.db.interface import get_raw_file, newer_acquisition_exists, update_raw_file
from shared.db.models import RawFileStatus, utc_now
from shared.instrument_types import INSTRUMENT_TYPES
from shared.settings import Settings

log = logging.getLogger(__name__)


class WrongInstrumentError(ValueError):
    """The raw file belongs to another instrument than the DAG run handling it."""


class AcquisitionGoneError(RuntimeError):
    """The raw file disappeared from the instrument folder while it was being watched."""


@dataclass(frozen=True)
class Observation:
    """The main file's size now, and what was recorded at the previous look."""

    size: int
    previous_size: int | None
    previous_since: datetime | None


def main_file_size(main_file: Path) -> int:
    """Current size of the main file; 0 while the instrument has not created it yet."""
    try:
        return main_file.stat().st_size
    except FileNotFoundError:
        return 0


def size_stable_long_enough(observation: Observation, now: datetime, stable_seconds: float) -> bool:
    """True when the size is unchanged since a previous look at least ``stable_seconds`` ago."""
    if observation.previous_size is None or observation.previous_since is None:
        return False
    if observation.size != observation.previous_size or observation.size == 0:
        return False
    return now - observation.previous_since >= timedelta(seconds=stable_seconds)


def acquisition_finished(raw_file_id: str, settings: Settings, instrument_id: str | None = None) -> bool:
    """One look at a running acquisition (a sensor poke); records what it saw on the ``RawFile``.

    With ``instrument_id`` (the DAG's instrument), a raw file of another instrument is refused.
    """
    raw_file = get_raw_file(raw_file_id)
    if instrument_id is not None and raw_file.instrument_id != instrument_id:
        raise WrongInstrumentError(
            f"raw file {raw_file_id!r} belongs to instrument {raw_file.instrument_id!r}, not {instrument_id!r}: "
            f"trigger {handler_dag_id(raw_file.instrument_id)} for it instead"
        )
    instrument = settings.instruments[raw_file.instrument_id]
    raw_file_path = instrument.path / raw_file.original_name
    if not raw_file_path.exists():
        if not instrument.path.is_dir():
            raise FileNotFoundError(
                f"the folder of instrument {raw_file.instrument_id!r}, {instrument.path}, is not there: is the "
                "instrument share mounted? (the task is retried)"
            )
        message = (
            f"raw file {raw_file_id!r} is no longer at {raw_file_path}: it was deleted or moved while it was being "
            "acquired; nothing was backed up. If it was moved on purpose, register it again from its new place"
        )
        update_raw_file(raw_file_id, status=RawFileStatus.ERROR.value, status_details=f"monitor_acquisition: {message}")
        raise AcquisitionGoneError(message)
    main_file = INSTRUMENT_TYPES[instrument.type].main_file(raw_file_path)
    now = utc_now()
    observation = Observation(main_file_size(main_file), raw_file.monitor_size, raw_file.monitor_size_since)

    if size_stable_long_enough(observation, now, settings.acquisition.size_stable_seconds):
        stable = settings.acquisition.size_stable_seconds
        reason = f"{main_file.name} kept its size of {observation.size} bytes for {stable:g} s"
    elif observation.size > 0 and newer_acquisition_exists(raw_file):
        reason = "a newer acquisition started on the instrument"
    else:
        if observation.size != observation.previous_size:
            update_raw_file(
                raw_file_id,
                monitor_size=observation.size,
                monitor_size_since=now,
                status=RawFileStatus.MONITORING_ACQUISITION.value,
            )
        log.info("%s: %s is %d bytes, still acquiring", raw_file_id, main_file, observation.size)
        return False
    update_raw_file(raw_file_id, status=RawFileStatus.MONITORING_DONE.value, status_details=None)
    log.info("%s: acquisition finished (%s)", raw_file_id, reason)
    return True
