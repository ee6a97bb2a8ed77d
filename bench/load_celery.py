"""
Load run with faults through the Celery stack: N acquisitions on 3 instruments, every one must end final.

Run from the repository root:  .venv/bin/python bench/load_celery.py [--acquisitions 50] [--keep]

Starts the stack of the Celery end-to-end test (MongoDB and S3 servers, Redis,
PostgreSQL, scheduler, dag-processor, api-server, and the deployment's workers:
instruments + file mover, ``s3_uploader``, ``rawvault_maintenance``), with S3
behind a TCP proxy (``devtools.proxy``) and every schedule at one minute. It
writes the acquisitions (Thermo, Bruker and Sciex; some still growing) and
injects, one after the other, each at the moment it hurts:

1. **a share outage**: the Bruker instrument folder disappears for 90 s while
   its acquisitions are monitored (an instrument PC rebooting);
2. **an acquisition deleted while monitored** (a permanent failure);
3. **an S3 outage window**: the proxy refuses every connection for 60 s while
   uploads run;
4. **a killed upload worker**: the ``s3_uploader`` worker and its task
   processes are SIGKILLed mid-upload and started again 15 s later.

Then it waits until every raw file is final: ``upload_done`` (verified in
S3), or ``status=error`` for a permanent cause, or ``upload_failed`` given up;
none may stay in an intermediate state. It prints the wall time, the task
runs and retries (from the metadata DB), the re-drives and the upload
attempts, and exits 1 when an acquisition did not end as expected.
Measured figures are in ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "airflow_src" / "plugins")]

import yaml  # noqa: E402

from bench.load_report import all_final, check_outcome, final_state, metadata_figures, report  # noqa: E402
from devtools.celery_stack import (  # noqa: E402
    CeleryStack,
    kill_worker,
    rawvault_workers,
    restart_worker,
    start_celery_stack,
    stop_celery_stack,
)
from devtools.demo_data import KIB, MIB, write_bytes  # noqa: E402
from devtools.local_stack import StackPaths, StackState, start_data_servers  # noqa: E402
from devtools.proxy import TcpProxy  # noqa: E402
from devtools.servers import free_port  # noqa: E402
from rawvault import keys  # noqa: E402
from shared.db import interface  # noqa: E402
from shared.db.models import RawFile  # noqa: E402
from shared.settings import Settings, load_settings  # noqa: E402

INSTRUMENTS = {"thermo1": "thermo", "tims1": "bruker", "zeno1": "sciex"}
SHARE_DOWN = "tims1"  # the instrument whose share goes away
PREFIX = "load_"
SHARE_OUTAGE_SECONDS = 90
S3_OUTAGE_SECONDS = 60
WORKER_DOWN_SECONDS = 15
THROTTLE_BYTES_PER_SECOND = 3 * MIB  # uploads take seconds, so faults meet them mid-way
LATE_ACQUISITIONS = 6


def write_settings(root: Path) -> Settings:
    """The load run's settings: 3 instruments, S3, one-minute schedules, short retries, leases and backoffs."""
    shares = root / "instruments"
    raw = {
        "instruments": {iid: {"type": kind, "path": str(shares / iid)} for iid, kind in INSTRUMENTS.items()},
        "locations": {"backup": str(root / "backup")},
        "acquisition": {"poke_interval_seconds": 3, "size_stable_seconds": 4, "timeout_hours": 1,
                        "redrive_schedule": "* * * * *", "max_redrives": 4, "redrive_delay_minutes": 0.5},
        "watcher": {"schedule": "* * * * *"},
        "file_mover": {"delay_minutes": 0},
        "airflow": {"queue_prefix": PREFIX, "task_retries": 1, "retry_delay_minutes": 0.2},
        "backup": {"backup_type": "s3", "deadline_hours": 24, "s3": {
            "region": "us-east-1", "bucket_prefix": "rv-load", "part_size_mb": 5, "auto_create_buckets": True,
            "max_concurrency": 2, "upload_retries": 1, "upload_retry_delay_minutes": 1, "stale_upload_minutes": 0.5,
            "sweep_schedule": "* * * * *", "max_upload_attempts": 8}},
    }  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    path = root / "rawvault.load.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    settings = load_settings(path)
    for instrument in settings.instruments.values():
        instrument.path.mkdir(parents=True, exist_ok=True)
    return settings


# ---------------------------------------------------------------- acquisitions


@dataclass
class Acquisition:
    """One acquisition on a share: its name, the instrument, and how it is written."""

    instrument_id: str
    name: str
    size: int
    growing: bool = False  # written in steps over 300 s, after the others (the newest, still acquiring)
    vanishes: bool = False  # deleted while monitored
    late: bool = False  # written after the S3 outage, so uploads run when the upload worker is killed
    deleted: bool = False

    def main_file(self, share: Path) -> Path:
        kind = INSTRUMENTS[self.instrument_id]
        if kind == "bruker":
            return share / self.name / "analysis.tdf_bin"
        return share / self.name


def plan_acquisitions(count: int, seed: int = 7) -> list[Acquisition]:
    """``count`` acquisitions round-robin over the instruments, sizes 100 KiB to 12 MiB.

    As on a real instrument, only the newest acquisition of an instrument is still growing (a newer one ends
    the monitor's wait for the older ones): one Bruker acquisition (monitored when its share goes away) and
    one Sciex acquisition (deleted while monitored).
    """
    rng = random.Random(seed)
    suffix = {"thermo": ".raw", "bruker": ".d", "sciex": ".wiff"}
    plan = []
    for n in range(count):
        instrument_id = list(INSTRUMENTS)[n % len(INSTRUMENTS)]
        name = f"20261122_{instrument_id}_load{n:03d}{suffix[INSTRUMENTS[instrument_id]]}"
        size = rng.choice([100 * KIB, 700 * KIB, 3 * MIB, 6 * MIB, 12 * MIB])
        plan.append(Acquisition(instrument_id, name, size))
    next(a for a in plan if a.instrument_id == SHARE_DOWN).growing = True
    zeno = [a for a in plan if a.instrument_id == "zeno1"]
    zeno[0].growing = zeno[0].vanishes = True
    for acquisition in [a for a in plan if not a.growing][-LATE_ACQUISITIONS:]:
        acquisition.late = True
    return plan


def write_finished(acquisition: Acquisition, share: Path, seed: int) -> None:
    """Write a finished acquisition's files (Bruker: a .d with side files; Sciex: .wiff and siblings)."""
    main = acquisition.main_file(share)
    write_bytes(main, acquisition.size, seed=seed)
    if INSTRUMENTS[acquisition.instrument_id] == "bruker":
        write_bytes(main.parent / "analysis.tdf", 64 * KIB, seed=seed + 1)
    elif INSTRUMENTS[acquisition.instrument_id] == "sciex":
        write_bytes(main.with_name(main.name + ".scan"), 32 * KIB, seed=seed + 1)


class Writer(threading.Thread):
    """Appends to growing acquisitions in steps (an instrument acquiring); pauses while their share is down."""

    def __init__(self, acquisitions: list[Acquisition], settings: Settings, seconds: float = 300) -> None:
        super().__init__(daemon=True, name="acquisition-writer")
        self.acquisitions, self.settings, self.seconds = acquisitions, settings, seconds
        self.paused = threading.Event()
        self.done = threading.Event()

    def run(self) -> None:
        steps = int(self.seconds)
        for step in range(1, steps + 1):
            while self.paused.is_set():
                time.sleep(0.5)
            for acquisition in self.acquisitions:
                if acquisition.deleted:
                    continue
                main = acquisition.main_file(self.settings.instruments[acquisition.instrument_id].path)
                wanted = acquisition.size * step // steps
                main.parent.mkdir(parents=True, exist_ok=True)
                with main.open("ab") as stream:
                    stream.write(random.randbytes(max(0, wanted - stream.tell())))
            time.sleep(1)
        self.done.set()


# ---------------------------------------------------------------- faults


def wait_for(what: str, probe: Any, timeout: float, stack: CeleryStack) -> Any:
    """Poll ``probe`` every second until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.check_alive()
        value = probe()
        if value:
            return value
        time.sleep(1)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def count(**query: Any) -> int:
    return RawFile.objects(**query).count()


@dataclass
class Faults:
    """When each fault happened (seconds after the start)."""

    log: list[str] = field(default_factory=list)
    start: float = field(default_factory=time.monotonic)

    def note(self, text: str) -> None:
        line = f"{time.monotonic() - self.start:6.0f} s  {text}"
        self.log.append(line)
        print(line, flush=True)


def share_outage(settings: Settings, writer: Writer, stack: CeleryStack, faults: Faults) -> None:
    """The Bruker share disappears while its acquisitions are monitored, then comes back."""
    wait_for("a Bruker acquisition being monitored", lambda: count(
        instrument_id=SHARE_DOWN, status="monitoring_acquisition"), 900, stack)  # fmt: skip
    share = settings.instruments[SHARE_DOWN].path
    away = share.with_name(share.name + ".unmounted")
    writer.paused.set()
    share.rename(away)
    faults.note(f"share outage: {share} gone for {SHARE_OUTAGE_SECONDS} s")
    time.sleep(SHARE_OUTAGE_SECONDS)
    away.rename(share)
    writer.paused.clear()
    faults.note("share back")


def vanish(plan: list[Acquisition], settings: Settings, stack: CeleryStack, faults: Faults) -> None:
    """Delete the acquisition marked ``vanishes`` once it is registered (monitored)."""
    for acquisition in (a for a in plan if a.vanishes):
        wait_for(f"{acquisition.name} to be registered", lambda a=acquisition: count(id=a.name), 900, stack)
        acquisition.deleted = True
        time.sleep(2)  # the writer's step in flight ends first
        main = acquisition.main_file(settings.instruments[acquisition.instrument_id].path)
        for path in main.parent.glob(main.name + "*"):
            path.unlink()
        faults.note(f"deleted {acquisition.name} while it was monitored")


def s3_outage(proxy: TcpProxy, stack: CeleryStack, faults: Faults) -> None:
    """S3 refuses every connection for a while, with uploads running."""
    wait_for("an upload in progress", lambda: count(backup_status="upload_in_progress"), 900, stack)
    proxy.stop()
    faults.note(f"S3 outage: the proxy refuses connections for {S3_OUTAGE_SECONDS} s")
    time.sleep(S3_OUTAGE_SECONDS)
    proxy.start()
    faults.note("S3 back")


def kill_upload_worker(stack: CeleryStack, faults: Faults) -> None:
    """SIGKILL the s3_uploader worker (and its task processes) mid-upload; start it again."""
    wait_for("an upload in progress", lambda: count(backup_status="upload_in_progress"), 900, stack)
    (worker,) = [w for w in stack.workers if w.name == "s3"]
    killed = kill_worker(stack, worker, signal.SIGKILL)
    faults.note(f"killed the upload worker ({killed} processes) with {count(backup_status='upload_in_progress')} "
                "upload(s) in progress")  # fmt: skip
    time.sleep(WORKER_DOWN_SECONDS)
    restart_worker(stack, worker)
    faults.note("upload worker started again")


# ---------------------------------------------------------------- the run


def run_scenario(stack: CeleryStack, settings: Settings, proxy: TcpProxy, plan: list[Acquisition]) -> Faults:
    """Write the acquisitions, start the watchers, inject the faults in order."""
    faults = Faults()
    write_wave(stack, settings, plan, late=False, trigger=False)
    time.sleep(1.1)  # the growing ones are newer (modification time) than every finished one
    writer = Writer([a for a in plan if a.growing], settings)
    writer.start()
    time.sleep(2)
    write_wave(stack, settings, plan, late=False, write=False)
    faults.note(f"{sum(not a.late for a in plan)} acquisitions written or growing, watchers triggered")
    vanish(plan, settings, stack, faults)
    share_outage(settings, writer, stack, faults)
    s3_outage(proxy, stack, faults)
    write_wave(stack, settings, plan, late=True)
    faults.note(f"{sum(a.late for a in plan)} more acquisitions written, watchers triggered")
    kill_upload_worker(stack, faults)
    return faults


def write_wave(
    stack: CeleryStack,
    settings: Settings,
    plan: list[Acquisition],
    *,
    late: bool,
    write: bool = True,
    trigger: bool = True,
) -> None:
    """Write the finished acquisitions of one wave, then trigger every watcher (they also run each minute)."""
    for seed, acquisition in enumerate(plan):
        if write and acquisition.late == late and not acquisition.growing:
            write_finished(acquisition, settings.instruments[acquisition.instrument_id].path, seed)
    for instrument_id in settings.instruments if trigger else ():
        stack.api.post(f"/api/v2/dags/{keys.watcher_dag_id(instrument_id)}/dagRuns", {"logical_date": None})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--acquisitions", type=int, default=50)
    parser.add_argument("--timeout-minutes", type=float, default=40)
    parser.add_argument("--keep", action="store_true", help="keep the run folder (logs) afterwards")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="rawvault-load-"))
    paths = StackPaths(root / "run")
    proxy = None
    keep = args.keep
    try:
        mongo, s3_server = start_data_servers(paths)
        proxy = TcpProxy(s3_server.port).start()
        proxy.throttle(THROTTLE_BYTES_PER_SECOND)
        settings = write_settings(root / "env")
        interface.connect_db(mongo.uri)
        state = StackState(mongo_uri=mongo.uri, s3_endpoint=proxy.endpoint_url, api_port=free_port())
        tuning = {
            "RAWVAULT_CONFIG": str(settings.source),
            # Find dead tasks and lost queued tasks in seconds, not Airflow's 5 and 10 minutes.
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "120",
        }
        started = time.monotonic()
        workers = rawvault_workers(settings, instrument_concurrency=6, s3_concurrency=2, maintenance_concurrency=2)
        stack = start_celery_stack(paths, state, rawvault_env=tuning, workers=workers, pools={keys.S3_UPLOAD_POOL: 2})
        print(f"stack ready in {time.monotonic() - started:.0f} s ({root})", flush=True)
        plan = plan_acquisitions(args.acquisitions)
        begin = time.monotonic()
        faults = run_scenario(stack, settings, proxy, plan)
        wait_for("every acquisition to end final", lambda: all_final(len(plan)), args.timeout_minutes * 60, stack)
        wall = time.monotonic() - begin
        report(len(INSTRUMENTS), faults.log, wall, metadata_figures(stack))
        expected = {a.name: "error (permanent)" if a.vanishes else "upload_done" for a in plan}
        problems = check_outcome(expected, s3_server.endpoint_url)
        print("\n".join(["", "PROBLEMS:", *problems]) if problems else "\nevery acquisition ended as expected")
        keep = keep or bool(problems)
        return 1 if problems else 0
    except TimeoutError as error:
        states = Counter(final_state(r) or f"not final: {r.status}/{r.backup_status}" for r in RawFile.objects)
        print(f"FAILED: {error}; states: {dict(states)}; logs kept in {paths.logs}", file=sys.stderr)
        keep = True
        return 1
    finally:
        if proxy is not None:
            proxy.stop()
        stop_celery_stack(paths)
        interface.reset_connection()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
