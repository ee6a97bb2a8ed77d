"""File systems of their own for tests and benchmarks: a loop-mounted ext4 with I/O counters, a small tmpfs.

Counting what a step reads from the instrument share needs the share on a
block device of its own: the loop device's counters in
``/sys/block/loopN/stat`` see every read that reaches the "disk", whatever
the code path (``open``, ``mmap``, ``sendfile``, a subprocess). The page cache
must not answer instead: :func:`evict` drops a file's clean pages
(``POSIX_FADV_DONTNEED``), as a worker with less RAM than a 50 GB acquisition
would never have it cached.

Everything here needs root (``losetup``, ``mount``); :func:`can_mount` says
whether it is available. Every context manager unmounts and detaches in
``finally``. Dev and test only: never imported by rawvault.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SECTOR_BYTES = 512  # /sys/block/*/stat counts 512-byte sectors whatever the device's block size


@dataclass(frozen=True)
class IoCounters:
    """Bytes read from and written to one block device since it was attached."""

    read_bytes: int
    written_bytes: int

    def __sub__(self, other: IoCounters) -> IoCounters:
        return IoCounters(self.read_bytes - other.read_bytes, self.written_bytes - other.written_bytes)


@dataclass(frozen=True)
class LoopFileSystem:
    """An ext4 file system on a loop device, mounted at ``mount_point``."""

    device: str  # /dev/loopN
    mount_point: Path

    def counters(self) -> IoCounters:
        """The device's I/O counters now (fields 3 and 7 of ``/sys/block/loopN/stat``: sectors read/written)."""
        fields = Path(f"/sys/block/{Path(self.device).name}/stat").read_text().split()
        return IoCounters(int(fields[2]) * SECTOR_BYTES, int(fields[6]) * SECTOR_BYTES)

    def settle(self) -> None:
        """Write everything back and drop the cached pages of every file, so later reads reach the device."""
        os.sync()
        evict(path for path in self.mount_point.rglob("*") if path.is_file() and not path.is_symlink())


def _run(*command: str) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


def can_mount() -> bool:
    """Whether this process may create loop devices and mount file systems (root with the tools present)."""
    if os.geteuid() != 0:
        return False
    with tempfile.TemporaryDirectory(prefix="rawvault-mount-probe-") as folder:
        try:
            _run("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", folder)
        except (OSError, subprocess.CalledProcessError):
            return False
        _run("umount", folder)
    return True


def _unmount(mount_point: Path) -> None:
    try:
        _run("umount", str(mount_point))
    except subprocess.CalledProcessError:
        _run("umount", "--lazy", str(mount_point))  # still busy (a leaked handle): detach it anyway


@contextmanager
def loop_filesystem(mount_point: Path, size: int, backing_folder: Path) -> Iterator[LoopFileSystem]:
    """An empty ext4 of ``size`` bytes on a new loop device, mounted at ``mount_point`` (``noatime``).

    The backing file goes to ``backing_folder`` (not under ``mount_point``).
    Inode tables and journal are initialised at once, so no background write
    shows up in the counters; reads are not served from a second cache of the
    backing file (direct I/O on the loop device where supported).
    """
    mount_point.mkdir(parents=True, exist_ok=True)
    backing = Path(tempfile.mkstemp(prefix="rawvault-loop-", suffix=".img", dir=backing_folder)[1])
    device = ""
    mounted = False
    try:
        os.truncate(backing, size)
        try:
            device = _run("losetup", "--find", "--show", "--direct-io=on", str(backing))
        except subprocess.CalledProcessError:  # the backing file system refuses O_DIRECT
            device = _run("losetup", "--find", "--show", str(backing))
        _run("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", device)
        _run("mount", "-o", "noatime", device, str(mount_point))
        mounted = True
        yield LoopFileSystem(device, mount_point)
    finally:
        if mounted:
            _unmount(mount_point)
        if device:
            _run("losetup", "--detach", device)
        backing.unlink(missing_ok=True)


@contextmanager
def tmpfs(mount_point: Path, size: int) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes at ``mount_point`` (e.g. a backup disk that fills up), unmounted afterwards."""
    mount_point.mkdir(parents=True, exist_ok=True)
    _run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point))
    try:
        yield mount_point
    finally:
        _unmount(mount_point)


def evict(paths: Iterable[Path]) -> None:
    """Drop the (clean) cached pages of these files: the next read reaches the disk. Only a hint to the kernel."""
    for path in paths:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(descriptor)
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)
