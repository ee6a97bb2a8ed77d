"""Helpers of the purge tests: sets backed up and moved through the real pipeline, a share that fills up, no root
bypass of file permissions.

- :func:`without_root_bypass`: root ignores file permissions
  (``CAP_DAC_OVERRIDE``), so a read-only Bruker ``.m`` folder would not stop a
  deletion in a test as it stops one on a real share; inside this block the
  calling thread (and threads it starts) works like an ordinary owner of its files.
- :func:`backed_up_and_moved`: a raw file taken through the real pipeline
  steps (register, checksum, local copy, S3 upload, move) against the real
  servers, so the purge finds what production finds.
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from rawvault import pipeline
from rawvault.backup import upload_raw_file
from rawvault.watcher import register_new_raw_files
from shared.db.interface import get_raw_file
from shared.settings import Settings

DAY = 86400

# --- no root bypass of file permissions (Linux capabilities of the calling thread) ---------------------------

_CAP_VERSION_3 = 0x20080522
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _CAP_FOWNER = 1, 2, 3


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _capabilities(libc: Any, data: Any = None) -> Any:
    header = _CapHeader(_CAP_VERSION_3, 0)
    if data is None:
        data = (_CapData * 2)()
        if libc.capget(ctypes.byref(header), data) != 0:
            raise OSError(ctypes.get_errno(), "capget failed")
        return data
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")
    return data


@contextmanager
def without_root_bypass() -> Iterator[None]:
    """Drop CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and CAP_FOWNER from this thread's effective set, then restore."""
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        data = _capabilities(libc)
    except OSError as error:
        pytest.skip(f"cannot read this thread's capabilities ({error})")
    before = data[0].effective
    data[0].effective = before & ~((1 << _CAP_DAC_OVERRIDE) | (1 << _CAP_DAC_READ_SEARCH) | (1 << _CAP_FOWNER))
    _capabilities(libc, data)
    try:
        yield
    finally:
        data[0].effective = before
        _capabilities(libc, data)


# --- sets through the real pipeline ------------------------------------------------------------------------


def age_entry(path: Path, days: float) -> None:
    """Give a share entry (a file or a whole .d folder) a modification time ``days`` ago: its acquisition time."""
    moment = time.time() - days * DAY
    for child in sorted(path.rglob("*"), reverse=True) if path.is_dir() else []:
        os.utime(child, (moment, moment), follow_symlinks=False)
    os.utime(path, (moment, moment))


def backed_up_and_moved(settings: Settings, instrument_id: str, client: Any) -> str:
    """Register the one new raw file of the instrument and take it through checksum, copy, upload and move."""
    (raw_file_id,) = register_new_raw_files(instrument_id, settings)
    pipeline.checksum_raw_file(raw_file_id, settings)
    pipeline.copy_to_local_backup(raw_file_id, settings)
    if settings.s3_enabled:
        upload_raw_file(raw_file_id, settings, client=client)
    pipeline.move_on_share(raw_file_id, settings)
    raw_file = get_raw_file(raw_file_id)
    assert raw_file.status == "moved", raw_file.status_details
    if settings.s3_enabled:
        assert raw_file.backup_status == "upload_done", raw_file.backup_status_details
    return raw_file_id


def fill(share: Path, leave_free: int) -> Path:
    """Write a filler file so that about ``leave_free`` bytes stay free on ``share``'s file system."""
    free = os.statvfs(share).f_bavail * os.statvfs(share).f_frsize
    filler = share / "filler.bin"
    with filler.open("wb") as handle:
        handle.write(b"\0" * max(0, free - leave_free))
    return filler


def free_bytes(path: Path) -> int:
    return os.statvfs(path).f_bavail * os.statvfs(path).f_frsize
