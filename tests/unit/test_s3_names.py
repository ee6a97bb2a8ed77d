"""Bucket names, collisions, key prefixes and path validation."""

from __future__ import annotations

import pytest

from rawvault.s3.buckets import bucket_name, check_no_bucket_collisions, normalise_project_id
from rawvault.s3.errors import BucketNameCollisionError, BucketNameError, S3PermanentError, UnsafePathError
from rawvault.s3.keys import key_prefix_for, object_key, validate_key_prefix, validate_relative_path
from rawvault.s3.manifest import manifest_key


@pytest.mark.parametrize(
    ("project_id", "expected"),
    [
        ("_FALLBACK", "rv-fallback"),
        ("P_1", "rv-p-1"),
        ("p.1", "rv-p-1"),
        ("Proj__Alpha..2", "rv-proj-alpha-2"),
        ("  x  ", "rv-x"),
        ("Ärger", "rv-rger"),
        ("a" * 60, "rv-" + "a" * 60),
    ],
)
def test_bucket_name_normalises_to_s3_rules(project_id: str, expected: str) -> None:
    assert bucket_name("rv", project_id) == expected


@pytest.mark.parametrize("project_id", ["___", "", "..", "é"])
def test_bucket_name_needs_letters_or_digits(project_id: str) -> None:
    with pytest.raises(BucketNameError, match="no letters or digits"):
        bucket_name("rv", project_id)


def test_bucket_name_too_long_is_an_error_not_truncated() -> None:
    with pytest.raises(BucketNameError, match=r"3-63 .*shorter project id"):
        bucket_name("rv", "a" * 61)


def test_bucket_name_reserved_suffix() -> None:
    with pytest.raises(BucketNameError, match="reserves"):
        bucket_name("rv", "x-s3alias")


def test_normalise_project_id() -> None:
    assert normalise_project_id("-A_b.C-") == "a-b-c"


def test_bucket_collision_fails_clearly() -> None:
    with pytest.raises(BucketNameCollisionError) as info:
        check_no_bucket_collisions("rv", ["P_1", "p-1", "other"])
    message = str(info.value)
    assert "'P_1'" in message and "'p-1'" in message and "rv-p-1" in message and "rename" in message
    assert isinstance(info.value, S3PermanentError)


def test_no_collision_between_distinct_projects() -> None:
    check_no_bucket_collisions("rv", ["P_1", "P_2", "_FALLBACK", "P_1"])  # the same id twice is no collision


@pytest.mark.parametrize(
    "path",
    ["../x", "a/../../b", "a/..", "/etc/passwd", "a\\b", "..\\x", "", "a//b", "a/", "./a", "a/./b", "a\x00b", "a\nb"],
)
def test_unsafe_paths_are_rejected(path: str) -> None:
    with pytest.raises(UnsafePathError) as info:
        validate_relative_path(path)
    assert repr(path) in str(info.value)


@pytest.mark.parametrize("path", ["NAME.raw", "NAME.d/analysis.tdf", "N.d/1234.m/sub/ä-param.xml", "a b/..c", "x..y"])
def test_safe_paths_pass(path: str) -> None:
    assert validate_relative_path(path) == path


def test_key_prefix_mirrors_backup_base_path() -> None:
    assert key_prefix_for("thermo1/2026_11") == "thermo1/2026_11/"
    assert key_prefix_for("thermo1/2026_11/NAME-thermo1-20261122T101010/") == (
        "thermo1/2026_11/NAME-thermo1-20261122T101010/"
    )
    with pytest.raises(UnsafePathError):
        key_prefix_for("../other")


def test_key_prefix_and_object_key() -> None:
    assert validate_key_prefix("") == ""
    assert object_key("t/2026_11/", "N.d/a.tdf") == "t/2026_11/N.d/a.tdf"
    for prefix in ("t/2026_11", "/t/", "t/../"):
        with pytest.raises(UnsafePathError):
            validate_key_prefix(prefix)
    with pytest.raises(UnsafePathError):
        object_key("t/", "x/" * 600)


def test_manifest_key() -> None:
    assert manifest_key("t/2026_11/", "N.d") == "t/2026_11/N.d.rawvault-manifest.json"
    with pytest.raises(UnsafePathError):
        manifest_key("t/", "..")
