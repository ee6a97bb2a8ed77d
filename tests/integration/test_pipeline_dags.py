"""Real DAG runs (dag.test) of watcher -> acquisition handler -> file mover against the real MongoDB server."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.config import Config

from devtools.servers import S3Server, local_s3_client
from shared.db.interface import create_project
from shared.db.models import RawFile
from shared.settings import get_settings
from tests.airflow_harness import init_airflow_db, load_dags, run_dag, run_triggered
from tests.data_factory import make_bruker, make_sciex, make_thermo
from tests.pipeline_env import PipelineEnv, activate, write_pipeline_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

HANDLER_TASKS = ["monitor_acquisition", "compute_checksum", "copy_raw_file", "start_file_mover"]


@pytest.fixture
def pipeline(tmp_path: Path, mongo_uri: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[PipelineEnv]:
    init_airflow_db()
    env = write_pipeline_env(tmp_path)
    activate(env, monkeypatch)
    yield env
    get_settings.cache_clear()


def _remote_etags(files: dict[str, Path], part_size: int) -> dict[str, str]:
    """ETags a real S3 server reports for these files uploaded with ``part_size`` parts."""
    from boto3.s3.transfer import TransferConfig

    with S3Server() as server:
        client = local_s3_client(server.endpoint_url, config=Config(retries={"mode": "standard"}))
        client.create_bucket(Bucket="etags")
        transfer = TransferConfig(multipart_threshold=part_size + 1, multipart_chunksize=part_size)
        etags = {}
        for key, path in files.items():
            client.upload_file(str(path), "etags", key, Config=transfer)
            etags[key] = client.head_object(Bucket="etags", Key=key)["ETag"].strip('"')
        return etags


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def test_thermo_bruker_sciex_backed_up_locally_and_moved(pipeline: PipelineEnv) -> None:
    create_project("PRJ1")
    thermo = make_thermo(pipeline.instrument_path("thermo1"))
    bruker = make_bruker(pipeline.instrument_path("tims1"))
    sciex = make_sciex(pipeline.instrument_path("zeno1"))
    # Scratch files the instrument software writes are never registered.
    (pipeline.instrument_path("thermo1") / ".hidden.raw").write_bytes(b"x")
    (pipeline.instrument_path("thermo1") / "~$lock.raw").write_bytes(b"x")
    originals = {
        iid: {p.relative_to(pipeline.instrument_path(iid)).as_posix(): _md5(p) for p in sorted(files)}
        for iid, files in {
            "thermo1": [thermo],
            "tims1": [p for p in bruker.rglob("*") if p.is_file()],
            "zeno1": [p for p in sciex.parent.iterdir() if p.is_file()],
        }.items()
    }
    sources = {f"{iid}/{rel}": pipeline.instrument_path(iid) / rel for iid, files in originals.items() for rel in files}
    remote_etags = _remote_etags(sources, pipeline.settings.part_size_bytes)

    dags = load_dags()
    for instrument_id in ("thermo1", "tims1", "zeno1"):
        states = run_dag(dags[f"instrument_watcher.{instrument_id}"])
        assert states["__dagrun__"] == "success", states

    raw_files = {raw_file.instrument_id: raw_file for raw_file in RawFile.objects}
    assert {r.id for r in raw_files.values()} == {thermo.name, bruker.name, sciex.name}
    assert raw_files["thermo1"].project_id == "PRJ1"
    assert raw_files["tims1"].project_id == "_FALLBACK"

    handler_runs = run_triggered(dags, "acquisition_handler.")
    assert len(handler_runs) == 3
    for run in handler_runs:
        assert run["state"] == "success", run
        assert [run["tasks"][t] for t in HANDLER_TASKS] == ["success"] * 4, run
        assert "upload_to_s3" not in run["tasks"]  # backup_type: local

    for instrument_id, files in originals.items():
        raw_file = RawFile.objects.get(instrument_id=instrument_id)
        assert raw_file.backup_status == "copying_done"
        assert raw_file.status == "checksumming_done"
        assert sorted(raw_file.file_info) == sorted(files)
        backup = pipeline.backup_root / raw_file.backup_base_path
        assert raw_file.backup_base_path == f"{instrument_id}/{raw_file.created_at:%Y_%m}"
        for relative_path, md5 in files.items():
            size, recorded_md5, etag = raw_file.file_info[relative_path]
            assert recorded_md5 == md5
            assert size == (pipeline.instrument_path(instrument_id) / relative_path).stat().st_size
            assert etag == remote_etags[f"{instrument_id}/{relative_path}"]
            assert _md5(backup / relative_path) == md5
        assert raw_file.size == sum(entry[0] for entry in raw_file.file_info.values())
    thermo_etag = RawFile.objects.get(instrument_id="thermo1").file_info[thermo.name][2]
    assert thermo_etag.endswith("-3")  # 12 MiB in 5 MiB parts: a real multipart ETag

    mover_runs = run_triggered(dags, "file_mover.")
    assert sorted(run["dag_id"] for run in mover_runs) == ["file_mover.thermo1", "file_mover.tims1", "file_mover.zeno1"]
    assert all(run["state"] == "success" for run in mover_runs), mover_runs
    for instrument_id, files in originals.items():
        raw_file = RawFile.objects.get(instrument_id=instrument_id)
        assert raw_file.status == "moved"
        moved_to = pipeline.instrument_path(instrument_id) / "Backup" / f"{raw_file.created_at:%Y_%m}"
        for relative_path, md5 in files.items():
            assert not (pipeline.instrument_path(instrument_id) / relative_path).exists()
            assert _md5(moved_to / relative_path) == md5

    # The next watcher run finds nothing new: moved files and the Backup folder are not re-registered.
    states = run_dag(dags["instrument_watcher.thermo1"])
    assert states["__dagrun__"] == "success"
    assert RawFile.objects.count() == 3
