"""
Throughput of rawvault.checksum.checksum_file against md5sum on the same file, in the same run.

Run from the repository root:  .venv/bin/python bench/bench_checksum.py [--size-mib 1024] [--rounds 3]

Creates (or reuses) a random file under bench/results/, reads it once to warm the
page cache, then times ``md5sum <file>`` and ``checksum_file(file, part size)``
alternately and reports the median MiB/s of each and their ratio. The target is
checksum_file >= 0.9 x md5sum (it computes the whole-file MD5 and the per-part
MD5s for the S3 ETag from one read). The exit status is 0 either way: this
reports, it does not assert.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "airflow_src" / "plugins")]

from rawvault.checksum import checksum_file  # noqa: E402
from shared.s3_limits import MIB  # noqa: E402

TARGET_RATIO = 0.9
RESULTS_DIR = REPO_ROOT / "bench" / "results"


def ensure_file(path: Path, size: int) -> None:
    """Write ``size`` random bytes to ``path`` unless a file of that size is already there."""
    if path.exists() and path.stat().st_size == size:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with partial.open("wb") as stream:
        left = size
        while left:
            block = os.urandom(min(left, 16 * MIB))
            stream.write(block)
            left -= len(block)
    partial.replace(path)


def warm(path: Path) -> None:
    """Read the file once so every timed round reads from the page cache."""
    with path.open("rb", buffering=0) as stream:
        buffer = bytearray(16 * MIB)
        while stream.readinto(buffer):
            pass


def time_md5sum(path: Path) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(["md5sum", str(path)], check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - start, out.split()[0]


def time_checksum(path: Path, part_size: int) -> tuple[float, str]:
    start = time.perf_counter()
    result = checksum_file(path, part_size)
    return time.perf_counter() - start, result.md5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024, help="test file size (default 1024)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of each (default 3)")
    parser.add_argument("--part-size-mib", type=int, default=64, help="S3 part size for the ETag (default 64)")
    parser.add_argument("--file", type=Path, help="use this file instead of bench/results/checksum-<size>MiB.bin")
    args = parser.parse_args()

    path = args.file or RESULTS_DIR / f"checksum-{args.size_mib}MiB.bin"
    if args.file is None:
        ensure_file(path, args.size_mib * MIB)
    size_mib = path.stat().st_size / MIB
    part_size = args.part_size_mib * MIB
    warm(path)

    print(f"file {path} ({size_mib:.0f} MiB), part size {args.part_size_mib} MiB, {os.cpu_count()} CPUs")
    rates: dict[str, list[float]] = {"md5sum": [], "checksum_file": []}
    for round_no in range(1, args.rounds + 1):
        md5sum_seconds, md5sum_hex = time_md5sum(path)
        checksum_seconds, checksum_hex = time_checksum(path, part_size)
        if md5sum_hex != checksum_hex:
            print(f"MISMATCH: md5sum {md5sum_hex} != checksum_file {checksum_hex}")
            return 1
        rates["md5sum"].append(size_mib / md5sum_seconds)
        rates["checksum_file"].append(size_mib / checksum_seconds)
        print(
            f"round {round_no}: md5sum {rates['md5sum'][-1]:6.0f} MiB/s   "
            f"checksum_file {rates['checksum_file'][-1]:6.0f} MiB/s"
        )

    reference = statistics.median(rates["md5sum"])
    ours = statistics.median(rates["checksum_file"])
    ratio = ours / reference
    print(f"median: md5sum {reference:.0f} MiB/s, checksum_file {ours:.0f} MiB/s, ratio {ratio:.2f}")
    verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
    print(f"target checksum_file >= {TARGET_RATIO} x md5sum: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
