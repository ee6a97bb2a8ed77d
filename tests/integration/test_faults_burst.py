"""Fault suite, load: a burst of acquisitions through real worker processes, and the queues that keep
uploads from starving the instrument tasks.

- **A burst**: 200 small and 3 large acquisitions on one instrument, checksummed,
  copied, uploaded and moved by a pool of worker processes (helpers: ``tests.fault_helpers``).
"""

from __future__ import annotations

import multiprocessing
import random
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

import pytest

pytest.register_assert_rewrite("tests.s3_fixtures", "tests.fault_helpers")  # imported before pytest rewrites them

from shared.db.models import RawFile  # noqa: E402
from tests.fault_helpers import (  # noqa: E402
    bucket_of,
    burst_local_backup,
    burst_move,
    burst_upload,
    burst_worker_init,
    write_env,
)
from tests.pipeline_env import s3_server  # noqa: E402
from tests.s3_fixtures import (  # noqa: E402
    KIB,
    MIB,
    make_client,
    multipart_uploads,
    write_file,
)

__all__ = ["s3_server"]  # the fixture: a server of this module's own
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


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
