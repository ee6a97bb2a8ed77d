"""The log scanner of the secrets test finds a secret in every form it may take in a log line."""

from __future__ import annotations

import base64
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.integration.secret_scan import forms_of, scan

SECRET = "rvMongoPw-3f9a/b+c=d@e:f"


@pytest.mark.parametrize("prefix", [b"", b"u", b"us", b"user:", b"Authorization: Basic xyz"])
def test_base64_of_a_secret_is_found_at_any_offset(tmp_path: Path, prefix: bytes) -> None:
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        log = tmp_path / "x.log"
        log.write_text("ok\nheader " + encode(prefix + SECRET.encode() + b"!tail").decode() + "\n")
        (leak,) = scan([log], {"mongo": SECRET})
        assert (leak.secret_name, leak.line_number) == ("mongo", 2)


@pytest.mark.parametrize("shown", [SECRET, quote(SECRET, safe=""), f"mongodb://rawvault:{quote(SECRET, safe='')}@h"])
def test_plain_and_url_encoded_secrets_are_found(tmp_path: Path, shown: str) -> None:
    log = tmp_path / "x.log"
    log.write_text(f"a\nb\nconnecting to {shown} now\n")
    leaks = scan([log], {"mongo": SECRET})
    assert leaks and {leak.line_number for leak in leaks} == {3}
    assert str(log) + ":3: mongo" in str(leaks[0])


def test_clean_logs_and_short_fragments_give_nothing(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("connected to MongoDB at 127.0.0.1:27017\nrvMongo\n")
    assert scan([log], {"mongo": SECRET}) == []
    assert all(len(form) >= 8 for form in forms_of("abc"))
