"""Generated acquisitions with reproducible pseudo-random content (demo run and tests)."""

from __future__ import annotations

import random
from pathlib import Path

KIB = 1024
MIB = 1024 * KIB


def write_bytes(path: Path, size: int, seed: int) -> Path:
    """Write ``size`` pseudo-random bytes (reproducible from ``seed``) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    with path.open("wb") as handle:
        remaining = size
        while remaining:
            chunk = min(remaining, 4 * MIB)
            handle.write(rng.randbytes(chunk))
            remaining -= chunk
    return path


def make_thermo(folder: Path, name: str, size: int, seed: int = 1) -> Path:
    """A Thermo acquisition: one ``.raw`` file."""
    return write_bytes(folder / name, size, seed)


def make_bruker(folder: Path, name: str, main_size: int = 7 * MIB, seed: int = 2) -> Path:
    """A Bruker acquisition: a ``.d`` folder with nested files of varied sizes (one empty)."""
    root = folder / name
    write_bytes(root / "analysis.tdf_bin", main_size, seed)
    write_bytes(root / "analysis.tdf", 300 * KIB, seed + 1)
    write_bytes(root / "chromatography-data.sqlite", 40 * KIB, seed + 2)
    write_bytes(root / "1234.m" / "method file.method", 9 * KIB, seed + 3)
    write_bytes(root / "1234.m" / "submethods" / "ä-param.xml", 2 * KIB, seed + 4)
    write_bytes(root / "empty.lock.txt", 0, seed + 5)
    return root


def make_sciex(folder: Path, name: str, seed: int = 3) -> Path:
    """A Sciex acquisition: ``NAME.wiff`` with ``.wiff2`` and ``.wiff.scan`` siblings."""
    stem = name.removesuffix(".wiff")
    write_bytes(folder / name, 200 * KIB, seed)
    write_bytes(folder / f"{stem}.wiff2", 3 * MIB, seed + 1)
    write_bytes(folder / f"{stem}.wiff.scan", 6 * MIB, seed + 2)
    return folder / name
