"""file_remover.<instrument> in real DAG runs on a small real file system that fills up (issue 14, "Must show").

The instrument share is a 64 MiB tmpfs mounted by the test (unmounted after it,
even on failure); the local backup lives elsewhere. Every set is taken through
the real pipeline steps against the MongoDB wire server and moto's S3 server
first, so the purge meets what production leaves behind.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.db.interface import get_raw_file
from tests.data_factory import MIB
from tests.pipeline_env import PipelineEnv
from tests.purge_data import (
    GB,
    REPO,
    bruker_set,
    fill,
    free_bytes,
    on_share,
    reconfigure,
    run_remover,
    thermo_sets,
)

pytest_plugins = ["tests.purge_fixtures"]
pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]


def test_two_oldest_of_three_old_sets_are_deleted_and_free_space_reaches_the_threshold(
    share_env: tuple[PipelineEnv, Path], s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    env, share = share_env
    oldest, older, old = thermo_sets(env, s3, ages=(30, 20, 10))
    (young,) = thermo_sets(env, s3, ages=(0,), size=1 * MIB)
    fill(share, leave_free=3 * MIB)
    folder = env.instrument_path("thermo1")
    target = free_bytes(folder) + 9 * MIB  # one 6 MiB set (two 5 MiB parts) is not enough, two are
    env = reconfigure(env, share, monkeypatch, min_free_gb=target / GB)

    run = run_remover("thermo1")

    assert (run.state, run.task_state) == ("success", "success"), run
    assert run.decided("deleted") == [oldest, older]
    assert run.decided("kept: enough free space") == [old]
    assert run.decided("kept: too young") == [young]
    assert free_bytes(folder) >= target
    assert run.report is not None and run.report["missing_bytes"] == 0
    for raw_file_id in (oldest, older):
        raw_file = get_raw_file(raw_file_id)
        assert raw_file.status == "purged" and raw_file.purged_at and raw_file.purge_started_at
        assert raw_file.backup_status == "upload_done" and raw_file.s3_backup_key  # still backed up
        assert not on_share(env, raw_file_id).exists()
        (path, (size, md5, etag)), *_ = raw_file.file_info.items()
        assert (env.backup_root / raw_file.backup_base_path / path).stat().st_size == size  # the copies stay
        evidence = raw_file.purge_evidence
        assert evidence["require"] == ["local", "s3"]
        assert evidence["share"]["files"] == [
            {"path": path, "size": size, "md5": md5, "mtime_ns": raw_file.source_mtimes[path]}
        ]
        assert evidence["local"]["files"] == [{"path": path, "size": size, "md5": md5}]
        (s3_object,) = evidence["s3"]["objects"]
        assert (s3_object["etag"], s3_object["size"], s3_object["verified_by"]) == (etag, size, "etag")
        assert etag.endswith("-2")  # a multipart object: S3's ETag of parts, checked by HEAD
        assert s3_object["version"]  # the buckets rawvault creates are versioned
        assert evidence["s3"]["manifest"]["etag"]
    for raw_file_id in (old, young):
        assert get_raw_file(raw_file_id).status == "moved"
        assert on_share(env, raw_file_id).stat().st_size > 0

    again = run_remover("thermo1")  # enough free space now: nothing more is deleted
    assert again.decided("deleted") == [] and again.decided("kept: enough free space") == [old]


def _rewrite(path: Path) -> None:
    """Other bytes at the start of ``path``, same size, same inode."""
    with path.open("r+b") as handle:
        old = handle.read(32)
        handle.seek(0)
        handle.write(bytes(255 - byte for byte in old))


def _object(raw_file_id: str, path: str) -> tuple[str, str]:
    raw_file = get_raw_file(raw_file_id)
    bucket, _, prefix = raw_file.s3_backup_key.removeprefix("s3://").partition("/")
    return bucket, prefix + path


def _set_files(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.lstat().st_size for p in sorted(folder.rglob("*"))}


def _alert_settings(env: PipelineEnv) -> Any:
    from shared.settings import parse_settings

    raw = yaml.safe_load(env.config_path.read_text())
    raw["alerts"] = {
        "enabled": True,
        "channels": {"webhook": {"conn_id": "purge_test_hook"}},
        "free_space": {"instrument_min_free_gb": 0, "backup_min_free_gb": 0},  # only raw files here
    }
    return parse_settings(raw, env.config_path)


def test_each_failed_check_keeps_its_set_records_why_and_alerts_once(
    share_env: tuple[PipelineEnv, Path], s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rawvault.alerts.check import run_check

    env, share = share_env
    names = ["corrupt_local", "missing_object", "replaced_object", "changed_source", "extra_file", "symlink", "good"]
    ids = {name: bruker_set(env, s3, f"{name}.d", days=40 - index) for index, name in enumerate(names)}
    sent: list[dict[str, Any]] = []
    alert_settings = _alert_settings(env)
    run_check(alert_settings, {"webhook": sent.append})  # the first check ever: a baseline summary
    sent.clear()

    _rewrite(env.backup_root / get_raw_file(ids["corrupt_local"]).backup_base_path / "corrupt_local.d/analysis.tdf")
    bucket, key = _object(ids["missing_object"], "missing_object.d/analysis.tdf")
    s3.delete_object(Bucket=bucket, Key=key)  # versioned: a delete marker hides it
    bucket, key = _object(ids["replaced_object"], "replaced_object.d/analysis.tdf")
    size = s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
    s3.delete_object(Bucket=bucket, Key=key)  # (the test client never overwrites: If-None-Match on every PUT)
    s3.put_object(Bucket=bucket, Key=key, Body=b"x" * size)  # a new version: the same size, other content
    _rewrite(on_share(env, ids["changed_source"]) / "analysis.tdf")
    (on_share(env, ids["extra_file"]) / "notes.txt").write_text("written after the backup")
    (on_share(env, ids["symlink"]) / "link").symlink_to("/etc/hostname")
    before = {name: _set_files(on_share(env, raw_file_id)) for name, raw_file_id in ids.items()}
    env = reconfigure(env, share, monkeypatch, min_free_gb=1.0)  # more than the share holds: every set is needed

    run = run_remover("tims1")

    assert (run.state, run.task_state) == ("failed", "failed")  # alerts are off here: a red task tells someone
    expected = {
        "corrupt_local": ("local", "corrupt_local.d/analysis.tdf is corrupted: MD5"),
        "missing_object": ("s3", "missing_object.d/analysis.tdf: missing"),
        "replaced_object": ("s3", "replaced_object.d/analysis.tdf: ETag differs"),
        "changed_source": ("share", "changed_source.d/analysis.tdf has MD5"),
        "extra_file": ("share", "extra_file.d/notes.txt is not a recorded file of the set"),
        "symlink": ("share", "symlink.d/link is a symbolic link (to /etc/hostname)"),
    }
    for name, (check, text) in expected.items():
        raw_file = get_raw_file(ids[name])
        assert raw_file.status == "moved" and raw_file.purge_started_at is None, name
        assert raw_file.purge_blocked_reason.startswith(f"{check}: "), raw_file.purge_blocked_reason
        assert text in raw_file.purge_blocked_reason, raw_file.purge_blocked_reason
        assert raw_file.purge_checked_at is not None
        assert _set_files(on_share(env, ids[name])) == before[name], f"{name}: the kept set was touched"
    assert get_raw_file(ids["good"]).status == "purged"
    assert not on_share(env, ids["good"]).exists()

    run_check(alert_settings, {"webhook": sent.append})
    announced = {message["subject"].removeprefix("raw_file:"): message for message in sent}
    assert set(announced) == {ids[name] for name in expected}
    for name, (check, _text) in expected.items():
        message = announced[ids[name]]
        assert message["state"] == f"purge_blocked:{check}" and message["title"].startswith("Purge held back")
    sent.clear()
    run_remover("tims1")  # the same reasons again
    run_check(alert_settings, {"webhook": sent.append})
    assert sent == []  # one alert per change, not one per run

    (on_share(env, ids["extra_file"]) / "notes.txt").unlink()  # someone looked and fixed it
    run_remover("tims1")
    assert get_raw_file(ids["extra_file"]).status == "purged"
    run_check(alert_settings, {"webhook": sent.append})
    assert [(m["subject"], m["severity"]) for m in sent] == [(f"raw_file:{ids['extra_file']}", "recovered")]


def test_dry_run_deletes_nothing_and_reports_exactly_what_a_run_deletes(
    share_env: tuple[PipelineEnv, Path], s3: Any, mongo_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env, share = share_env
    oldest, older, old = thermo_sets(env, s3, ages=(30, 20, 10))
    fill(share, leave_free=3 * MIB)
    folder = env.instrument_path("thermo1")
    target = free_bytes(folder) + 9 * MIB
    env = reconfigure(env, share, monkeypatch, min_free_gb=target / GB, dry_run=True)
    free_before = free_bytes(folder)

    dry = run_remover("thermo1")

    assert (dry.state, dry.task_state) == ("success", "success")
    assert dry.decided("would delete") == [oldest, older]
    assert dry.decided("kept: enough free space") == [old]
    assert free_bytes(folder) == free_before
    for raw_file_id in (oldest, older, old):
        raw_file = get_raw_file(raw_file_id)
        assert raw_file.status == "moved" and raw_file.purge_started_at is None and not raw_file.purge_evidence
        assert on_share(env, raw_file_id).exists()
    assert dry.report is not None and dry.report["dry_run"] and dry.report["free_after"] >= target

    command = [str(REPO / "scripts" / "rawvault.sh"), "purge", "--dry-run", "--instrument", "thermo1"]
    table = subprocess.run(command, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert table.returncode == 0, table.stderr
    rows = {line.split()[0]: line for line in table.stdout.splitlines()[3:]}
    assert "would delete" in rows[oldest] and "would delete" in rows[older], table.stdout
    assert "kept: enough free space" in rows[old], table.stdout
    assert table.stdout.startswith("thermo1 (dry run): would delete 2 set(s)")
    as_json = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert as_json.returncode == 0, as_json.stderr
    assert [s["raw_file_id"] for s in json.loads(as_json.stdout)["sets"] if s["decision"] == "would delete"] == [
        oldest,
        older,
    ]
    refused = subprocess.run(command[:2] + command[3:], capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "add --dry-run" in refused.stderr

    env = reconfigure(env, share, monkeypatch, min_free_gb=target / GB, dry_run=False)
    real = run_remover("thermo1")
    assert real.decided("deleted") == dry.decided("would delete")
    assert free_bytes(folder) >= target
