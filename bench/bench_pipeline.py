"""Acquisition finished -> ``upload_done`` through rawvault's pipeline, against md5sum + cp + md5sum + aws s3 cp.

Run from the repository root, as root (it mounts a loop device):
    .venv/bin/python bench/bench_pipeline.py [--thermo-mib 1024] [--bruker-mib 256] [--rounds 3]

The instrument folders live on an ext4 of their own on a loop device (the "share"); the backup on
the ordinary disk. For a Thermo file and a Bruker set it times, in alternating rounds:

- **rawvault**: ``compute_checksum`` (one read of the share: size, MD5, ETag and the staged copy),
  ``copy_raw_file`` (verify the staged copy on the backup disk, publish it), ``upload_to_s3``
  (check, upload, verify, manifest, ``upload_done``): the pipeline functions, with the MongoDB wire
  server (SecantusDB) and moto's S3 server;
- **reference**: ``md5sum`` of the files on the share, ``cp`` to a backup folder (plus ``sync`` of
  the copies: rawvault fsyncs its copy), ``md5sum`` of the copies, ``aws s3 cp`` to the same server.

Before every step of either chain the page cache holds none of the share's or the backup's files
(fsync, then ``POSIX_FADV_DONTNEED``): a worker with less RAM than a 50 GB acquisition has none of
it cached either, so every read reaches the device. The loop device's sysfs counters give the bytes
read from the share per byte of raw data. Reports medians, the wall-time ratio rawvault / reference
(target <= 1.2) and the share bytes per raw byte (target 1.0). The exit status is 0 either way.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from _common import (
    MIB,
    RESULTS_DIR,
    load_average,
    median,
    ratio,
    repository_environment,
    run_measured,
    use_repository_imports,
)

use_repository_imports()

from devtools.block_devices import LoopFileSystem, can_mount, evict, loop_filesystem  # noqa: E402
from devtools.demo_data import make_bruker, make_thermo  # noqa: E402
from devtools.servers import LOCAL_S3_KEY, LOCAL_S3_REGION, MongoServer, S3Server  # noqa: E402

BUCKET_PREFIX = "rv-bench"
BUCKET = f"{BUCKET_PREFIX}-fallback"  # no project matches the names: the fallback project's bucket
WALL_TARGET = 1.2


@dataclass
class Chain:
    """One run of a chain on one raw file: seconds and CPU seconds per step, bytes read from the share."""

    steps: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    share_read: int = 0

    @property
    def wall(self) -> float:
        return sum(self.steps.values())


@dataclass
class Bench:
    """What every chain needs: the share, the settings, the clients, the folders."""

    share: LoopFileSystem
    work: Path
    settings: object
    s3_client: object
    endpoint: str
    mongo_base: str
    aws: str
    aws_env: dict[str, str]

    def cold(self) -> None:
        """Nothing of the share or the backups in the page cache (not timed)."""
        self.share.settle()
        for folder in (self.work / "backup", self.work / "reference-backup"):
            if folder.exists():
                evict(path for path in folder.rglob("*") if path.is_file())

    def fresh_database(self, name: str) -> None:
        """A new MongoDB database: the raw files are registered anew for each round."""
        from shared.db.interface import reset_connection

        os.environ["RAWVAULT_MONGO_URI"] = f"{self.mongo_base}/{name}?directConnection=true"
        reset_connection()

    def empty_bucket(self) -> None:
        for page in self.s3_client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):  # type: ignore[attr-defined]
            for item in page.get("Contents", []):
                self.s3_client.delete_object(Bucket=BUCKET, Key=item["Key"])  # type: ignore[attr-defined]


def _settings_file(work: Path, share: Path, part_size_mib: int, concurrency: int) -> Path:
    raw = {
        "instruments": {
            "thermo1": {"type": "thermo", "path": str(share / "thermo1")},
            "tims1": {"type": "bruker", "path": str(share / "tims1")},
        },
        "locations": {"backup": str(work / "backup")},
        "watcher": {"fallback_project_id": "_FALLBACK"},
        "file_mover": {"delay_minutes": -1},
        "backup": {
            "backup_type": "s3",
            "s3": {"region": LOCAL_S3_REGION, "bucket_prefix": BUCKET_PREFIX, "part_size_mb": part_size_mib,
                   "max_concurrency": concurrency, "auto_create_buckets": False},
        },
    }  # fmt: skip
    path = work / "rawvault.bench.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rawvault_chain(bench: Bench, instrument_id: str, round_no: int) -> Chain:
    """compute_checksum, copy_raw_file, upload_to_s3 of the instrument's acquisition, cold cache before each."""
    from rawvault import pipeline
    from rawvault.backup import upload_raw_file
    from rawvault.watcher import register_new_raw_files
    from shared.db.interface import get_raw_file

    bench.fresh_database(f"bench_{instrument_id}_{round_no}")
    (raw_file_id,) = register_new_raw_files(instrument_id, bench.settings)  # type: ignore[arg-type]
    steps: dict[str, Callable[[], object]] = {
        "compute_checksum": lambda: pipeline.checksum_raw_file(raw_file_id, bench.settings),  # type: ignore[arg-type]
        "copy_raw_file": lambda: pipeline.copy_to_local_backup(raw_file_id, bench.settings),  # type: ignore[arg-type]
        "upload_to_s3": lambda: upload_raw_file(
            raw_file_id,
            bench.settings,
            client=bench.s3_client,
            progress_interval=3600,  # type: ignore[arg-type]
        ),
    }
    chain = Chain()
    before = bench.share.counters()
    for name, step in steps.items():
        bench.cold()
        cpu, started = _cpu_seconds(), time.perf_counter()
        step()
        chain.steps[name], chain.cpu[name] = time.perf_counter() - started, _cpu_seconds() - cpu
    chain.share_read = (bench.share.counters() - before).read_bytes
    raw_file = get_raw_file(raw_file_id)
    assert raw_file.backup_status == "upload_done", raw_file.backup_status_details
    shutil.rmtree(bench.work / "backup")
    bench.empty_bucket()
    return chain


def reference_chain(bench: Bench, source: Path) -> Chain:
    """md5sum, cp (+ sync of the copies), md5sum of the copies, aws s3 cp; cold cache before each."""
    target_root = bench.work / "reference-backup"
    target = target_root / source.name
    target_root.mkdir(parents=True, exist_ok=True)

    def files(root: Path) -> list[str]:
        return [str(root)] if root.is_file() else sorted(str(p) for p in root.rglob("*") if p.is_file())

    aws = [bench.aws, "s3", "cp", str(target), f"s3://{BUCKET}/reference/{source.name}", "--endpoint-url",
           bench.endpoint, "--only-show-errors", *(["--recursive"] if source.is_dir() else [])]  # fmt: skip
    steps = {
        "md5sum share": lambda: [run_measured(["md5sum", *files(source)])],
        "cp + sync": lambda: [
            run_measured(["cp", "-r", "--preserve=timestamps", str(source), str(target_root)]),
            run_measured(["sync", *files(target)]),
        ],
        "md5sum copy": lambda: [run_measured(["md5sum", *files(target)])],
        "aws s3 cp": lambda: [run_measured(aws, bench.aws_env)],
    }
    chain = Chain()
    before = bench.share.counters()
    for name, step in steps.items():
        bench.cold()
        measured = step()
        chain.steps[name] = sum(m.wall for m in measured)
        chain.cpu[name] = sum(m.cpu for m in measured)
    chain.share_read = (bench.share.counters() - before).read_bytes
    shutil.rmtree(target_root)
    bench.empty_bucket()
    return chain


def _report(name: str, size: int, ours: list[Chain], reference: list[Chain]) -> dict:
    def steps(chains: list[Chain]) -> dict[str, float]:
        return {step: median([c.steps[step] for c in chains]) for step in chains[0].steps}

    result = {
        "size_bytes": size,
        "rawvault_s": median([c.wall for c in ours]),
        "reference_s": median([c.wall for c in reference]),
        "rawvault_cpu_s": median([sum(c.cpu.values()) for c in ours]),
        "reference_cpu_s": median([sum(c.cpu.values()) for c in reference]),
        "rawvault_share_bytes_per_byte": median([c.share_read / size for c in ours]),
        "reference_share_bytes_per_byte": median([c.share_read / size for c in reference]),
        "rawvault_steps_s": steps(ours),
        "reference_steps_s": steps(reference),
    }
    result["wall_ratio"] = ratio(result["rawvault_s"], result["reference_s"])
    print(f"\n{name} ({size / MIB:.0f} MiB), medians of {len(ours)} rounds:")
    print("| chain | steps | wall | CPU | share bytes read per raw byte |")
    print("|---|---|---|---|---|")
    for label, prefix in (("rawvault", "rawvault"), ("md5sum + cp + md5sum + aws s3 cp", "reference")):
        detail = ", ".join(f"{step} {seconds:.1f} s" for step, seconds in result[f"{prefix}_steps_s"].items())
        print(f"| {label} | {detail} | {result[f'{prefix}_s']:.1f} s | {result[f'{prefix}_cpu_s']:.1f} s | "
              f"{result[f'{prefix}_share_bytes_per_byte']:.3f} |")  # fmt: skip
    print(f"wall ratio rawvault / reference: {result['wall_ratio']:.2f} (target <= {WALL_TARGET}: "
          f"{'met' if result['wall_ratio'] <= WALL_TARGET else 'NOT met'}); share reads per byte "
          f"{result['rawvault_share_bytes_per_byte']:.3f} (target 1.0, reference "
          f"{result['reference_share_bytes_per_byte']:.3f})")  # fmt: skip
    return result


def _acquisitions(share: Path, thermo_mib: int, bruker_mib: int) -> dict[str, tuple[str, Path, int]]:
    thermo = make_thermo(share / "thermo1", "20261130_bench_thermo.raw", thermo_mib * MIB, seed=11)
    bruker = make_bruker(share / "tims1", "20261130_bench_tims.d", main_size=bruker_mib * MIB, seed=12)
    bruker_size = sum(p.stat().st_size for p in bruker.rglob("*") if p.is_file())
    return {
        f"Thermo .raw, {thermo_mib} MiB": ("thermo1", thermo, thermo.stat().st_size),
        f"Bruker .d, {bruker_mib} MiB main file": ("tims1", bruker, bruker_size),
    }


def run(args: argparse.Namespace, work: Path) -> dict:
    """Start the servers, mount the share, run the rounds; the results per acquisition."""
    import boto3

    from rawvault.s3.client import client_config
    from shared.settings import get_settings

    share_size = int((args.thermo_mib + args.bruker_mib) * MIB * 1.15) + 256 * MIB
    results = {}
    with MongoServer() as mongo, S3Server() as s3_server, loop_filesystem(work / "share", share_size, work) as share:
        acquisitions = _acquisitions(share.mount_point, args.thermo_mib, args.bruker_mib)
        os.environ["RAWVAULT_CONFIG"] = str(_settings_file(work, share.mount_point, args.part_size_mib,
                                                           args.concurrency))  # fmt: skip
        get_settings.cache_clear()
        client = boto3.client("s3", endpoint_url=s3_server.endpoint_url, aws_access_key_id=LOCAL_S3_KEY,
                              aws_secret_access_key=LOCAL_S3_KEY, region_name=LOCAL_S3_REGION,
                              config=client_config(2 * args.concurrency + 4))  # fmt: skip
        client.create_bucket(Bucket=BUCKET)
        aws_config = work / "aws-config"
        chunk, parallel = args.part_size_mib * MIB, args.concurrency
        aws_config.write_text(
            f"[default]\nregion = {LOCAL_S3_REGION}\ns3 =\n  multipart_chunksize = {chunk}\n"
            f"  max_concurrent_requests = {parallel}\n"
        )
        aws_env = {"AWS_ACCESS_KEY_ID": LOCAL_S3_KEY, "AWS_SECRET_ACCESS_KEY": LOCAL_S3_KEY}
        aws_env["AWS_CONFIG_FILE"] = str(aws_config)
        mongo_base = mongo.uri.split("/rawvault")[0]
        bench = Bench(share, work, get_settings(), client, s3_server.endpoint_url, mongo_base, args.aws,
                      repository_environment(aws_env))  # fmt: skip
        for name, (instrument_id, source, size) in acquisitions.items():
            ours: list[Chain] = []
            reference: list[Chain] = []
            for round_no in range(1, args.rounds + 1):
                order = ("rawvault", "reference") if round_no % 2 else ("reference", "rawvault")
                for chain in order:
                    if chain == "rawvault":
                        ours.append(rawvault_chain(bench, instrument_id, round_no))
                    else:
                        reference.append(reference_chain(bench, source))
                print(f"  {name}, round {round_no}: rawvault {ours[-1].wall:.1f} s "
                      f"({ours[-1].share_read / size:.3f} share bytes per byte), reference {reference[-1].wall:.1f} s "
                      f"({reference[-1].share_read / size:.3f})", flush=True)  # fmt: skip
            results[name] = _report(name, size, ours, reference)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--thermo-mib", type=int, default=1024, help="size of the Thermo file (default 1024)")
    parser.add_argument("--bruker-mib", type=int, default=256, help="size of the Bruker main file (default 256)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--part-size-mib", type=int, default=64, help="backup.s3.part_size_mb (default 64)")
    parser.add_argument("--concurrency", type=int, default=8, help="parallel requests of both uploaders (default 8)")
    parser.add_argument("--aws", default=shutil.which("aws") or "aws", help="the aws CLI (default: from PATH)")
    args = parser.parse_args()
    if not can_mount():
        print("bench_pipeline.py needs root (it puts the instrument folders on a loop device)", file=sys.stderr)
        return 2
    subprocess.run([args.aws, "--version"], check=True, capture_output=True)
    print(f"load average before: {load_average()} ({os.cpu_count()} CPUs)", flush=True)
    work = RESULTS_DIR / "pipeline"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        results = run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average after: {load_average()}")
    (RESULTS_DIR / "bench_pipeline.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
