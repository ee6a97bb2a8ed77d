"""The purge's settings: validated like every other key, per-instrument overrides, environment-dependent defaults."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.settings import SettingsError, load_settings, parse_settings, purge_policy
from shared.settings.purge import environment_of

ENVS = Path(__file__).resolve().parents[2] / "envs"


def _raw(
    backup_type: str = "s3", purge: dict[str, Any] | None = None, tims1_purge: dict[str, Any] | None = None
) -> dict[str, Any]:
    tims1: dict[str, Any] = {"type": "bruker", "path": "/data/tims1"}
    if tims1_purge is not None:
        tims1["purge"] = tims1_purge
    raw: dict[str, Any] = {
        "instruments": {
            "tims1": tims1,
            "astral1": {"type": "thermo", "path": "/data/astral1"},
        },
        "locations": {"backup": "/backup"},
        "backup": {"backup_type": backup_type, "s3": {"region": "eu-central-1", "bucket_prefix": "fac"}},
    }
    if purge is not None:
        raw["purge"] = purge
    return raw


def _settings(source: str = "/etc/rawvault/rawvault.local.yaml", **kwargs: Any) -> Any:
    return parse_settings(_raw(**kwargs), Path(source))


def test_defaults_delete_nothing_anywhere_and_never_in_a_dry_run_outside_production() -> None:
    policy = purge_policy(_settings(), "tims1")
    assert policy.enabled is False
    assert policy.dry_run is True
    assert policy.require == {"s3", "local"}
    assert (policy.min_free_gb, policy.min_age, policy.max_per_run) == (500.0, timedelta(days=30), 10)
    assert purge_policy(_settings("/opt/rawvault/envs/rawvault.production.yaml"), "tims1").dry_run is False
    assert purge_policy(_settings("/tmp/anything.yaml"), "tims1").dry_run is True
    assert purge_policy(_settings(backup_type="local"), "tims1").require == {"local"}


def test_an_instrument_overrides_any_key_and_inherits_the_rest() -> None:
    settings = _settings(
        purge={"enabled": True, "min_free_gb": 100, "min_age_days": 14, "dry_run": False, "schedule": "@hourly"},
        tims1_purge={"min_free_gb": 2000.5, "require": ["local"], "max_per_run": 3, "schedule": "0 3 * * *"},
    )
    tims = purge_policy(settings, "tims1")
    astral = purge_policy(settings, "astral1")
    assert (tims.min_free_gb, tims.require, tims.max_per_run, tims.schedule) == (2000.5, {"local"}, 3, "0 3 * * *")
    assert (tims.enabled, tims.min_age, tims.dry_run) == (True, timedelta(days=14), False)  # inherited
    assert (astral.min_free_gb, astral.require, astral.max_per_run) == (100, {"s3", "local"}, 10)
    assert astral.min_free_bytes == 100 * 10**9


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"purge": {"min_free_gb": -1}}, r"purge\.min_free_gb: Input should be greater than or equal to 0 .*fix: use"),
        ({"purge": {"max_per_run": 0}}, r"purge\.max_per_run: .*fix: use a whole number from 1 to 1000"),
        ({"purge": {"min_age_days": ".inf"}}, r"purge\.min_age_days: "),
        ({"purge": {"require": ["glacier"]}}, r"purge\.require\.0: Input should be 's3' or 'local'.*fix: list what"),
        ({"purge": {"require": ["s3", "s3"]}}, r"purge\.require: lists \['s3', 's3'\] with a repetition"),
        ({"purge": {"require": []}}, r"purge\.require: List should have at least 1 item"),
        ({"purge": {"dry_run": "yes"}}, r"purge\.dry_run: Input should be a valid boolean .*fix: write true"),
        ({"purge": {"enable": True}}, r"purge\.enable: unknown key \(misspelt\?\)"),
        ({"purge": {"schedule": "every day"}}, r"purge\.schedule: .*not a valid cron expression"),
        (
            {"backup_type": "local", "purge": {"require": ["s3"]}},
            r"purge\.require: requires a verified S3 copy, but backup\.backup_type is 'local'.*fix: use \[local\]",
        ),
        (
            {"backup_type": "local", "purge": {"require": ["s3", "local"]}},
            r"purge\.require: requires a verified S3 copy",
        ),
    ],
)
def test_bad_purge_keys_name_the_key_and_the_fix(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        _settings(**kwargs)


def test_bad_instrument_purge_keys_name_the_instrument_key_and_the_fix() -> None:
    with pytest.raises(SettingsError, match=r"instruments\.tims1\.purge\.max_per_run: .*fix: use a whole number"):
        _settings(tims1_purge={"max_per_run": -2})
    with pytest.raises(
        SettingsError, match=r"instruments\.tims1\.purge\.require: requires a verified S3 copy, but .*'local'"
    ):
        _settings(backup_type="local", tims1_purge={"require": ["s3"]})


def test_the_file_movers_verify_key() -> None:
    raw = _raw()
    raw["file_mover"] = {"verify": "rehash"}
    assert parse_settings(raw, Path("/x.yaml")).file_mover.verify == "rehash"
    assert _settings().file_mover.verify == "size_mtime"
    raw["file_mover"] = {"verify": "md5"}
    with pytest.raises(SettingsError, match=r"file_mover\.verify: Input should be 'size_mtime' or 'rehash'.*fix: use"):
        parse_settings(raw, Path("/x.yaml"))


def test_environment_of_a_settings_file() -> None:
    assert environment_of(Path("/a/rawvault.production.yaml")) == "production"
    assert environment_of(Path("rawvault.local.yaml")) == "local"
    assert environment_of(Path("/a/production.yaml")) is None
    assert environment_of(Path("/a/rawvault.production.yaml.bak")) is None


@pytest.mark.parametrize("env", ["local", "sandbox", "production"])
def test_shipped_environments_keep_the_purge_off(env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAWVAULT_DATA_DIR", "/srv/data")
    for name in ("INSTRUMENT_ROOT", "BACKUP_ROOT"):
        monkeypatch.setenv(name, "/srv/x")
    settings = load_settings(ENVS / f"rawvault.{env}.yaml")
    for instrument_id in settings.instruments:
        policy = purge_policy(settings, instrument_id)
        assert policy.enabled is False
        assert policy.dry_run is (env != "production")
