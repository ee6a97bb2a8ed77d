"""Move a backed-up acquisition aside on the instrument share.

An acquisition is moved only when its local backup is verified and the set on
the share is still exactly the one that was checksummed
(:func:`rawvault.recorded_set.check_recorded_set`: the same files, no symlink,
each with its recorded size and modification time, or with
``file_mover.verify: rehash`` its recorded MD5): a file re-created under the
same name, or a side file rewritten in place, is never moved as if it were the
backed-up one. Re-running after a completed or partial move finishes the job
without error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from rawvault.locations import backup_folder, instrument_folder, move_target_folder
from rawvault.locations import raw_file_path as raw_file_location
from rawvault.recorded_set import Verify, check_recorded_set, record_of
from shared.db.models import BackupStatus, RawFile
from shared.instrument_types import INSTRUMENT_TYPES
from shared.settings import Settings

log = logging.getLogger(__name__)

# What to do when the set on the share is no longer the one backed up.
_WHEN_MOVE_REFUSED = (
    "If a new acquisition was written under this name, let the watcher register it; if the files were only "
    "touched, set file_mover.verify: rehash and clear move_raw_file"
)


class MoveRefusedError(RuntimeError):
    """The acquisition must not be moved (no verified backup, or the share does not match it)."""


@dataclass
class MovePlan:
    """Top-level entries to move, from the instrument folder to the target folder."""

    moves: list[tuple[Path, Path]] = field(default_factory=list)
    already_moved: list[Path] = field(default_factory=list)


def plan_move(raw_file: RawFile, settings: Settings) -> MovePlan:
    """Check everything and decide what to move; raise :class:`MoveRefusedError` when nothing may move."""
    if raw_file.backup_status not in BackupStatus.LOCAL_COPY_VERIFIED:
        raise MoveRefusedError(
            f"raw file {raw_file.id!r} has no verified local backup (backup_status={raw_file.backup_status}): "
            "not moved. Let copy_raw_file succeed first"
        )
    if not raw_file.file_info:
        raise MoveRefusedError(f"raw file {raw_file.id!r} has no file_info: not moved")
    source_root = instrument_folder(raw_file, settings)
    target_root = move_target_folder(raw_file, settings)
    _check_backup_copies(raw_file, settings)
    _check_registered_identity(raw_file, settings)

    plan = MovePlan()
    top_level = {Path(relative_path).parts[0] for relative_path in raw_file.file_info}
    for name in sorted(top_level):
        source, target = source_root / name, target_root / name
        if source.exists() and target.exists():
            raise MoveRefusedError(
                f"both {source} and {target} exist: refusing to merge or overwrite; check which one is the backed-up "
                "acquisition"
            )
        if source.exists():
            plan.moves.append((source, target))
        elif target.exists():
            plan.already_moved.append(target)
        else:
            raise MoveRefusedError(f"{source} is missing from the share and not at {target} either: nothing to move")
    # Whatever part of the set is still to move, and whatever a run before moved already, is the recorded one.
    _check_set_is_recorded(raw_file, settings, source_root, [source.name for source, _ in plan.moves])
    _check_set_is_recorded(raw_file, settings, target_root, [target.name for target in plan.already_moved])
    return plan


def _check_backup_copies(raw_file: RawFile, settings: Settings) -> None:
    """Every file of the set is in the local backup with its recorded size."""
    backup_root = backup_folder(raw_file, settings)
    for relative_path, (size, _md5, _etag) in raw_file.file_info.items():
        backup_copy = backup_root / relative_path
        if not backup_copy.is_file() or backup_copy.stat().st_size != size:
            raise MoveRefusedError(
                f"the backup copy {backup_copy} is missing or has the wrong size: {raw_file.id!r} was not moved. "
                "Re-run copy_raw_file for this raw file"
            )


def _check_registered_identity(raw_file: RawFile, settings: Settings) -> None:
    """The raw file's entry on the share is the one registered: same inode (and main file time, unless rehashing)."""
    raw_file_path = raw_file_location(raw_file, settings)
    instrument_type = INSTRUMENT_TYPES[settings.instruments[raw_file.instrument_id].type]
    main_file = instrument_type.main_file(raw_file_path)
    # A rehash proves the content, so a main file that was only touched may move.
    by_time = settings.file_mover.verify == Verify.SIZE_MTIME.value and raw_file.source_mtime_ns
    if raw_file_path.exists() and (
        (raw_file.source_inode and raw_file_path.stat().st_ino != raw_file.source_inode)
        or (by_time and main_file.exists() and main_file.stat().st_mtime_ns != raw_file.source_mtime_ns)
    ):
        raise MoveRefusedError(
            f"{raw_file_path} is not the file that was registered and backed up as {raw_file.id!r} (it was deleted "
            "and created again, or overwritten, under the same name): not moved. The watcher registers the new one "
            "by itself"
        )


def _check_set_is_recorded(raw_file: RawFile, settings: Settings, root: Path, top_names: list[str]) -> None:
    """The files below ``root/<top_names>`` are exactly the recorded ones (rawvault.recorded_set)."""
    if not top_names:
        return
    instrument_type = INSTRUMENT_TYPES[settings.instruments[raw_file.instrument_id].type]
    main_file = instrument_type.main_file(Path(raw_file.original_name)).as_posix()
    verify = Verify(settings.file_mover.verify)
    check = check_recorded_set(
        root,
        record_of(raw_file, main_file, only_top=top_names),
        verify=verify,
        instrument_type=instrument_type,
        raw_file_name=raw_file.original_name,
    )
    if not check.ok:
        compared_by = "MD5" if verify is Verify.REHASH else "size and modification time"
        refused = f"the set on the share is not the one backed up as {raw_file.id!r} (compared by {compared_by})"
        raise MoveRefusedError(f"{check.summary()}: {refused}, so it was not moved. {_WHEN_MOVE_REFUSED}")


def move_raw_file(raw_file: RawFile, settings: Settings) -> MovePlan:
    """Move the acquisition into the instrument's target folder (renames on the same share)."""
    plan = plan_move(raw_file, settings)
    for source, target in plan.moves:
        target.parent.mkdir(parents=True, exist_ok=True)
        source.rename(target)
        log.info("moved %s -> %s", source, target)
    for target in plan.already_moved:
        log.info("%s was already moved", target)
    return plan
