"""Fault suite: crashes, restarts, races and a burst, through real servers and real processes.

What each fault does, and how it is made:

- **S3 unreachable mid-upload, then back**: moto keeps its multipart state only
  in memory (a restarted moto is empty, so nothing could be resumed), so the
  S3 server is "killed" for the client by a TCP proxy between the client and
  moto that is stopped after K parts are stored (listener closed, every
  connection reset) and started again on the same port. moto keeps the
  unfinished upload as a real S3 would.
- **The task process SIGKILLed mid-upload**: a real child process runs
  ``upload_raw_file`` and is SIGKILLed after K parts are stored; its
  claim's lease then expires, and the sweeper's plain function plus the retry
  finish the backup.
- **MongoDB restarted during a run**: ``MongoServer.stop(kill=True)``/``start()``
  on the same port and data, once briefly in the middle of an upload and once
  spanning the end of a run.
- **Two runs of one raw file at once**: two processes released by a barrier.
- **A burst**: 200 small and 3 large acquisitions on one instrument, checksummed,
  copied, uploaded and moved by a pool of worker processes.

S3 requests are counted with botocore event hooks (``tests.s3_fixtures.CallCounter``).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import signal
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.register_assert_rewrite("tests.s3_fixtures")  # it is imported here before pytest loads it as a plugin

from devtools.servers import HOST, MongoServer, S3Server, free_port  # noqa: E402
from rawvault.backup import upload_raw_file  # noqa: E402
from rawvault.claim import UploadInProgressError, UploadNotRecordedError  # noqa: E402
from rawvault.s3.errors import S3TransientError  # noqa: E402
from rawvault.sweeper import find_backups_to_retry  # noqa: E402
from shared.db import interface  # noqa: E402
from shared.db.interface import connect_db, create_raw_file, get_raw_file, utc_now  # noqa: E402
from shared.db.models import RawFile  # noqa: E402
from shared.settings import Settings, load_settings  # noqa: E402
from tests.s3_fixtures import (  # noqa: E402
    KIB,
    MIB,
    PART,
    REGION,
    CallCounter,
    after_upload_part,
    file_info_of,
    make_client,
    multipart_uploads,
    write_file,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CREATED_BASE = "thermo1/2026_11"


# --- helpers --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    """A moto S3 server of this module's own."""
    with S3Server() as server:
        yield server


def write_env(root: Path, **s3: Any) -> tuple[Path, Settings]:
    """A settings YAML (for this process and child processes) with S3 backups to a fresh bucket prefix."""
    raw = {
        "instruments": {"thermo1": {"type": "thermo", "path": str(root / "instruments" / "thermo1")}},
        "locations": {"backup": str(root / "backup")},
        "file_mover": {"delay_minutes": 0, "target_folder": "Backup"},
        "backup": {
            "backup_type": "s3",
            "s3": {
                "region": REGION,
                "bucket_prefix": f"rv{uuid.uuid4().hex[:10]}",
                "part_size_mb": 5,
                "auto_create_buckets": True,
                "max_concurrency": 2,
                "upload_retry_delay_minutes": 0,
                "upload_retries": 0,  # these tests retry by hand (a lease must be shorter than a retry delay)
                **s3,
            },
        },
    }
    root.mkdir(parents=True, exist_ok=True)
    path = root / "rawvault.faults.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    settings = load_settings(path)
    settings.instruments["thermo1"].path.mkdir(parents=True, exist_ok=True)
    return path, settings


def register(settings: Settings, name: str, size: int) -> list:
    """A raw file with its verified local backup copy, as copy_raw_file leaves it; returns [size, md5, etag]."""
    folder = settings.locations.backup / CREATED_BASE
    write_file(folder / name, size, seed=size)
    info = file_info_of(folder, [name])
    create_raw_file(
        name,
        instrument_id="thermo1",
        created_at=datetime(2026, 11, 22, 10, 0, tzinfo=UTC),
        file_info=info,
        etag_part_size=PART,
        backup_status="copying_done",
    )
    return info[name]


def bucket_of(settings: Settings) -> str:
    return f"{settings.backup.s3.bucket_prefix}-fallback"


def stored_parts(client: Any, bucket: str, key: str) -> int:
    (upload,) = [u for u in multipart_uploads(client, bucket) if u["Key"] == key]
    return len(client.list_parts(Bucket=bucket, Key=key, UploadId=upload["UploadId"]).get("Parts", []))


def assert_backed_up(settings: Settings, raw_file_id: str, client: Any, entry: list) -> RawFile:
    """upload_done with key and ETag, claim released, and S3 holds exactly the recorded object."""
    raw_file = get_raw_file(raw_file_id)
    assert raw_file.backup_status == "upload_done", raw_file.backup_status_details
    assert raw_file.s3_backup_key == f"s3://{bucket_of(settings)}/{raw_file.backup_base_path}/"
    assert raw_file.s3_etag == entry[2]
    assert raw_file.upload_claim_owner is None and raw_file.upload_claim_expires_at is None
    assert raw_file.s3_multipart_uploads == {}
    head = client.head_object(Bucket=bucket_of(settings), Key=f"{raw_file.backup_base_path}/{raw_file.id}")
    assert (head["ContentLength"], head["ETag"].strip('"')) == (entry[0], entry[2])
    client.head_object(
        Bucket=bucket_of(settings), Key=f"{raw_file.backup_base_path}/{raw_file.id}.rawvault-manifest.json"
    )
    assert [u for u in multipart_uploads(client, bucket_of(settings)) if raw_file.id in u["Key"]] == []
    return raw_file


class TcpProxy:
    """A TCP proxy on 127.0.0.1 that can be stopped (every connection reset) and started again on its port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a RST
                sock.shutdown(socket.SHUT_RDWR)  # wakes the pumping threads
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            try:
                upstream = socket.create_connection((HOST, self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


# --- child processes (spawned: they import this module) --------------------------------------------------


def _connect_child(mongo_uri: str) -> None:
    os.environ[interface.ENV_VAR_MONGO_URI] = mongo_uri
    connect_db(mongo_uri)


def child_upload_until_killed(
    config: str, mongo_uri: str, endpoint: str, raw_file_id: str, after: int, marker: str
) -> None:
    """Upload; after ``after`` stored parts, say so in ``marker`` and hang until the parent SIGKILLs us."""
    _connect_child(mongo_uri)
    client = make_client(endpoint)
    stored = [0]
    lock = threading.Lock()

    def hang(**_kwargs: Any) -> None:
        with lock:
            stored[0] += 1
            if stored[0] == after:
                Path(marker).write_text(str(os.getpid()))
        if stored[0] >= after:
            time.sleep(3600)

    after_upload_part(client, hang)
    upload_raw_file(raw_file_id, load_settings(Path(config)), client=client, progress_interval=1)


def child_upload_racing(
    config: str, mongo_uri: str, endpoint: str, raw_file_id: str, barrier: Any, results: Any
) -> None:
    """One of two runs for the same raw file, released together; reports its outcome and S3 writes."""
    _connect_child(mongo_uri)
    settings = load_settings(Path(config))
    client = make_client(endpoint)
    counter = CallCounter(client)
    barrier.wait()
    try:
        result = upload_raw_file(raw_file_id, settings, client=client)
        outcome = ("already_complete" if result.already_complete else "uploaded", "")
    except Exception as error:
        outcome = (type(error).__name__, str(error))
    results.put((*outcome, counter.writes))


_worker: dict[str, Any] = {}


def burst_worker_init(config: str, mongo_uri: str, endpoint: str) -> None:
    """Each pool process: its own MongoDB connection, settings and S3 client."""
    _connect_child(mongo_uri)
    _worker["settings"] = load_settings(Path(config))
    _worker["client"] = make_client(endpoint, max_attempts=5)


def burst_local_backup(raw_file_id: str) -> str:
    """compute_checksum and copy_raw_file of one raw file."""
    from rawvault import pipeline

    pipeline.checksum_raw_file(raw_file_id, _worker["settings"])
    pipeline.copy_to_local_backup(raw_file_id, _worker["settings"])
    return raw_file_id


def burst_upload(raw_file_id: str) -> str:
    """upload_to_s3 of one raw file."""
    upload_raw_file(raw_file_id, _worker["settings"], client=_worker["client"], progress_interval=60)
    return raw_file_id


def burst_move(raw_file_id: str) -> str:
    """The file mover of one raw file (runs beside its upload, like start_file_mover)."""
    from rawvault import pipeline

    pipeline.move_on_share(raw_file_id, _worker["settings"])
    return raw_file_id


# --- the faults -----------------------------------------------------------------------------------------


def test_s3_unreachable_mid_multipart_upload_then_retry_resumes(mongo_uri, tmp_path, s3_server) -> None:
    _config, settings = write_env(tmp_path)
    name = "unreachable.raw"
    entry = register(settings, name, 27 * MIB)  # 6 parts
    proxy = TcpProxy(s3_server.port)
    proxy.start()
    client = make_client(proxy.endpoint_url, max_attempts=2)
    parts_seen = [0]

    def cut_after_two_parts(**_kwargs: Any) -> None:
        parts_seen[0] += 1
        if parts_seen[0] == 2:
            proxy.stop()  # S3 "dies": every connection reset, nothing listens

    after_upload_part(client, cut_after_two_parts)
    try:
        with pytest.raises(S3TransientError, match=r"cannot reach S3.*is kept with \d of 6 parts stored"):
            upload_raw_file(name, settings, client=client, progress_interval=1)
        failed = get_raw_file(name)
        assert failed.backup_status == "upload_failed" and failed.s3_etag is None
        assert "the next run resumes it" in failed.backup_status_details
        key = f"{CREATED_BASE}/{name}"
        assert list(failed.s3_multipart_uploads) == [key]

        proxy.start()  # S3 is back, on the same endpoint, with the unfinished upload
        direct = make_client(s3_server.endpoint_url)
        stored = stored_parts(direct, bucket_of(settings), key)
        assert 2 <= stored < 6
        retry_client = make_client(proxy.endpoint_url)
        counter = CallCounter(retry_client)
        result = upload_raw_file(name, settings, client=retry_client)
        assert counter.calls["CreateMultipartUpload"] == 0
        assert counter.calls["UploadPart"] == 6 - stored  # only the missing parts were sent again
        assert result.parts_resumed == stored
        assert_backed_up(settings, name, direct, entry)
        print(f"\nS3 unreachable: {stored} of 6 parts survived, the retry sent {6 - stored}")
    finally:
        proxy.stop()


def test_task_process_sigkilled_mid_upload_then_sweep_completes_it(mongo_uri, tmp_path, s3_server) -> None:
    config, settings = write_env(tmp_path, stale_upload_minutes=0.05)  # a 3 s lease, renewed every second
    name = "killed.raw"
    entry = register(settings, name, 32 * MIB)  # 7 parts
    marker = tmp_path / "parts-stored"
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(
        target=child_upload_until_killed,
        args=(str(config), mongo_uri, s3_server.endpoint_url, name, 3, str(marker)),
    )
    child.start()
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert child.is_alive(), f"the upload process ended early (exit code {child.exitcode})"
        assert time.monotonic() < deadline, "the upload process stored no parts"
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.join(timeout=30)
    assert child.exitcode == -signal.SIGKILL

    orphan = get_raw_file(name)  # what a killed worker leaves: upload_in_progress with its lease
    assert orphan.backup_status == "upload_in_progress" and orphan.upload_claim_owner
    key = f"{CREATED_BASE}/{name}"
    client = make_client(s3_server.endpoint_url)
    stored = stored_parts(client, bucket_of(settings), key)
    assert orphan.s3_multipart_uploads == {key: multipart_uploads(client, bucket_of(settings))[0]["UploadId"]}
    assert 3 <= stored < 7
    with pytest.raises(UploadInProgressError):  # a retry before the lease expired does nothing
        upload_raw_file(name, settings, client=client)
    assert find_backups_to_retry(settings) == []  # the sweeper leaves a live lease alone
    while utc_now() < orphan.upload_claim_expires_at + timedelta(seconds=0.2):
        time.sleep(0.2)
    assert get_raw_file(name).upload_claim_expires_at == orphan.upload_claim_expires_at  # nobody renews it

    assert find_backups_to_retry(settings) == [name]  # stale: released as upload_failed and queued
    released = get_raw_file(name)
    assert released.backup_status == "upload_failed" and "stopped renewing its claim" in released.backup_status_details
    assert released.s3_upload_failed_at == orphan.upload_claim_expires_at  # its backoff counts from the lease's end
    counter = CallCounter(client)
    # What s3_upload_retry runs for the attempt count the sweep saw.
    result = upload_raw_file(name, settings, client=client, expected_attempts=1)
    assert counter.calls["CreateMultipartUpload"] == 0 and counter.calls["UploadPart"] == 7 - stored
    assert result.parts_resumed == stored
    raw_file = assert_backed_up(settings, name, client, entry)
    assert raw_file.s3_upload_attempts == 2
    print(f"\nSIGKILL: {stored} of 7 parts survived, the sweep's retry sent {7 - stored}")


def test_mongodb_restarted_during_runs(tmp_path, s3_server, monkeypatch) -> None:
    monkeypatch.setattr(interface, "SERVER_SELECTION_TIMEOUT_MS", 3000)  # fail in 3 s, not 10, while it is down
    with MongoServer() as mongo:
        monkeypatch.setenv(interface.ENV_VAR_MONGO_URI, mongo.uri)
        connect_db(mongo.uri)
        try:
            _mongodb_restarts(tmp_path, s3_server, mongo)
        finally:
            interface.reset_connection()


def _mongodb_restarts(tmp_path: Path, s3_server: S3Server, mongo: MongoServer) -> None:
    _config, settings = write_env(tmp_path, stale_upload_minutes=0.1)  # a 6 s lease
    client = make_client(s3_server.endpoint_url)
    fault = {"action": "restart", "parts": 0}

    def on_part(**_kwargs: Any) -> None:
        fault["parts"] += 1
        if fault["parts"] != 1:
            return
        if fault["action"] == "restart":
            mongo.stop(kill=True)
            mongo.start()
        elif fault["action"] == "kill":
            mongo.stop(kill=True)

    after_upload_part(client, on_part)

    # 1. A restart in the middle of an upload: pymongo reconnects, the run completes as if nothing happened.
    quick = register(settings, "mongo-quick.raw", 17 * MIB)
    upload_raw_file("mongo-quick.raw", settings, client=client)
    assert_backed_up(settings, "mongo-quick.raw", client, quick)

    # 2. MongoDB goes down mid-upload and comes back only after the run ended: S3 completes, recording fails.
    entry = register(settings, "mongo-down.raw", 17 * MIB)
    fault.update(action="kill", parts=0)
    with pytest.raises(UploadNotRecordedError, match=r"MongoDB could not be reached to record upload_done") as failure:
        upload_raw_file("mongo-down.raw", settings, client=client)
    print(f"\nMongoDB down at the end of a run: {failure.value}")
    fault["action"] = "none"
    mongo.start()  # same port, same data
    stuck = get_raw_file("mongo-down.raw")
    # Consistent: still claimed upload_in_progress, never upload_done without key and ETag.
    assert stuck.backup_status == "upload_in_progress" and stuck.s3_etag is None and stuck.s3_backup_key is None
    assert stuck.upload_claim_owner and stuck.upload_claim_expires_at
    while utc_now() < stuck.upload_claim_expires_at:  # the claim is not blocking forever: its lease runs out
        time.sleep(0.2)
    assert find_backups_to_retry(settings) == ["mongo-down.raw"]
    counter = CallCounter(client)
    result = upload_raw_file("mongo-down.raw", settings, client=client)
    assert counter.writes == 0 and result.skipped == ["mongo-down.raw"]  # verified in S3, nothing sent again
    assert_backed_up(settings, "mongo-down.raw", client, entry)


def test_two_concurrent_runs_for_one_raw_file(mongo_uri, tmp_path, s3_server) -> None:
    config, settings = write_env(tmp_path)
    name = "twice.raw"
    entry = register(settings, name, 22 * MIB)  # 5 parts
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    runs = [
        ctx.Process(
            target=child_upload_racing, args=(str(config), mongo_uri, s3_server.endpoint_url, name, barrier, results)
        )
        for _ in range(2)
    ]
    for run in runs:
        run.start()
    outcomes = sorted(results.get(timeout=180) for _ in runs)
    for run in runs:
        run.join(timeout=60)
        assert run.exitcode == 0
    print(f"\ntwo runs at once: {[(kind, writes) for kind, _message, writes in outcomes]}")
    winners = [o for o in outcomes if o[0] == "uploaded"]
    losers = [o for o in outcomes if o[0] != "uploaded"]
    assert len(winners) == 1 and len(losers) == 1, outcomes
    kind, message, writes = losers[0]
    assert writes == 0  # the loser sent nothing to S3
    if kind == "UploadInProgressError":
        assert "is being uploaded by another run" in message and "stopped without changing anything" in message
    else:
        assert kind == "already_complete", outcomes
    raw_file = assert_backed_up(settings, name, make_client(s3_server.endpoint_url), entry)
    assert raw_file.s3_upload_attempts == 1  # only the winner claimed it


def test_burst_of_200_small_and_3_large_acquisitions(mongo_uri, tmp_path, s3_server) -> None:
    from rawvault.watcher import register_new_raw_files

    config, settings = write_env(tmp_path, max_concurrency=4)
    share = settings.instruments["thermo1"].path
    rng = random.Random(200)
    sizes = {f"20261122_burst_{n:03d}.raw": rng.randint(2 * KIB, 100 * KIB) for n in range(200)}
    sizes |= {"20261122_big_a.raw": 12 * MIB, "20261122_big_b.raw": 16 * MIB, "20261122_big_c.raw": 20 * MIB + 17}
    for seed, (name, size) in enumerate(sizes.items()):
        write_file(share / name, size, seed=seed)
    workers = 5

    started = time.monotonic()
    raw_file_ids = register_new_raw_files("thermo1", settings)
    assert sorted(raw_file_ids) == sorted(sizes)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=ctx,
        initializer=burst_worker_init,
        initargs=(str(config), mongo_uri, s3_server.endpoint_url),
    ) as pool:
        copied = [pool.submit(burst_local_backup, raw_file_id) for raw_file_id in raw_file_ids]
        followers = []
        for future in as_completed(copied):
            raw_file_id = future.result()
            # Upload and file mover of one raw file run at the same time in different processes.
            followers += [pool.submit(burst_upload, raw_file_id), pool.submit(burst_move, raw_file_id)]
        for future in as_completed(followers):
            future.result()
    wall = time.monotonic() - started

    client = make_client(s3_server.endpoint_url)
    bucket = bucket_of(settings)
    assert RawFile.objects(backup_status="upload_done").count() == len(sizes) == 203
    for raw_file in RawFile.objects:
        size, _md5, etag = raw_file.file_info[raw_file.id]
        assert size == sizes[raw_file.id]
        assert raw_file.status == "moved"  # the mover's status and the upload's backup_status both survived
        assert raw_file.backup_status == "upload_done", raw_file.backup_status_details
        assert raw_file.s3_backup_key == f"s3://{bucket}/{raw_file.backup_base_path}/"
        assert raw_file.s3_etag == etag and raw_file.s3_upload_attempts == 1
        assert raw_file.upload_claim_owner is None and raw_file.s3_multipart_uploads == {}
        head = client.head_object(Bucket=bucket, Key=f"{raw_file.backup_base_path}/{raw_file.id}")
        assert (head["ContentLength"], head["ETag"].strip('"')) == (size, etag)
    assert multipart_uploads(client, bucket) == []
    total = sum(sizes.values())
    print(
        f"\nburst: {len(sizes)} acquisitions ({total / MIB:.1f} MiB) registered, checksummed, copied, uploaded, "
        f"verified and moved by {workers} worker processes in {wall:.1f} s wall time"
    )


def test_s3_worker_cannot_starve_the_instrument_tasks(tmp_path, monkeypatch) -> None:
    """Structure: uploads run on their own queue and pool; instrument tasks never wait for an S3 slot."""
    from tests.airflow_harness import load_dags
    from tests.pipeline_env import activate, write_pipeline_env

    s3 = {"region": "us-east-1", "bucket_prefix": "rv-test", "part_size_mb": 5}
    env = write_pipeline_env(tmp_path, backup={"backup_type": "s3", "s3": s3})
    activate(env, monkeypatch)
    dags = load_dags()
    for instrument_id in env.settings.instruments:
        handler = dags[f"acquisition_handler.{instrument_id}"]
        upload = handler.get_task("upload_to_s3")
        assert (upload.queue, upload.pool) == ("test_s3_uploader", "s3_upload_pool")
        for task in handler.tasks:
            if task.task_id != "upload_to_s3":
                assert task.queue == f"test_{instrument_id}", task.task_id
                assert task.pool != "s3_upload_pool", task.task_id
        watcher = dags[f"instrument_watcher.{instrument_id}"]
        assert {task.queue for task in watcher.tasks} == {f"test_{instrument_id}"}
    sweeper = dags["backup_sweeper"]
    # Housekeeping has its own queue: two long uploads never hold back a sweep.
    assert sweeper.get_task("find_backups_to_retry").queue == "test_rawvault_maintenance"
    assert sweeper.get_task("trigger_upload_retry").partial_kwargs["trigger_dag_id"] == "s3_upload_retry"
    retry = dags["s3_upload_retry"].get_task("upload_to_s3")
    assert (retry.queue, retry.pool) == ("test_s3_uploader", "s3_upload_pool")
    from shared.settings import get_settings

    get_settings.cache_clear()
