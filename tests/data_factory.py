"""Generated instrument folders for tests (defaults sized for fast runs)."""

from __future__ import annotations

from pathlib import Path

from devtools import demo_data
from devtools.demo_data import KIB, MIB, write_bytes

__all__ = ["KIB", "MIB", "make_bruker", "make_sciex", "make_thermo", "write_bytes"]


def make_thermo(
    folder: Path, name: str = "20261122_thermo1_PRJ1_sample.raw", size: int = 12 * MIB, seed: int = 1
) -> Path:
    """A Thermo ``.raw`` file (12 MiB: three 5 MiB parts)."""
    return demo_data.make_thermo(folder, name, size, seed)


def make_bruker(folder: Path, name: str = "20261122_tims1_sample.d", seed: int = 2) -> Path:
    """A Bruker ``.d`` folder with nested files (one empty, one non-ASCII name)."""
    return demo_data.make_bruker(folder, name, seed=seed)


def make_sciex(folder: Path, name: str = "20261122_zeno1_sample.wiff", seed: int = 3) -> Path:
    """A Sciex ``.wiff`` set with ``.wiff2`` and ``.wiff.scan`` siblings."""
    return demo_data.make_sciex(folder, name, seed=seed)
