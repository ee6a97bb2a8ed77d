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

S3 requests are counted with botocore event hooks (``tests.s3_fixtures.CallCounter``).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("tests.s3_fixtures", "tests.fault_helpers")  # imported before pytest rewrites them

from devtools.proxy import TcpProxy  # noqa: E402
from devtools.servers import MongoServer, S3Server  # noqa: E402
from rawvault.backup import upload_raw_file  # noqa: E402
from rawvault.claim import UploadInProgressError, UploadNotRecordedError  # noqa: E402
from rawvault.s3.errors import S3TransientError  # noqa: E402
from rawvault.sweeper import find_backups_to_retry  # noqa: E402
from shared.db import interface  # noqa: E402
from shared.db.interface import connect_db, get_raw_file, utc_now  # noqa: E402
from tests.fault_helpers import (  # noqa: E402
    CREATED_BASE,
    assert_backed_up,
    bucket_of,
    child_upload_racing,
    child_upload_until_killed,
    register,
    stored_parts,
    write_env,
)
from tests.pipeline_env import s3_server  # noqa: E402
from tests.s3_fixtures import (  # noqa: E402
    MIB,
    CallCounter,
    after_upload_part,
    make_client,
    multipart_uploads,
)

__all__ = ["s3_server"]  # the fixture: a server of this module's own
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


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
