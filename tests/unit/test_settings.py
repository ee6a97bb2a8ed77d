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
    ],
)
def test_invalid_settings_name_file_key_and_fix(change: Any, key: str, fix: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_settings(_with(change), SOURCE)
    message = str(caught.value)
    assert str(SOURCE) in message
    assert f"  {key}:" in message
    assert fix in message


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
