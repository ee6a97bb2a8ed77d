"""rawvault's uploader against ``aws s3 cp`` and boto3 ``upload_file``: same S3 server, same files, same run.

Run from the repository root:  .venv/bin/python bench/bench_upload.py [--rounds 3] [--part-size-mib 64]

Starts moto's S3 server, creates (or reuses) one 1 GiB file and a set of 200 files of 1 MiB under
bench/results/, reads them once into the page cache, then uploads each workload with every client
in turn, for ``--rounds`` alternating rounds (the objects are deleted between uploads). Each client
runs as a process of its own: wall time, CPU time (user + system) and peak RSS come from the
kernel's accounting of that process (start-up included, for every client alike). All clients use
the same part size and the same number of parallel requests (``--concurrency``).

Reports the medians, CPU seconds per GiB, and the ratios rawvault / aws CLI, with the targets of
issue 16: client CPU per GiB <= 1.0x ``aws s3 cp`` at equal part size; the 200-file set no slower
than ``aws s3 cp --recursive`` (wall ratio <= 1.0); peak RSS < 300 MB with 8 parts of 64 MiB in
flight. The exit status is 0 either way: this reports, it does not assert.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from _common import (
    GIB,
    MIB,
    RESULTS_DIR,
    Measured,
    load_average,
    median,
    ratio,
    repository_environment,
    run_measured,
    use_repository_imports,
    warm,
    write_random,
)

use_repository_imports()

from devtools.servers import LOCAL_S3_KEY, LOCAL_S3_REGION, S3Server, local_s3_client  # noqa: E402
from rawvault.checksum import checksum_file  # noqa: E402

CLIENTS = ("rawvault", "aws", "boto3")
BUCKET = "rv-bench-upload"
RSS_TARGET = 300 * 1000 * 1000


def _workloads(
    folder: Path, part_size: int, big_mib: int, files: int, only: str | None = None
) -> dict[str, tuple[Path, dict[str, list]]]:
    """``{name: (root, file_info)}`` of the one large file and the set of small files (``only``: one of them)."""
    chosen = []
    if only in (None, "big"):
        big = write_random(folder / "big" / f"big-{big_mib}MiB.bin", big_mib * MIB, 1)
        chosen.append((f"1 file of {big_mib} MiB", big.parent))
    if only in (None, "set"):
        small_root = folder / f"set-{files}x1MiB"
        for n in range(files):
            write_random(small_root / f"file-{n:03d}.bin", MIB, 1000 + n)
        chosen.append((f"{files} files of 1 MiB", small_root))
    workloads = {}
    for name, root in chosen:
        paths = sorted(path for path in root.iterdir() if path.is_file() and not path.name.endswith(".partial"))
        warm(paths)
        info = {path.name: checksum_file(path, part_size).as_list() for path in paths}
        workloads[name] = (root, info)
    return workloads


def _aws_config(folder: Path, part_size: int, concurrency: int) -> Path:
    config = folder / "aws-config"
    config.write_text(
        "[default]\n"
        f"region = {LOCAL_S3_REGION}\n"
        "s3 =\n"
        f"  multipart_threshold = {part_size + 1}\n"
        f"  multipart_chunksize = {part_size}\n"
        f"  max_concurrent_requests = {concurrency}\n"
    )
    return config


def _command(client: str, endpoint: str, root: Path, info_file: Path, prefix: str, args: argparse.Namespace) -> list:
    if client == "aws":
        source = str(root / next(iter(json.loads(info_file.read_text())))) if args.single else str(root)
        command = [args.aws, "s3", "cp", source, f"s3://{BUCKET}/{prefix}", "--endpoint-url", endpoint]
        return [*command, "--only-show-errors", *(["--recursive"] if not args.single else [])]
    script = Path(__file__).with_name("upload_client.py")
    return [sys.executable, str(script), client, "--endpoint", endpoint, "--bucket", BUCKET, "--prefix", prefix,
            "--root", str(root), "--file-info", str(info_file), "--part-size", str(args.part_size),
            "--concurrency", str(args.concurrency)]  # fmt: skip


def _empty_bucket(s3: object) -> None:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)  # type: ignore[attr-defined]
    for page in pages:
        for item in page.get("Contents", []):
            s3.delete_object(Bucket=BUCKET, Key=item["Key"])  # type: ignore[attr-defined]


def _run_workload(
    name: str, root: Path, info: dict[str, list], server: S3Server, scratch: Path, args: argparse.Namespace
) -> dict[str, list[Measured]]:
    s3 = local_s3_client(server.endpoint_url)
    info_file = scratch / "file-info.json"
    info_file.write_text(json.dumps(info))
    args.single = len(info) == 1
    env = repository_environment(
        {"AWS_ACCESS_KEY_ID": LOCAL_S3_KEY, "AWS_SECRET_ACCESS_KEY": LOCAL_S3_KEY,
         "AWS_CONFIG_FILE": str(_aws_config(scratch, args.part_size, args.concurrency))}
    )  # fmt: skip
    runs: dict[str, list[Measured]] = {client: [] for client in CLIENTS}
    for round_no in range(1, args.rounds + 1):
        for client in CLIENTS:
            _empty_bucket(s3)
            measured = run_measured(_command(client, server.endpoint_url, root, info_file, "x/", args), env)
            runs[client].append(measured)
            print(f"  {name}, round {round_no}: {client:8s} {measured.wall:6.1f} s wall, {measured.cpu:5.2f} s CPU, "
                  f"{measured.peak_rss / 1e6:5.0f} MB peak RSS", flush=True)  # fmt: skip
    _empty_bucket(s3)
    return runs


def _report(name: str, size: int, runs: dict[str, list[Measured]], args: argparse.Namespace) -> dict:
    gib = size / GIB
    rows = {
        client: {
            "wall_s": median([m.wall for m in measured]),
            "cpu_s_per_gib": median([m.cpu for m in measured]) / gib,
            "peak_rss_mb": max(m.peak_rss for m in measured) / 1e6,
        }
        for client, measured in runs.items()
    }
    print(f"\n{name} ({size / MIB:.0f} MiB), part size {args.part_size // MIB} MiB, {args.concurrency} parallel "
          f"requests, medians of {args.rounds} rounds:")  # fmt: skip
    print("| client | wall | client CPU per GiB | peak RSS | wall ratio (rawvault / this) | CPU ratio |")
    print("|---|---|---|---|---|---|")
    for client, row in rows.items():
        print(f"| {client} | {row['wall_s']:.1f} s | {row['cpu_s_per_gib']:.2f} s | {row['peak_rss_mb']:.0f} MB | "
              f"{ratio(rows['rawvault']['wall_s'], row['wall_s']):.2f} | "
              f"{ratio(rows['rawvault']['cpu_s_per_gib'], row['cpu_s_per_gib']):.2f} |")  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per client (default 3)")
    parser.add_argument("--part-size-mib", type=int, default=64, help="part size of every client (default 64)")
    parser.add_argument("--concurrency", type=int, default=8, help="parallel requests of every client (default 8)")
    parser.add_argument("--big-mib", type=int, default=1024, help="size of the large file (default 1024)")
    parser.add_argument("--files", type=int, default=200, help="files of 1 MiB in the set (default 200)")
    parser.add_argument("--aws", default=shutil.which("aws") or "aws", help="the aws CLI (default: from PATH)")
    parser.add_argument("--only", choices=["big", "set"], help="only the large file or only the set of small files")
    args = parser.parse_args()
    args.part_size = args.part_size_mib * MIB
    print(f"load average before: {load_average()} ({os.cpu_count()} CPUs)")
    workloads = _workloads(RESULTS_DIR / "upload", args.part_size, args.big_mib, args.files, args.only)
    results = {}
    with S3Server() as server, tempfile.TemporaryDirectory(prefix="rawvault-bench-") as scratch:
        local_s3_client(server.endpoint_url).create_bucket(Bucket=BUCKET)  # type: ignore[attr-defined]
        for name, (root, info) in workloads.items():
            runs = _run_workload(name, root, info, server, Path(scratch), args)
            size = sum(entry[0] for entry in info.values())
            results[name] = _report(name, size, runs, args)
    _targets(results, args)
    print(f"load average after: {load_average()}")
    (RESULTS_DIR / "bench_upload.json").write_text(json.dumps(results, indent=2))
    return 0


def _targets(results: dict[str, dict], args: argparse.Namespace) -> None:
    big = next((row for name, row in results.items() if name.startswith("1 file")), None)
    small = next((row for name, row in results.items() if not name.startswith("1 file")), None)
    print("\ntargets:")
    if big is not None:
        cpu = ratio(big["rawvault"]["cpu_s_per_gib"], big["aws"]["cpu_s_per_gib"])
        print(f"- client CPU per GiB, large file: {cpu:.2f} x aws s3 cp (target <= 1.0): "
              f"{'met' if cpu <= 1 else 'NOT met'}")  # fmt: skip
    if small is not None:
        wall = ratio(small["rawvault"]["wall_s"], small["aws"]["wall_s"])
        print(f"- wall, {args.files} files: {wall:.2f} x aws s3 cp --recursive (target <= 1.0): "
              f"{'met' if wall <= 1 else 'NOT met'}")  # fmt: skip
    if big is not None:
        rss = big["rawvault"]["peak_rss_mb"] * 1e6
        print(f"- peak RSS, large file with {args.concurrency} parts of {args.part_size_mib} MiB in flight: "
              f"{rss / 1e6:.0f} MB (target < 300 MB): {'met' if rss < RSS_TARGET else 'NOT met'}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
