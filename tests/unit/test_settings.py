"""Settings: every shipped environment loads; every invalid case names its key and the fix."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.settings import ENVS_DIR, SettingsError, get_settings, load_settings, parse_settings

VALID: dict[str, Any] = {
    "instruments": {
        "thermo1": {"type": "thermo", "path": "/data/thermo1"},
        "tims1": {"type": "bruker", "path": "instruments/tims1"},
    },
    "locations": {"backup": "/data/backup"},
    "backup": {"backup_type": "s3", "s3": {"region": "eu-central-1", "bucket_prefix": "rv-test", "part_size_mb": 16}},
}
SOURCE = Path("/etc/rawvault/test.yaml")


def _with(change: Any) -> dict[str, Any]:
    raw = copy.deepcopy(VALID)
    change(raw)
    return raw


@pytest.mark.parametrize("env", ["local", "sandbox", "production"])
def test_shipped_environments_load(env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAWVAULT_CONFIG", raising=False)
    monkeypatch.setenv("RAWVAULT_ENV", env)
    get_settings.cache_clear()
    settings = get_settings()
    get_settings.cache_clear()
    assert settings.source == ENVS_DIR / f"rawvault.{env}.yaml"
    assert settings.instruments
    assert all(instrument.path.is_absolute() for instrument in settings.instruments.values())


def test_valid_settings_resolve_relative_paths_against_the_file() -> None:
    settings = parse_settings(copy.deepcopy(VALID), SOURCE)
    assert settings.instruments["tims1"].path == Path("/etc/rawvault/instruments/tims1")
    assert settings.part_size_bytes == 16 * 1024 * 1024
    assert settings.acquisition.poke_interval_seconds == 60
    assert settings.queue("s3_uploader") == "s3_uploader"


def test_environment_variables_expand_in_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RV_ROOT", "/srv/rv")
    raw = _with(lambda d: d["locations"].update(backup="${RV_ROOT}/backup"))
    assert parse_settings(raw, SOURCE).locations.backup == Path("/srv/rv/backup")
    raw = _with(lambda d: d["locations"].update(backup="${RV_UNSET_VAR:-/default}/backup"))
    assert parse_settings(raw, SOURCE).locations.backup == Path("/default/backup")


@pytest.mark.parametrize(
    ("change", "key", "fix"),
    [
        (lambda d: d["backup"].update(backup_type="ftp"), "backup.backup_type", "'local'"),
        (lambda d: d["backup"]["s3"].pop("region"), "backup.s3.region", "AWS region"),
        (lambda d: d["backup"]["s3"].pop("bucket_prefix"), "backup.s3.bucket_prefix", "prefix of your bucket"),
        (lambda d: d["backup"]["s3"].update(region=""), "backup.s3.region", "AWS region"),
        (lambda d: d["backup"].pop("s3"), "backup.s3", "add a backup.s3 section"),
        (
            lambda d: d["instruments"]["thermo1"].update(type="waters"),
            "instruments.thermo1.type",
            "bruker, sciex, thermo",
        ),
        (lambda d: d["instruments"]["thermo1"].pop("path"), "instruments.thermo1.path", "folder the instrument"),
        (lambda d: d["instruments"]["thermo1"].pop("type"), "instruments.thermo1.type", "bruker, sciex, thermo"),
        (lambda d: d["backup"]["s3"].update(part_size_mb=4), "backup.s3.part_size_mb", "from 5 to 5120"),
        (lambda d: d["backup"]["s3"].update(part_size_mb=5121), "backup.s3.part_size_mb", "10000 parts"),
        (lambda d: d["backup"]["s3"].update(part_size_mb="64"), "backup.s3.part_size_mb", "from 5 to 5120"),
        (lambda d: d["backup"]["s3"].update(part_size_mb=8.5), "backup.s3.part_size_mb", "whole number"),
        (
            lambda d: d["backup"]["s3"].update(auto_create_buckets="yes"),
            "backup.s3.auto_create_buckets",
            "true or false",
        ),
        (lambda d: d["instruments"]["thermo1"].update(path=42), "instruments.thermo1.path", "folder the instrument"),
        (
            lambda d: d.update(acquisition={"poke_interval_seconds": "fast"}),
            "acquisition.poke_interval_seconds",
            "number",
        ),
        (lambda d: d.update(instruments={}), "instruments", "list each instrument"),
        (lambda d: d.update(instruments={"bad id!": {"type": "thermo", "path": "/x"}}), "instruments", "bad id!"),
        (lambda d: d.update(instruments=["thermo1"]), "instruments", "valid dictionary"),
        (lambda d: d.update(instrumnets={}), "instrumnets", "unknown key"),
        (lambda d: d["backup"]["s3"].update(storage_class="COLD"), "backup.s3.storage_class", "DEEP_ARCHIVE"),
        (lambda d: d["backup"]["s3"].update(kms_key_id="k"), "backup.s3", "aws:kms"),
        (lambda d: d["backup"]["s3"].update(bucket_prefix="My_Bucket"), "backup.s3.bucket_prefix", "lower-case"),
        (lambda d: d.pop("locations"), "locations", "missing"),
        (lambda d: d.update(file_mover={"target_folder": "../x"}), "file_mover.target_folder", "plain folder name"),
        (lambda d: d["locations"].update(backup="${RV_SURELY_UNSET}/b"), "locations.backup", "RV_SURELY_UNSET"),
        (lambda d: d["backup"]["s3"].update(sweep_schedule="often"), "backup.s3.sweep_schedule", "cron expression"),
        (lambda d: d["backup"]["s3"].update(max_upload_attempts=0), "backup.s3.max_upload_attempts", "1 to 100"),
        (lambda d: d["backup"]["s3"].update(stale_upload_minutes=0), "backup.s3.stale_upload_minutes", "below"),
        # Cron expressions are checked as Airflow would schedule them, not at DAG import.
        (lambda d: d.update(watcher={"schedule": "*/5 * * *"}), "watcher.schedule", "'*/5 * * *' is not a valid cron"),
        (lambda d: d.update(watcher={"schedule": "61 * * * *"}), "watcher.schedule", "5 cron fields in quotes"),
        (lambda d: d.update(watcher={"schedule": "* * * * * *"}), "watcher.schedule", "not a valid cron expression"),
        (lambda d: d["backup"]["s3"].update(sweep_schedule="0 0 31 2 *"), "backup.s3.sweep_schedule", "never fires"),
        (lambda d: d["backup"]["s3"].update(sweep_schedule="@reboot"), "backup.s3.sweep_schedule", "@hourly, @daily"),
        # NaN and infinity are never a duration.
        (
            lambda d: d.update(acquisition={"poke_interval_seconds": float("nan")}),
            "acquisition.poke_interval_seconds",
            "finite number",
        ),
        (lambda d: d.update(file_mover={"delay_minutes": float("inf")}), "file_mover.delay_minutes", "not .nan"),
        (
            lambda d: d["backup"]["s3"].update(upload_retry_delay_minutes=float("-inf")),
            "backup.s3.upload_retry_delay_minutes",
            "finite number",
        ),
        (
            lambda d: d["backup"]["s3"].update(pending_upload_after_hours=0),
            "backup.s3.pending_upload_after_hours",
            "hours above 0",
        ),
        # The fallback project must give a bucket S3 accepts.
        (lambda d: d.update(watcher={"fallback_project_id": "__"}), "watcher.fallback_project_id", "no letters"),
        (
            lambda d: d.update(watcher={"fallback_project_id": "x" * 60}),
            "watcher.fallback_project_id",
            "is not 3-63 lower-case letters",
        ),
        # The lease of a dead run must have expired when upload_to_s3's retry starts.
        (
            lambda d: d["backup"]["s3"].update(stale_upload_minutes=20),
            "backup.s3.stale_upload_minutes",
            "20 is not below backup.s3.upload_retry_delay_minutes (15)",
        ),
        (
            lambda d: d["backup"]["s3"].update(upload_retry_delay_minutes=5, stale_upload_minutes=5),
            "backup.s3.stale_upload_minutes",
            "raise upload_retry_delay_minutes",
        ),
        # Scrubbing: a budget of GB per run (0: off) and a period the weekly verifier can keep.
        (
            lambda d: d["backup"].update(scrub={"budget_gb_per_run": -1}),
            "backup.scrub.budget_gb_per_run",
            "0: no scrubbing",
        ),
        (
            lambda d: d["backup"].update(scrub={"period_days": 3}),
            "backup.scrub.period_days",
            "backup_verifier runs weekly",
        ),
        (lambda d: d["backup"].update(scrub={"budget_gb": 5}), "backup.scrub.budget_gb", "unknown key (misspelt?)"),
        # Instrument folders and the backup never share or nest.
        (
            lambda d: d["instruments"]["thermo1"].update(path="/etc/rawvault/instruments/tims1"),
            "instruments.tims1.path",
            "also the folder of instrument 'thermo1'",
        ),
        (
            lambda d: d["locations"].update(backup="/data/thermo1/backup"),
            "locations.backup",
            "inside the folder of instrument 'thermo1'",
        ),
        (lambda d: d["locations"].update(backup="/data/thermo1"), "locations.backup", "outside every instrument"),
        (
            lambda d: d["instruments"]["thermo1"].update(path="/data/backup/thermo1"),
            "instruments.thermo1.path",
            "inside the local backup",
        ),
    ],
)
def test_invalid_settings_name_file_key_and_fix(change: Any, key: str, fix: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_settings(_with(change), SOURCE)
    message = str(caught.value)
    assert str(SOURCE) in message
    assert f"  {key}:" in message
    assert fix in message


def test_scrub_defaults_and_budget_in_bytes() -> None:
    scrub = parse_settings(_with(lambda d: None), SOURCE).backup.scrub
    assert (scrub.budget_gb_per_run, scrub.period_days, scrub.enabled) == (50.0, 90.0, True)
    raw = _with(lambda d: d["backup"].update(scrub={"budget_gb_per_run": 1.5, "period_days": 7}))
    assert parse_settings(raw, SOURCE).backup.scrub.budget_bytes == 1_500_000_000
    off = _with(lambda d: d["backup"].update(scrub={"budget_gb_per_run": 0}))
    assert not parse_settings(off, SOURCE).backup.scrub.enabled


@pytest.mark.parametrize("schedule", ["*/5 * * * *", "0 3 * * MON-FRI", "@daily", " 15 * * * * "])
def test_cron_schedules_airflow_accepts(schedule: str) -> None:
    raw = _with(lambda d: d.update(watcher={"schedule": schedule}))
    raw["backup"]["s3"]["sweep_schedule"] = schedule
    settings = parse_settings(raw, SOURCE)
    assert settings.watcher.schedule == settings.backup.s3.sweep_schedule == schedule.strip()


def test_cross_checks_that_do_not_apply() -> None:
    # Without Airflow retries of upload_to_s3 the lease may be longer than their delay.
    raw = _with(lambda d: d["backup"]["s3"].update(upload_retries=0, stale_upload_minutes=30))
    assert parse_settings(raw, SOURCE).backup.s3.stale_upload_minutes == 30
    # Without S3 the fallback project needs no bucket; folders side by side are fine.
    raw = _with(lambda d: d.update(backup={"backup_type": "local"}, watcher={"fallback_project_id": "__"}))
    raw["locations"]["backup"] = "/data/thermo1-backup"
    assert parse_settings(raw, SOURCE).watcher.fallback_project_id == "__"


def test_every_cross_check_problem_is_reported_at_once() -> None:
    raw = _with(lambda d: d["backup"]["s3"].update(stale_upload_minutes=20))
    raw["watcher"] = {"fallback_project_id": "__"}
    with pytest.raises(SettingsError) as caught:
        parse_settings(raw, SOURCE)
    message = str(caught.value)
    assert "  watcher.fallback_project_id:" in message and "  backup.s3.stale_upload_minutes:" in message


def test_nan_in_a_yaml_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nan.yaml"
    path.write_text(yaml.safe_dump(VALID) + "acquisition:\n  size_stable_seconds: .nan\n")
    with pytest.raises(SettingsError, match=r"acquisition\.size_stable_seconds: Input should be a finite number"):
        load_settings(path)


def test_local_backup_needs_no_s3_section() -> None:
    raw = _with(lambda d: d.update(backup={"backup_type": "local"}))
    settings = parse_settings(raw, SOURCE)
    assert not settings.s3_enabled
    assert settings.part_size_bytes == 64 * 1024 * 1024


def test_missing_file_invalid_yaml_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"nope\.yaml does not exist"):
        load_settings(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("instruments: [unclosed\n")
    with pytest.raises(SettingsError, match=r"broken\.yaml is not valid YAML"):
        load_settings(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(SettingsError, match="YAML mapping at the top level"):
        load_settings(listing)


def test_config_variable_wins_over_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    custom = tmp_path / "custom.yaml"
    custom.write_text(yaml.safe_dump(VALID))
    monkeypatch.setenv("RAWVAULT_ENV", "production")
    monkeypatch.setenv("RAWVAULT_CONFIG", str(custom))
    get_settings.cache_clear()
    try:
        assert get_settings().source == custom
    finally:
        get_settings.cache_clear()


def test_no_environment_selected_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAWVAULT_CONFIG", raising=False)
    monkeypatch.delenv("RAWVAULT_ENV", raising=False)
    with pytest.raises(SettingsError, match=r"set RAWVAULT_ENV to one of local, production, sandbox"):
        load_settings()
    monkeypatch.setenv("RAWVAULT_ENV", "../etc")
    with pytest.raises(SettingsError, match="not a valid environment name"):
        load_settings()
    monkeypatch.setenv("RAWVAULT_ENV", "staging")
    with pytest.raises(SettingsError, match=r"rawvault\.staging\.yaml does not exist"):
        load_settings()
