"""Where a raw file is on disk: its instrument folder, its path there, its backup folder, its move target.

One home for these paths, used by the pipeline steps, the file mover and the
upload. The relative backup path itself is the database's rule
(:func:`shared.db.interface.backup_base_path`), recorded on each raw file
when it is registered.
"""

from __future__ import annotations

from pathlib import Path

from shared.db.interface import backup_base_path as backup_base_path_rule
from shared.db.models import RawFile
from shared.settings import Settings


def instrument_folder(raw_file: RawFile, settings: Settings) -> Path:
    """The instrument folder holding the raw file (``file_info`` paths are relative to it while on the share)."""
    return settings.instruments[raw_file.instrument_id].path


def raw_file_path(raw_file: RawFile, settings: Settings) -> Path:
    """The raw file on the instrument share (a file, or a folder such as ``NAME.d``)."""
    return instrument_folder(raw_file, settings) / raw_file.original_name


def backup_base_path(raw_file: RawFile) -> str:
    """The raw file's folder in the backup, relative (``<instrument>/<YYYY_MM>[/<raw_file_id>]``); also its key prefix.

    The recorded ``backup_base_path``; for a document written before it was
    recorded, the rule it was recorded with.
    """
    if raw_file.backup_base_path:
        return str(raw_file.backup_base_path)
    return backup_base_path_rule(raw_file.instrument_id, raw_file.created_at, raw_file.id, raw_file.original_name)


def backup_folder(raw_file: RawFile, settings: Settings) -> Path:
    """The raw file's folder in the local backup, ``<locations.backup>/<backup_base_path>``."""
    return settings.locations.backup / backup_base_path(raw_file)


def move_target_folder(raw_file: RawFile, settings: Settings) -> Path:
    """Where the acquisition goes: ``<instrument path>/<target_folder>/<backup path without the instrument id>``."""
    within_instrument = Path(backup_base_path(raw_file)).relative_to(raw_file.instrument_id)
    return instrument_folder(raw_file, settings) / settings.file_mover.target_folder / within_instrument
