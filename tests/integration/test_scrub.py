"""Scrubbing (issue 12 items 2-3): re-reading the data in S3 and in the local backup, within a budget, recorded.

Through the command line as a user runs it (``scripts/rawvault.sh verify --read-data``), the library and
the ``backup_verifier`` DAG (``dag.test()``), against moto's S3 server over HTTP and the MongoDB wire
server. A store whose metadata is stale is an HTTP proxy (:class:`tests.s3_proxy.S3Proxy`) answering
HEAD with the old ETag and checksum; bytes read are counted by the same proxy.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("tests.s3_fixtures", "tests.restore_fixtures")  # imported before pytest loads them

from devtools.local_stack import aws_connection_uri  # noqa: E402
from rawvault.audit import verify_backups  # noqa: E402
from rawvault.s3.drift import DriftKind  # noqa: E402
from rawvault.scrub import scrub_backups  # noqa: E402
from shared.db.interface import get_raw_file, update_raw_file  # noqa: E402
from shared.db.models import utc_now  # noqa: E402
from tests.restore_fixtures import BRUKER, THERMO, Env, back_up, run_cli, through, write_env  # noqa: E402
from tests.s3_fixtures import (  # noqa: E402
    MIB,
    REGION,
    make_bruker_set,
    make_client,
    make_thermo_file,
    unique_prefix,
)
from tests.s3_proxy import S3Proxy  # noqa: E402

pytest_plugins = ["tests.s3_fixtures", "tests.restore_fixtures"]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

MANIFEST = ".rawvault-manifest.json"


def same_size_other_bytes(data: bytes) -> bytes:
    """Other content of the same length (what bit rot or an overwrite in place leaves)."""
    return bytes(b ^ 0x5A for b in data[:64]) + data[64:]


def drift_of(output: str) -> set[tuple[str, str, str]]:
    """``(raw file id, kind, path)`` of each drift item in ``verify --json`` output."""
    return {(item["raw_file_id"], item["kind"], item["path"]) for item in json.loads(output)["drift"]}


def test_read_data_finds_a_corrupted_local_copy_and_a_replaced_object_and_records_both(
    mongo_uri, env, s3_client
) -> None:
    thermo_id, _thermo_folder, _ = back_up(env, s3_client, "thermo1", make_thermo_file)
    bruker_id, bruker_folder, paths = back_up(env, s3_client, "tims1", make_bruker_set)
    total = sum((bruker_folder / p).stat().st_size for p in paths) + 12 * MIB

    clean = run_cli("verify", "--read-data")
    assert clean.returncode == 0, clean.stderr
    assert "checked 2 raw file(s), 9 object(s), re-read " in clean.stdout and " from the local backup" in clean.stdout
    assert "every byte is the recorded data" in clean.stdout
    for raw_file_id in (thermo_id, bruker_id):
        raw_file = get_raw_file(raw_file_id)
        assert (raw_file.scrub_status, raw_file.scrub_details) == ("ok", None) and raw_file.scrubbed_at
    again = json.loads(run_cli("verify", "--read-data", "--json").stdout)
    assert again["bytes_read_s3"] == again["bytes_read_local"] == total

    # The local copy rots in place (same size, other bytes); the object of the other raw file is overwritten
    # in S3 by a client that bypasses rawvault (a new version, same size, another ETag).
    local = bruker_folder / BRUKER / "analysis.tdf"
    local.write_bytes(same_size_other_bytes(local.read_bytes()))
    plain = make_client(s3_client.meta.endpoint_url)
    key = f"thermo1/2026_11/{thermo_id}"
    body = plain.get_object(Bucket=env.bucket(), Key=key)["Body"].read()
    plain.put_object(Bucket=env.bucket(), Key=key, Body=same_size_other_bytes(body))

    head_only = run_cli("verify", "--json")
    assert head_only.returncode == 1
    assert drift_of(head_only.stdout) == {(thermo_id, "ETag differs", THERMO)}  # the local copy is not looked at

    scrub = run_cli("verify", "--read-data", "--json")
    assert scrub.returncode == 1, scrub.stderr
    assert drift_of(scrub.stdout) == {
        (thermo_id, "ETag differs", THERMO),
        (bruker_id, "local copy differs", f"{BRUKER}/analysis.tdf"),
    }
    rotten = get_raw_file(bruker_id)
    assert rotten.scrub_status == "drift"
    assert f"local copy differs: {local} (expected MD5 " in rotten.scrub_details
    assert get_raw_file(thermo_id).scrub_status == "drift"

    # A missing local copy is its own kind; --no-record leaves the recorded result alone.
    local.unlink()
    missing = run_cli("verify", "--read-data", "--raw-file-id", bruker_id, "--no-record", "--json")
    assert (bruker_id, "local copy missing", f"{BRUKER}/analysis.tdf") in drift_of(missing.stdout)
    assert get_raw_file(bruker_id).scrub_details == rotten.scrub_details


def test_read_data_sees_what_a_store_with_stale_metadata_hides_from_head(mongo_uri, env, s3_client, s3_server) -> None:
    """The object is replaced by other bytes of the same size, but HEAD keeps answering with the old ETag."""
    bruker_id, _folder, _ = back_up(env, s3_client, "tims1", make_bruker_set)
    key = f"tims1/2026_11/{BRUKER}/analysis.tdf"
    plain = make_client(s3_client.meta.endpoint_url)
    before = plain.head_object(Bucket=env.bucket(), Key=key, ChecksumMode="ENABLED")
    stale = {"ETag": before["ETag"]}
    if before.get("ChecksumSHA256"):
        stale["x-amz-checksum-sha256"] = before["ChecksumSHA256"]
    body = plain.get_object(Bucket=env.bucket(), Key=key)["Body"].read()
    plain.put_object(Bucket=env.bucket(), Key=key, Body=same_size_other_bytes(body))

    with S3Proxy(s3_server.endpoint_url) as proxy:
        proxy.override_head(lambda request: request.method == "HEAD" and request.path.endswith(key), stale)
        head_only = run_cli("verify", "--raw-file-id", bruker_id, env_overrides=through(proxy))
        scrub = run_cli("verify", "--read-data", "--raw-file-id", bruker_id, "--json", env_overrides=through(proxy))

    assert head_only.returncode == 0, head_only.stdout  # HEAD cannot see it
    assert scrub.returncode == 1, scrub.stderr
    (item,) = json.loads(scrub.stdout)["drift"]
    assert (item["kind"], item["path"]) == ("content differs (S3)", f"{BRUKER}/analysis.tdf")
    assert item["url"] == f"s3://{env.bucket()}/{key}" and "MD5" in item["detail"] and "ETag" in item["detail"]
    assert get_raw_file(bruker_id).scrub_status == "drift"


def test_read_data_under_sse_kms_compares_the_manifests_sha256(mongo_uri, tmp_path, kms_s3_server) -> None:
    """SSE-KMS (AWS's ETags: no MD5, new per upload) and a store answering HEAD with the manifest's ETag and SHA-256."""
    kms_env = write_env(tmp_path, "kms.yaml", server_side_encryption="aws:kms")
    client = make_client(kms_s3_server.endpoint_url)
    bruker_id, _folder, _ = back_up(kms_env, client, "tims1", make_bruker_set)
    assert scrub_backups(client, kms_env.settings).ok

    key = f"tims1/2026_11/{BRUKER}/analysis.tdf_bin"  # multipart: composite SHA-256
    manifest = json.loads(
        client.get_object(Bucket=kms_env.bucket(), Key=f"tims1/2026_11/{bruker_id}{MANIFEST}")["Body"].read()
    )
    recorded = manifest["files"][f"{BRUKER}/analysis.tdf_bin"]
    plain = make_client(kms_s3_server.endpoint_url)
    body = plain.get_object(Bucket=kms_env.bucket(), Key=key)["Body"].read()
    plain.put_object(Bucket=kms_env.bucket(), Key=key, Body=same_size_other_bytes(body), ServerSideEncryption="aws:kms")

    def stale_head(parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        if parsed.get("ContentLength") == len(body):
            parsed["ETag"] = f'"{recorded["s3_etag"]}"'
            parsed["ChecksumSHA256"] = recorded["checksum_sha256"]

    client.meta.events.register("after-call.s3.HeadObject", stale_head)
    assert verify_backups(client).ok  # HEAD: the manifest's ETag and SHA-256, as recorded
    report = scrub_backups(client, kms_env.settings)
    (item,) = report.drift
    assert item.kind is DriftKind.CONTENT_DIFFERS and f"recorded {recorded['checksum_sha256']}" in item.detail
    assert "SHA-256" in item.detail


# ---------------------------------------------------------------------------------- backup_verifier DAG


def scrubbed_ids(ids: list[str]) -> list[str]:
    return [raw_file_id for raw_file_id in ids if get_raw_file(raw_file_id).scrubbed_at]


def data_bytes(proxy: S3Proxy) -> int:
    return sum(r.body_bytes for r in proxy.gets() if not r.path.endswith(MANIFEST) and r.status in (200, 206))


def test_backup_verifier_scrubs_within_its_budget_records_drift_and_alerts_once(
    mongo_uri, tmp_path, s3_server, s3_client, monkeypatch
) -> None:
    from rawvault.alerts.check import run_check
    from tests.airflow_harness import init_airflow_db, load_dags, run_dag
    from tests.pipeline_env import activate, write_pipeline_env

    init_airflow_db()
    size = 3 * MIB
    budget_gb = 6.5e-3  # 6,500,000 bytes: two raw files of 3 MiB (6,291,456 bytes), not three
    backup = {
        "backup_type": "s3",
        "s3": {"region": REGION, "bucket_prefix": unique_prefix(), "part_size_mb": 5, "auto_create_buckets": True},
        "scrub": {"budget_gb_per_run": budget_gb, "period_days": 30},
    }
    alerts = {
        "enabled": True,
        "channels": {"webhook": {"conn_id": "rawvault_webhook"}},
        "free_space": {"instrument_min_free_gb": 0, "backup_min_free_gb": 0},
    }
    pipeline = write_pipeline_env(tmp_path / "s3", backup=backup, alerts=alerts)
    activate(pipeline, monkeypatch)
    env = Env(pipeline.settings, pipeline.config_path, pipeline.root)
    ids = []
    for day in range(1, 6):  # oldest first: the order the first runs scrub them in
        name = f"202611{day:02d}_thermo1_s{day}.raw"
        created = utc_now().replace(year=2026, month=11, day=day)

        def make(folder: Path, name: str = name) -> str:
            return make_thermo_file(folder, name=name, size=size)

        raw_file_id, _, _ = back_up(env, s3_client, "thermo1", make, created=created)
        update_raw_file(raw_file_id, size=size)
        ids.append(raw_file_id)
    received: list[dict[str, Any]] = []
    senders = {"webhook": received.append}
    run_check(pipeline.settings, senders)  # the first check ever: the baseline summary
    received.clear()

    with S3Proxy(s3_server.endpoint_url) as proxy:
        monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", aws_connection_uri(proxy.endpoint_url, REGION))
        dag = load_dags()["backup_verifier"]
        read_per_run = []
        for run in range(4):
            proxy.reset()
            assert run_dag(dag, {"sample": 0}) == {"verify_backups": "success", "__dagrun__": "success"}, run
            read_per_run.append(data_bytes(proxy))
            assert data_bytes(proxy) <= budget_gb * 1e9
        # Least recently scrubbed first, two per run; the fourth run finds everything scrubbed within the period.
        assert read_per_run == [2 * size, 2 * size, size, 0]
        assert scrubbed_ids(ids) == ids

        # The local copy of the first raw file rots; time passes so that it is due again.
        local = pipeline.settings.locations.backup / "thermo1" / "2026_11" / ids[0]
        original = local.read_bytes()
        local.write_bytes(same_size_other_bytes(original))
        update_raw_file(ids[0], scrubbed_at=utc_now() - timedelta(days=40))
        assert run_dag(dag, {"sample": 0}) == {"verify_backups": "failed", "__dagrun__": "failed"}
        drifted = get_raw_file(ids[0])
        assert drifted.scrub_status == "drift" and "local copy differs" in drifted.scrub_details

        # Alerted once, however many checks see it.
        for _ in range(3):
            run_check(pipeline.settings, senders)
        assert [message["title"] for message in received] == [
            f"Stored data differs: {ids[0]} (thermo1) failed its scrub"
        ]

        # Repaired and scrubbed again: clean, and one recovery message.
        local.write_bytes(original)
        update_raw_file(ids[0], scrubbed_at=utc_now() - timedelta(days=40))
        assert run_dag(dag, {"sample": 0}) == {"verify_backups": "success", "__dagrun__": "success"}
        assert get_raw_file(ids[0]).scrub_status == "ok"
        run_check(pipeline.settings, senders)
        run_check(pipeline.settings, senders)
    assert len(received) == 2 and ids[0] in json.dumps(received[1]) and received[1]["kind"] == "data_drift"
