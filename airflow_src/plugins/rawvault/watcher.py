"""Find new acquisitions in an instrument folder and register them as ``RawFile`` documents."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from rawvault.keys import handler_run_id
from shared.db.interface import create_raw_file, get_projects, list_raw_files_on_share, queued_raw_file_ids
from shared.db.models import RawFile, RawFileStatus
from shared.db.redrive_queries import redrive_counts
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
            f"Otherwise correct instruments.{instrument_id}.path in the settings"
        ) from None
    except NotADirectoryError:
        raise InstrumentFolderError(f"the path of instrument {instrument_id!r}, {folder}, is not a folder") from None
    except PermissionError:
        raise InstrumentFolderError(
            f"the folder of instrument {instrument_id!r}, {folder}, cannot be read (permission denied): "
            "give the Airflow user read and write access to the share"
        ) from None
    raw_files = []
    for entry in entries:
        if entry.name in skip_names or is_ignored_name(entry.name):
            continue
        try:
            if instrument_type.is_raw_file(entry):
                raw_files.append((entry.stat().st_mtime, entry.name, entry))
        except FileNotFoundError:  # deleted between listing and looking: not an acquisition any more
            continue
    return [entry for _mtime, _name, entry in sorted(raw_files)]


def detect_project_id(raw_file_name: str, project_ids: Iterable[str], fallback_project_id: str) -> str:
    """The project whose id is a token of the file name (case-insensitive); the fallback unless exactly one matches."""
    tokens = {token.lower() for token in _TOKEN_SPLIT_RE.split(raw_file_name) if token}
    matches = sorted({project_id for project_id in project_ids if project_id.lower() in tokens})
    if len(matches) == 1:
        return matches[0]
    if matches:
        log.warning("%s matches several projects %s: using the fallback project", raw_file_name, matches)
    return fallback_project_id


def raw_files_on_share(instrument_id: str, names: Iterable[str]) -> dict[str, RawFile]:
    """Registered raw files of one instrument under these share names, not moved off the share, by name."""
    by_name: dict[str, RawFile] = {}
    for raw_file in list_raw_files_on_share(instrument_id, names):
        by_name[raw_file.original_name] = raw_file  # the newest registration of a name wins
    return by_name


def _is_known(path: Path, known: RawFile | None) -> bool:
    """Whether ``path`` is the acquisition ``known`` stands for, not a new one under its name.

    A new inode, or a main file modified after it was checksummed, means the
    name was used again (deleted and acquired anew, or overwritten).
    """
    if known is None:
        return False
    try:
        if known.source_inode is not None and path.stat().st_ino != known.source_inode:
            return False
        if known.source_mtime_ns is not None and known.instrument_type in INSTRUMENT_TYPES:
            main_file = INSTRUMENT_TYPES[known.instrument_type].main_file(path)
            return main_file.stat().st_mtime_ns == known.source_mtime_ns
    except FileNotFoundError:
        return True  # gone (or half-gone) right now: nothing new to register
    return True


def register_new_raw_files(instrument_id: str, settings: Settings) -> list[str]:
    """Register every new raw file of one instrument; return the new raw file ids, oldest first.

    A name that is registered already but now stands for another file (a
    different inode: deleted and acquired again) is a new acquisition and is
    registered under a new id.
    """
    instrument = settings.instruments[instrument_id]
    instrument_type = INSTRUMENT_TYPES[instrument.type]
    candidates = list_raw_files(
        instrument_id, instrument.path, instrument_type, skip=[settings.file_mover.target_folder]
    )
    # Only the names on the share now: what the database knows of them, never the instrument's history.
    known = raw_files_on_share(instrument_id, [path.name for path in candidates])
    new = [path for path in candidates if not _is_known(path, known.get(path.name))]
    if not new:
        log.info("no new raw files in %s (%d known)", instrument.path, len(known))
        return []
    project_ids = [project.id for project in get_projects()]
    registered = []
    for path in new:
        try:
            stat = path.stat()
        except FileNotFoundError:
            log.warning("%s disappeared before it could be registered", path)
            continue
        project_id = detect_project_id(path.name, project_ids, settings.watcher.fallback_project_id)
        raw_file = create_raw_file(
            path.name,
            instrument_id=instrument_id,
            instrument_type=instrument.type,
            created_at=datetime.fromtimestamp(stat.st_mtime, tz=UTC),
            project_id=project_id,
            source_inode=stat.st_ino,
            status=RawFileStatus.QUEUED.value,
        )
        log.info("registered %s as raw file %r (project %s)", path, raw_file.id, project_id)
        registered.append(raw_file.id)
    return registered


def raw_files_to_start(instrument_id: str, settings: Settings) -> list[str]:
    """Raw file ids whose acquisition handler should run: the new ones, and any still ``queued``.

    A raw file stays ``queued`` until its handler's first look at it, so one
    registered by a watcher run that failed before triggering is started by
    the next run; triggers use one run id per raw file, so a raw file whose
    handler run exists already is never started twice.
    """
    registered = register_new_raw_files(instrument_id, settings)
    queued = queued_raw_file_ids(instrument_id)
    return registered + [raw_file_id for raw_file_id in queued if raw_file_id not in registered]


def handler_starts(instrument_id: str, settings: Settings) -> list[tuple[str, str]]:
    """``(raw file id, acquisition_handler run id)`` to trigger: :func:`raw_files_to_start`, each under its attempt.

    A raw file re-driven by ``acquisition_redrive`` is ``queued`` again with
    its re-drive count: its run id is that attempt's (``__redrive<N>``), so the
    watcher and the re-drive trigger the same run and never a second one.
    """
    raw_file_ids = raw_files_to_start(instrument_id, settings)
    redrives = redrive_counts(raw_file_ids)
    return [(raw_file_id, handler_run_id(raw_file_id, redrives.get(raw_file_id, 0))) for raw_file_id in raw_file_ids]
