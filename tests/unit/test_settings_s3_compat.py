"""Settings of S3-compatible stores: compatibility, bandwidth windows, Object Lock, lifecycle, time zone."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.settings import Settings, SettingsError, longest_resume_hours, parse_settings

REGION = "us-east-1"


def load(tmp_path: Path, top: dict[str, Any] | None = None, **s3: Any) -> Settings:
    document = {
        "instruments": {"thermo1": {"type": "thermo", "path": str(tmp_path / "thermo1")}},
        "locations": {"backup": str(tmp_path / "backup")},
        "backup": {"backup_type": "s3", "s3": {"region": REGION, "bucket_prefix": "facility", **s3}},
        **(top or {}),
    }
    return parse_settings(document, tmp_path / "rawvault.test.yaml")


def problem(tmp_path: Path, top: dict[str, Any] | None = None, **s3: Any) -> str:
    with pytest.raises(SettingsError) as error:
        load(tmp_path, top, **s3)
    return str(error.value)


def test_defaults_probe_and_set_nothing(tmp_path: Path) -> None:
    settings = load(tmp_path)
    s3 = settings.backup.s3
    assert s3 is not None
    assert (s3.compatibility, s3.reprobe_after_days) == ("auto", 7.0)
    assert s3.bandwidth is None and s3.object_lock is None and s3.lifecycle is None
    assert settings.timezone == "UTC"


def test_everything_set(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        {"timezone": "Europe/Berlin"},
        compatibility="strict",
        bandwidth={
            "limit_mbit": 200,
            "schedule": [
                {"days": ["mon", "tue", "wed", "thu", "fri"], "from": "08:00", "to": "18:00", "limit_mbit": 50},
                {"days": ["fri"], "from": "22:00", "to": "06:00", "limit_mbit": 0},
                {"days": ["sun"], "from": "00:00", "to": "24:00", "limit_mbit": 1000},
            ],
        },
        object_lock={"mode": "COMPLIANCE", "days": 3650},
        lifecycle={
            "abort_incomplete_multipart_days": 7,
            "transition": {"days": 30, "storage_class": "STANDARD_IA"},
            "noncurrent_version_expiration_days": 90,
        },
    )
    s3 = settings.backup.s3
    assert s3 is not None and s3.bandwidth is not None and s3.lifecycle is not None
    assert [window.length_minutes for window in s3.bandwidth.schedule] == [600, 480, 1440]
    assert s3.lifecycle.transition is not None and s3.lifecycle.transition.storage_class == "STANDARD_IA"


def test_unknown_time_zone(tmp_path: Path) -> None:
    message = problem(tmp_path, {"timezone": "Europe/Atlantis"})
    assert "timezone: unknown time zone 'Europe/Atlantis' -> fix: write an IANA time zone name" in message


def test_unquoted_time_says_to_quote_it(tmp_path: Path) -> None:
    # YAML 1.1 reads 18:00 as the base-60 number 1080.
    message = problem(tmp_path, bandwidth={"schedule": [{"from": "08:00", "to": 1080, "limit_mbit": 5}]})
    assert "backup.s3.bandwidth.schedule.0.to: got the number 1080" in message
    assert 'write a 24-hour time in quotes, e.g. "08:00"' in message


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        ({"from": "8am", "to": "18:00", "limit_mbit": 5}, "schedule.0.from: '8am' is not a time of day"),
        ({"from": "08:00", "to": "08:00", "limit_mbit": 5}, "give a window of no length"),
        ({"from": "24:00", "to": "06:00", "limit_mbit": 5}, 'is the next day\'s "00:00"'),
        ({"from": "08:00", "to": "18:00", "limit_mbit": -1}, "schedule.0.limit_mbit: Input should be greater than"),
        ({"days": ["mon", "mon"], "from": "08:00", "to": "18:00", "limit_mbit": 5}, "names a day twice"),
        ({"days": ["monday"], "from": "08:00", "to": "18:00", "limit_mbit": 5}, "schedule.0.days.0: Input should be"),
        ({"days": [], "from": "08:00", "to": "18:00", "limit_mbit": 5}, "list at least one day"),
        ({"start": "08:00", "to": "18:00", "limit_mbit": 5}, "schedule.0.start: unknown key"),
    ],
)
def test_bad_window(tmp_path: Path, window: dict[str, Any], expected: str) -> None:
    assert expected in problem(tmp_path, bandwidth={"schedule": [window]})


def test_overlapping_windows_are_refused_naming_both(tmp_path: Path) -> None:
    message = problem(
        tmp_path,
        bandwidth={
            "schedule": [
                {"days": ["sun"], "from": "22:00", "to": "06:00", "limit_mbit": 10},
                {"days": ["mon"], "from": "05:00", "to": "07:00", "limit_mbit": 0},
            ]
        },
    )
    assert "schedule windows 0 (sun 22:00-06:00) and 1 (mon 05:00-07:00) overlap at mon 05:00" in message


def test_a_limit_of_zero_outside_every_window_is_refused(tmp_path: Path) -> None:
    message = problem(tmp_path, bandwidth={"limit_mbit": 0})
    assert (
        "bandwidth.limit_mbit: Input should be greater than 0" in message and "remove the key for no limit" in message
    )


def test_bad_compatibility_and_object_lock(tmp_path: Path) -> None:
    message = problem(tmp_path, compatibility="loose", object_lock={"mode": "governance", "days": 0})
    assert "backup.s3.compatibility: Input should be 'auto', 'aws' or 'strict'" in message
    assert "backup.s3.object_lock.mode: Input should be 'GOVERNANCE' or 'COMPLIANCE'" in message
    assert "backup.s3.object_lock.days: Input should be greater than or equal to 1" in message


def test_abort_days_must_outlast_every_resume_and_the_error_says_the_formula(tmp_path: Path) -> None:
    assert longest_resume_hours(5, 24) == 150
    message = problem(tmp_path, lifecycle={"abort_incomplete_multipart_days": 6})
    assert (
        "backup.s3.lifecycle.abort_incomplete_multipart_days: 6 days is not longer than the longest time an upload "
        "may still be resumed: max_upload_attempts x (upload_timeout_hours + 6 h backoff cap) = 5 x (24 + 6) h = "
        "150 h" in message
    )
    assert "-> fix: set it to 7 or more" in message
    load(tmp_path, lifecycle={"abort_incomplete_multipart_days": 7})
    # Fewer, shorter attempts allow a shorter abort.
    load(tmp_path, max_upload_attempts=2, upload_timeout_hours=4, lifecycle={"abort_incomplete_multipart_days": 1})


def test_transition_rules(tmp_path: Path) -> None:
    early = problem(tmp_path, lifecycle={"transition": {"days": 10, "storage_class": "ONEZONE_IA"}})
    assert "S3 moves objects to ONEZONE_IA only once they are 30 days old: set days to 30 or more" in early
    backwards = problem(
        tmp_path, storage_class="GLACIER", lifecycle={"transition": {"days": 30, "storage_class": "STANDARD_IA"}}
    )
    assert "S3 cannot move objects from GLACIER (backup.s3.storage_class) to STANDARD_IA" in backwards
    unknown = problem(tmp_path, lifecycle={"transition": {"days": 30, "storage_class": "STANDARD"}})
    assert "lifecycle.transition.storage_class" in unknown and "use one of STANDARD_IA" in unknown


def test_an_empty_lifecycle_section_says_what_to_set(tmp_path: Path) -> None:
    assert "sets no rule: set abort_incomplete_multipart_days, transition or" in problem(tmp_path, lifecycle={})


def test_shipped_environments_document_the_new_keys() -> None:
    envs = Path(__file__).resolve().parents[2] / "envs"
    for env in sorted(envs.glob("rawvault.*.yaml")):
        text = env.read_text()
        for key in ("compatibility:", "reprobe_after_days:", "bandwidth:", "object_lock:", "lifecycle:", "timezone:"):
            assert key in text, f"{env.name} does not document {key}"


@pytest.mark.parametrize("env", ["local", "sandbox", "production"])
def test_commented_examples_are_valid_when_uncommented(env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAWVAULT_DATA_DIR", "/tmp/rawvault-data")
    path = Path(__file__).resolve().parents[2] / "envs" / f"rawvault.{env}.yaml"
    text = re.sub(r"^    # (bandwidth|object_lock|lifecycle):", r"    \1:", path.read_text(), flags=re.MULTILINE)
    text = re.sub(r"^    #   ", "      ", text, flags=re.MULTILINE)
    settings = parse_settings(yaml.safe_load(text), path)
    s3 = settings.backup.s3
    assert s3 is not None and s3.bandwidth is not None and s3.object_lock is not None and s3.lifecycle is not None
