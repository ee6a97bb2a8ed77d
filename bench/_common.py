"""What the benchmarks share: paths, test data, a measured subprocess, medians and the machine's load.

Every timed client runs as a process of its own, so its wall time, CPU time
(user + system, all threads) and peak RSS come from the kernel's accounting
of that process (``wait4``), the same way for rawvault and for the reference
tools.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
PLUGINS = REPO_ROOT / "airflow_src" / "plugins"
MIB = 1024 * 1024
GIB = 1024 * MIB


def use_repository_imports() -> None:
    """Put the repository root and the plugins folder on ``sys.path`` (no ``PYTHONPATH`` needed)."""
    for path in (str(PLUGINS), str(REPO_ROOT)):
        if path not in sys.path:
            sys.path.insert(0, path)


def repository_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process that imports rawvault (plus ``extra``)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PLUGINS), str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class Measured:
    """One run of a process: wall seconds, CPU seconds (user + system) and peak RSS in bytes."""

    wall: float
    cpu: float
    peak_rss: int


def run_measured(command: Sequence[str], env: Mapping[str, str] | None = None) -> Measured:
    """Run ``command`` to its end; its wall time, CPU time and peak RSS (``wait4`` in ``_measure.py``).

    A failure raises with the end of the command's output.
    """
    measure = Path(__file__).with_name("_measure.py")
    with tempfile.TemporaryDirectory(prefix="rawvault-measure-") as folder:
        result, log = Path(folder) / "result.json", Path(folder) / "output.log"
        with log.open("wb") as output:
            subprocess.run([sys.executable, "-I", str(measure), str(result), "--", *command],
                           env=dict(env) if env is not None else None, stdout=output, stderr=subprocess.STDOUT,
                           check=True)  # fmt: skip
        measured = json.loads(result.read_text())
        if measured["exit_code"] != 0:
            text = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{' '.join(command[:4])} ... exited with {measured['exit_code']}:\n{text}")
    return Measured(measured["wall"], measured["cpu"], measured["peak_rss"])


def median(values: Sequence[float]) -> float:
    """The median (of the rounds)."""
    return statistics.median(values)


def load_average() -> str:
    """The 1/5/15-minute load average, as ``uptime`` shows it."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def write_random(path: Path, size: int, seed: int) -> Path:
    """``size`` pseudo-random bytes at ``path`` unless a file of that size is there already (kept between runs)."""
    if path.exists() and path.stat().st_size == size:
        return path
    import random

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as stream:
        left = size
        while left:
            block = rng.randbytes(min(left, 16 * MIB))
            stream.write(block)
            left -= len(block)
    partial.replace(path)
    return path


def warm(paths: Sequence[Path]) -> None:
    """Read the files once, so every timed round reads them from the page cache."""
    buffer = bytearray(16 * MIB)
    for path in paths:
        with path.open("rb", buffering=0) as stream:
            while stream.readinto(buffer):
                pass


def ratio(ours: float, reference: float) -> float:
    """``ours / reference`` (``inf`` for a zero reference)."""
    return ours / reference if reference else float("inf")
