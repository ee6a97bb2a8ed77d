"""Putting a verified file in place without ever replacing one: an atomic no-overwrite link, a durable rename.

Used by the local copy (:mod:`rawvault.local_backup`) and the restore
(:mod:`rawvault.s3.download`): both write a temporary file, verify it, then
give it its name here. No database, no boto3.
"""

from __future__ import annotations

import os
from pathlib import Path


def place_no_overwrite(temporary: Path, final: Path) -> bool:
    """Give ``temporary`` the name ``final`` unless something is there already; return whether it did.

    A hard link never replaces a file, so there is no window in which a file
    that appears meanwhile could be overwritten. On a file system without hard
    links (some network shares) it checks, then renames. The folder is fsynced
    so the new name survives a crash; ``temporary`` stays for the caller to remove.
    """
    try:
        os.link(temporary, final)
    except FileExistsError:
        return False
    except OSError:
        if final.exists() or final.is_symlink():
            return False
        temporary.rename(final)
    fsync_dir(final.parent)
    return True


def fsync_dir(folder: Path) -> None:
    """Make a rename or new file in ``folder`` durable (fsync the directory)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
