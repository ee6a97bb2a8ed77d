"""``scripts/rawvault.sh buckets probe`` / ``buckets apply-lifecycle`` (issue 15 items 1 and 5) on moto and rclone.

The command logic (:func:`rawvault.cli_buckets.run_buckets`) runs with the test servers' clients; the
parser is rawvault's own (:func:`rawvault.cli.build_parser`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("tests.s3_fixtures")  # it is imported here before pytest loads it as a plugin

from rawvault.cli import build_parser  # noqa: E402
from rawvault.cli_buckets import run_buckets  # noqa: E402
from rawvault.cli_common import CannotRunError  # noqa: E402
from rawvault.s3.capabilities import endpoint_of, forget_cached  # noqa: E402
from shared.db.interface import create_project  # noqa: E402
from shared.db.s3_stores import load_store_capabilities  # noqa: E402
from tests.s3_fixtures import S3Backend, backend_of, make_settings, unique_prefix  # noqa: E402

pytest_plugins = ["tests.s3_fixtures"]
pytestmark = pytest.mark.slow  # about 25 s: two probes of a store and the buckets commands

LIFECYCLE = {"abort_incomplete_multipart_days": 7, "noncurrent_version_expiration_days": 30}


def buckets(backend: S3Backend, settings: Any, *argv: str) -> tuple[int, str]:
    args = build_parser().parse_args(["buckets", *argv])
    forget_cached()
    return run_buckets(args, settings, lambda extra: backend.client(config=extra))


def test_probe_records_and_prints_the_weaknesses_and_strict_refuses_rclone(
    mongo_uri: str, rclone_s3_server: Any, tmp_path: Path
) -> None:
    rclone = backend_of("rclone", rclone_s3_server)
    client = rclone.client()
    bucket = rclone.new_bucket(client)
    settings = make_settings(tmp_path, unique_prefix(), compatibility="strict")
    code, output = buckets(rclone, settings, "probe", "--bucket", bucket)
    assert code == 1, output
    assert output.startswith(f"{bucket}: REFUSED by compatibility: strict") and "If-None-Match" in output
    assert "  - " in output  # the weaknesses, one a line
    recorded = load_store_capabilities(endpoint_of(client), bucket)
    assert recorded is not None and recorded["multipart_etag"] == "whole-md5"
    code, output = buckets(rclone, make_settings(tmp_path, unique_prefix()), "probe", "--bucket", bucket, "--json")
    assert code == 0
    assert json.loads(output)[bucket]["capabilities"]["bucket"] == bucket


def test_probe_all_and_apply_lifecycle_on_every_project_bucket(mongo_uri: str, s3_server: Any, tmp_path: Path) -> None:
    moto = backend_of("moto", s3_server)
    client = moto.client()
    prefix = unique_prefix()
    settings = make_settings(tmp_path, prefix, lifecycle=LIFECYCLE)
    create_project("PRJ_1")
    client.create_bucket(Bucket=f"{prefix}-prj-1")  # the fallback project's bucket does not exist yet
    client.put_bucket_lifecycle_configuration(
        Bucket=f"{prefix}-prj-1",
        LifecycleConfiguration={"Rules": [{"ID": "site-rule", "Status": "Enabled", "Filter": {"Prefix": "tmp/"},
                                           "Expiration": {"Days": 3}}]},
    )  # fmt: skip
    code, output = buckets(moto, settings, "apply-lifecycle")
    assert code == 0, output
    assert f"{prefix}-fallback: does not exist yet: skipped" in output
    assert "abort incomplete multipart uploads after 7 days" in output and "site-rule" in output
    rules = {rule["ID"] for rule in client.get_bucket_lifecycle_configuration(Bucket=f"{prefix}-prj-1")["Rules"]}
    assert "site-rule" in rules and any(rule.startswith("rawvault-") for rule in rules)

    code, output = buckets(moto, settings, "probe", "--all")
    assert code == 0, output
    assert f"{prefix}-prj-1: s3://{prefix}-prj-1" in output and f"{prefix}-fallback: does not exist yet" in output
    code, output = buckets(moto, settings, "probe", "--bucket", f"{prefix}-typo")
    assert code == 1 and "FAILED: the bucket does not exist" in output


def test_apply_lifecycle_without_rules_cannot_run(mongo_uri: str, s3_server: Any, tmp_path: Path) -> None:
    moto = backend_of("moto", s3_server)
    with pytest.raises(CannotRunError, match=r"no backup.s3.lifecycle"):
        buckets(moto, make_settings(tmp_path, unique_prefix()), "apply-lifecycle")
