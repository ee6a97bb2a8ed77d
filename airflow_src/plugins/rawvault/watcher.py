"""Find new acquisitions in an instrument folder and register them as ``RawFile`` documents."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from rawvault.local_backup import backup_base_path
from shared.db.interface import connect_db, create_raw_file, get_projects
from shared.db.models import RawFile, RawFileStatus
from shared.instrument_types import INSTRUMENT_TYPES, InstrumentType, is_ignored_name
from shared.settings import Settings

log = logging.getLogger(__name__)

_TOKEN_SPLIT_RE = re.compile(r"[\s_\-.]+")


class InstrumentFolderError(RuntimeError):
    """The instrument folder is missing or cannot be read."""


def list_raw_files(
    instrument_id: str, folder: Path, instrument_type: InstrumentType, skip: Iterable[str]
) -> list[Path]:
    """Raw file entries in ``folder`` (not recursive), oldest first; hidden and temporary ones are ignored."""
    skip_names = set(skip)
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:
        raise InstrumentFolderError(
            f"the folder of instrument {instrument_id!r}, {folder}, does not exist: is the instrument share mounted? "
            "Otherwise correct instruments.{instrument_id}.path in the settings"
        ) from None
    except NotADirectoryError:
        raise InstrumentFolderError(f"the path of instrument {instrument_id!r}, {folder}, is not a folder") from None
    except PermissionError:
        raise InstrumentFolderError(
            f"the folder of instrument {instrument_id!r}, {folder}, cannot be read (permission denied): "
            "give the Airflow user read and write access to the share"
        ) from None
    raw_files = [
        entry
        for entry in entries
        if entry.name not in skip_names and not is_ignored_name(entry.name) and instrument_type.is_raw_file(entry)
    ]
    return sorted(raw_files, key=lambda p: (p.stat().st_mtime, p.name))


def detect_project_id(raw_file_name: str, project_ids: Iterable[str], fallback_project_id: str) -> str:
    """The project whose id is a token of the file name (case-insensitive); the fallback unless exactly one matches."""
    tokens = {token.lower() for token in _TOKEN_SPLIT_RE.split(raw_file_name) if token}
    matches = sorted({project_id for project_id in project_ids if project_id.lower() in tokens})
    if len(matches) == 1:
        return matches[0]
    if matches:
        log.warning("%s matches several projects %s: using the fallback project", raw_file_name, matches)
    return fallback_project_id


def names_on_share(instrument_id: str) -> set[str]:
    """Names of this instrument's registered raw files that have not been moved off the share."""
    connect_db()
    known = RawFile.objects(instrument_id=instrument_id, status__ne=RawFileStatus.MOVED.value).only("original_name")
    return {raw_file.original_name for raw_file in known}


def register_new_raw_files(instrument_id: str, settings: Settings) -> list[str]:
    """Register every new raw file of one instrument; return the new raw file ids, oldest first."""
    instrument = settings.instruments[instrument_id]
    instrument_type = INSTRUMENT_TYPES[instrument.type]
    known = names_on_share(instrument_id)
    candidates = list_raw_files(
        instrument_id, instrument.path, instrument_type, skip=[settings.file_mover.target_folder]
    )
    new = [path for path in candidates if path.name not in known]
    if not new:
        log.info("no new raw files in %s (%d known)", instrument.path, len(known))
        return []
    project_ids = [project.id for project in get_projects()]
    registered = []
    for path in new:
        created_at = datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
        project_id = detect_project_id(path.name, project_ids, settings.watcher.fallback_project_id)
        raw_file = create_raw_file(
            path.name,
            instrument_id=instrument_id,
            instrument_type=instrument.type,
            created_at=created_at,
            project_id=project_id,
            status=RawFileStatus.QUEUED.value,
        )
        base = backup_base_path(instrument_id, created_at, raw_file.id, path.name)
        RawFile.objects(id=raw_file.id).update_one(set__backup_base_path=base)
        log.info("registered %s as raw file %r (project %s)", path, raw_file.id, project_id)
        registered.append(raw_file.id)
    return registered
