"""backup.s3.expected_bucket_owner: a 12-digit AWS account id, optional; a bad one names the key and the fix."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from shared.settings import SettingsError, parse_settings

SOURCE = Path("/etc/rawvault/test.yaml")
BASE: dict[str, Any] = {
    "instruments": {"thermo1": {"type": "thermo", "path": "/data/thermo1"}},
    "locations": {"backup": "/data/backup"},
    "backup": {"backup_type": "s3", "s3": {"region": "eu-central-1", "bucket_prefix": "rv-test"}},
}


def with_owner(value: Any) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    raw["backup"]["s3"]["expected_bucket_owner"] = value
    return raw


@pytest.mark.parametrize(("value", "expected"), [("011122223333", "011122223333"), (111122223333, "111122223333")])
def test_an_account_id_is_accepted(value: Any, expected: str) -> None:
    assert parse_settings(with_owner(value), SOURCE).backup.s3.expected_bucket_owner == expected


def test_it_is_optional() -> None:
    assert parse_settings(copy.deepcopy(BASE), SOURCE).backup.s3.expected_bucket_owner is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (11122223333, "quote the account id so that its leading zeros stay"),  # YAML dropped a leading zero
        ("my-account", "'my-account' is not an AWS account id"),
        ("1111-2222-3333", "is not an AWS account id"),
    ],
)
def test_anything_else_names_the_key_and_the_fix(value: Any, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_settings(with_owner(value), SOURCE)
    text = str(caught.value)
    assert "backup.s3.expected_bucket_owner" in text and message in text and "12-digit AWS account id" in text
