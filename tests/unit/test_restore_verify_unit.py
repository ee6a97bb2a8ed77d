"""restore and verify without servers: manifest URLs, object checks, report rendering, CLI arguments."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from rawvault import cli, cli_setup
from rawvault.impl.verify_tasks import failure_message
from rawvault.restore import DEFAULT_PART_SIZE, ManifestLocation, PartSizeChoice
from rawvault.s3.download import (
    RestoreArchivedError,
    RestoreConflictError,
    RestorePlan,
    RestoreSourceError,
    object_problem,
    restore_plan,
)
from rawvault.s3.drift import DriftItem, DriftKind, VerifyReport, verify_raw_files
from rawvault.s3.errors import S3AccessDeniedError
from rawvault.s3.objects import ExpectedObject as ExpectedFile

MD5 = hashlib.md5(b"data").hexdigest()
ENTRY = ExpectedFile(path="x.d/a.tdf", key="tims1/2026_11/x.d/a.tdf", size=4, md5=MD5, etag=MD5)


# ------------------------------------------------------------------------------------------ manifest URLs


def test_manifest_location_from_full_key_and_from_prefix() -> None:
    full = ManifestLocation.parse("s3://bucket-a/tims1/2026_11/x.d.rawvault-manifest.json")
    assert (full.bucket, full.key, full.key_prefix) == (
        "bucket-a",
        "tims1/2026_11/x.d.rawvault-manifest.json",
        "tims1/2026_11/",
    )
    assert ManifestLocation.parse("s3://bucket-a/tims1/2026_11/", "x.d") == full
    assert ManifestLocation.parse("s3://bucket-a/", "x.raw").key == "x.raw.rawvault-manifest.json"


@pytest.mark.parametrize(
    ("url", "raw_file_id", "message"),
    [
        ("bucket/key.rawvault-manifest.json", None, "is not an S3 URL"),
        ("s3:///key.rawvault-manifest.json", None, "names no bucket"),
        ("s3://bucket/prefix/", None, "is a key prefix"),
        ("s3://bucket/prefix/x.d/analysis.tdf", None, "does not name a manifest"),
    ],
)
def test_manifest_location_errors_name_the_url(url: str, raw_file_id: str | None, message: str) -> None:
    with pytest.raises(RestoreSourceError, match=message):
        ManifestLocation.parse(url, raw_file_id)


# ------------------------------------------------------------------------------------ object checks (HEAD)


@pytest.mark.parametrize(
    ("response", "entry", "problem"),
    [
        (None, ENTRY, "missing"),
        ({"ContentLength": 5, "ETag": f'"{MD5}"'}, ENTRY, "size differs: 5 bytes in S3, 4 recorded"),
        ({"ContentLength": 4, "ETag": '"0' + MD5[1:] + '"'}, ENTRY, "ETag differs"),
        ({"ContentLength": 4, "ETag": f'"{MD5}"'}, ENTRY, None),
        # SSE-KMS: the ETag is not an MD5; compared with the manifest's record when there is one.
        ({"ContentLength": 4, "ETag": '"kmsetag"', "ServerSideEncryption": "aws:kms"}, ENTRY, None),
        (
            {"ContentLength": 4, "ETag": '"kmsetag"', "ServerSideEncryption": "aws:kms"},
            ExpectedFile(**{**ENTRY.__dict__, "s3_etag": "other"}),
            "recorded in the manifest",
        ),
        (
            {"ContentLength": 4, "ETag": '"k"', "ServerSideEncryption": "aws:kms", "ChecksumSHA256": "AAA="},
            ExpectedFile(**{**ENTRY.__dict__, "s3_etag": "k", "checksum_sha256": "BBB="}),
            "SHA-256 differs",
        ),
    ],
)
def test_object_problem(response: dict | None, entry: ExpectedFile, problem: str | None) -> None:
    found = object_problem(response, entry)
    assert (found is None) if problem is None else (problem in found)


# ------------------------------------------------------------------------------------- target conflicts


def test_a_symlink_out_of_the_target_is_a_conflict_and_nothing_is_asked_of_s3(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    (target / "x.d").symlink_to(outside)
    plan = RestorePlan("x.d", "bucket-a", "tims1/2026_11/", 5 * 1024 * 1024, {ENTRY.path: ENTRY}, "database")
    with pytest.raises(RestoreConflictError, match=r"x\.d is a symbolic link to .*outside \(outside the target"):
        restore_plan(plan, target, client=None)
    (target / "x.d").unlink()
    (target / "x.d").write_text("a file where a folder belongs")
    with pytest.raises(
        RestoreConflictError, match=r"is a file, but a restored file needs it to be a folder \(needed for x\.d/a\.tdf\)"
    ):
        restore_plan(plan, target, client=None)
    assert list(outside.iterdir()) == []


# ------------------------------------------------------------------------- objects in an archive tier (Glacier)


def _stubbed_client() -> tuple[Any, Stubber]:
    client = boto3.client(
        "s3", region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    )  # never reaches a network: every answer comes from the stubber
    return client, Stubber(client)


def _head(**fields: Any) -> dict[str, Any]:
    return {"ContentLength": 4, "ETag": f'"{MD5}"', **fields}


OTHER = ExpectedFile(path="x.d/b.tdf", key="tims1/2026_11/x.d/b.tdf", size=4, md5=MD5, etag=MD5)
TIERED = ExpectedFile(path="x.d/c.tdf", key="tims1/2026_11/x.d/c.tdf", size=4, md5=MD5, etag=MD5)
READY = ExpectedFile(path="x.d/d.tdf", key="tims1/2026_11/x.d/d.tdf", size=4, md5=MD5, etag=MD5)


def test_glacier_objects_need_a_restore_in_s3_first_and_nothing_is_downloaded(tmp_path: Path) -> None:
    client, stubber = _stubbed_client()
    stubber.add_response("head_object", _head(StorageClass="GLACIER", VersionId="v1"))
    stubber.add_response("head_object", _head(StorageClass="DEEP_ARCHIVE", Restore='ongoing-request="true"'))
    stubber.add_response("head_object", _head(StorageClass="INTELLIGENT_TIERING", ArchiveStatus="ARCHIVE_ACCESS"))
    # Restored already, or instantly readable: no problem.
    stubber.add_response(
        "head_object",
        _head(StorageClass="GLACIER", Restore='ongoing-request="false", expiry-date="Fri, 27 Nov 2026 00:00:00 GMT"'),
    )
    files = {entry.path: entry for entry in (ENTRY, OTHER, TIERED, READY)}
    plan = RestorePlan("x.d", "bucket-a", "tims1/2026_11/", 5 * 1024 * 1024, files, "database")
    with stubber, pytest.raises(RestoreArchivedError) as caught:
        restore_plan(plan, tmp_path / "target", client)
    message = str(caught.value)
    assert "3 object(s) of x.d (s3://bucket-a/tims1/2026_11/) are in an S3 archive tier" in message
    assert "restored from Glacier in S3; nothing was downloaded" in message
    assert "s3://bucket-a/tims1/2026_11/x.d/a.tdf: storage class GLACIER, not restored" in message
    assert "s3://bucket-a/tims1/2026_11/x.d/b.tdf: storage class DEEP_ARCHIVE, restore in progress" in message
    assert "x.d/c.tdf: storage class INTELLIGENT_TIERING (ARCHIVE_ACCESS), not restored" in message
    assert "d.tdf" not in message
    assert (
        "aws s3api restore-object --bucket bucket-a --key 'tims1/2026_11/x.d/a.tdf' --version-id v1 "
        """--restore-request '{"Days":7,"GlacierJobParameters":{"Tier":"Standard"}}'"""
    ) in message
    assert """--key 'tims1/2026_11/x.d/c.tdf' --restore-request '{"GlacierJobParameters":{"Tier":"Standard"}}'""" in (
        message
    )
    assert "--key 'tims1/2026_11/x.d/b.tdf'" not in message  # its restore was requested already
    assert "Actions > Initiate restore" in message
    assert not (tmp_path / "target").exists() or files_below(tmp_path / "target") == []


def test_invalid_object_state_on_download_names_the_object_and_the_restore(tmp_path: Path) -> None:
    client, stubber = _stubbed_client()
    stubber.add_response("head_object", _head(StorageClass="STANDARD"))  # the check before downloading
    stubber.add_response("head_object", _head(StorageClass="STANDARD"))  # boto3's transfer asks again
    stubber.add_client_error(
        "get_object",
        service_error_code="InvalidObjectState",
        service_message="The operation is not valid for the object's storage class",
        http_status_code=403,
    )  # a lifecycle rule moved it to GLACIER in between
    plan = RestorePlan("x.d", "bucket-a", "tims1/2026_11/", 5 * 1024 * 1024, {ENTRY.path: ENTRY}, "database")
    with stubber, pytest.raises(RestoreArchivedError) as caught:
        restore_plan(plan, tmp_path / "target", client, max_concurrency=1)
    message = str(caught.value)
    assert "s3://bucket-a/tims1/2026_11/x.d/a.tdf: S3 refused to read it (InvalidObjectState)" in message
    assert "restored from Glacier in S3" in message and "aws s3api restore-object --bucket bucket-a" in message
    assert "S3 refused the request" not in message  # not the generic message
    assert files_below(tmp_path / "target") == []  # no temporary file left


def files_below(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


# ---------------------------------------------------------------------------------- verify against a fake


def _not_found(operation: str) -> ClientError:
    return ClientError({"Error": {"Code": "404", "Message": "Not Found"}}, operation)


class FakeS3:
    """Answers head_object/get_object from a dict of key -> head answer (and manifest bodies)."""

    def __init__(self, heads: dict[str, dict[str, Any]], bodies: dict[str, bytes] | None = None, deny: bool = False):
        self.heads, self.bodies, self.deny = heads, bodies or {}, deny

    def head_object(self, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:  # noqa: N803 - boto3's names
        if self.deny:
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "HeadObject")
        if Key not in self.heads:
            raise _not_found("HeadObject")
        return self.heads[Key]

    def get_object(self, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:  # noqa: N803
        if Key not in self.bodies:
            raise _not_found("GetObject")
        return {"Body": io.BytesIO(self.bodies[Key]), "ETag": '"m"'}


def _raw_file(**fields: Any) -> SimpleNamespace:
    defaults = {
        "id": "x.d",
        "s3_backup_key": "s3://bucket-a/tims1/2026_11/",
        "s3_etag": "manifest-etag",
        "file_info": {"x.d/a.tdf": [4, MD5, MD5], "x.d/b.tdf": [4, MD5, MD5]},
    }
    return SimpleNamespace(**{**defaults, **fields})


def test_verify_kms_objects_need_the_manifest_record() -> None:
    kms = {"ContentLength": 4, "ETag": '"kms-1"', "ServerSideEncryption": "aws:kms"}
    heads = {"tims1/2026_11/x.d/a.tdf": kms, "tims1/2026_11/x.d/b.tdf": kms}
    manifest = {
        "format": "rawvault-manifest/1",
        "files": {"x.d/a.tdf": {"s3_etag": "kms-1"}, "x.d/b.tdf": {"s3_etag": "kms-other"}},
    }
    with_manifest = {
        **heads,
        "tims1/2026_11/x.d.rawvault-manifest.json": {"ContentLength": 10, "ETag": '"manifest-etag"'},
    }
    report = verify_raw_files(
        [_raw_file()],
        FakeS3(with_manifest, {"tims1/2026_11/x.d.rawvault-manifest.json": json.dumps(manifest).encode()}),
    )
    assert [(item.path, item.kind, item.expected, item.actual) for item in report.drift] == [
        ("x.d/b.tdf", DriftKind.ETAG_DIFFERS, "kms-other", "kms-1")
    ]
    assert report.objects_checked == 3

    without = verify_raw_files([_raw_file()], FakeS3(heads))
    assert [item.kind for item in without.drift] == [DriftKind.MANIFEST_MISSING, DriftKind.ERROR, DriftKind.ERROR]
    assert "cannot be verified without downloading" in without.drift[1].detail


def test_verify_stops_on_access_denied() -> None:
    with pytest.raises(S3AccessDeniedError, match="access denied"):
        verify_raw_files([_raw_file()], FakeS3({}, deny=True))


def test_report_table_and_failure_message() -> None:
    items = [
        DriftItem("x.d", DriftKind.MISSING, f"x.d/{n}", f"s3://b/k/x.d/{n}", "4 bytes", "no object") for n in range(60)
    ]
    report = VerifyReport(raw_file_ids=["x.d", "y.raw"], objects_checked=70, drift=items, matched=5)
    table = report.table().splitlines()
    assert table[0] == (
        "checked 2 raw file(s) (a random sample of the 5 matching), 70 object(s): 60 problem(s) in 1 raw file(s) "
        "(missing or different in S3)"
    )
    assert table[2].split() == ["RAW", "FILE", "PROBLEM", "OBJECT", "EXPECTED", "FOUND", "DETAIL"]
    assert table[3].split()[:3] == ["x.d", "missing", "s3://b/k/x.d/0"]
    assert report.as_dict()["drift"][0]["kind"] == "missing"
    message = failure_message(report, max_items=50)
    assert "x.d: missing: s3://b/k/x.d/49 (expected 4 bytes, found no object)" in message
    assert "s3://b/k/x.d/50 " not in message and "... and 10 more" in message
    assert VerifyReport(raw_file_ids=["a"], objects_checked=2).table() == (
        "checked 1 raw file(s), 2 object(s): all present with the recorded size and ETag"
    )


# ------------------------------------------------------------------------------------------ CLI arguments


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["verify", "--sample", "-1"], "is not a whole number of 0 or more"),
        (["verify", "--since", "2026-13-01"], "is not a date: write YYYY-MM-DD"),
        (["restore", "x.raw"], "the following arguments are required: target"),
        (["restore", "x.raw", "/tmp/t", "--concurrency", "0"], "must be at least 1"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_cli_argument_errors_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_without_an_s3_section_cannot_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from shared.settings import get_settings

    config = tmp_path / "local.yaml"
    config.write_text(
        "instruments: {t1: {type: thermo, path: /tmp/t1}}\nlocations: {backup: /tmp/b}\nbackup: {backup_type: local}\n"
    )
    monkeypatch.setenv("RAWVAULT_CONFIG", str(config))
    # keep pytest's log capture intact
    monkeypatch.setattr(cli_setup, "configure_logging", lambda verbose: None)
    get_settings.cache_clear()
    try:
        assert cli.main(["verify"]) == 2
    finally:
        get_settings.cache_clear()
    assert "has no backup.s3 section" in capsys.readouterr().err


def test_part_size_choice_override_then_recorded_then_fallback() -> None:
    assert PartSizeChoice(override=8, fallback=32).choose(16, 24) == 8
    assert PartSizeChoice(fallback=32).choose(None, 24) == 24
    assert PartSizeChoice(fallback=32).choose(None, None) == 32
    assert PartSizeChoice().choose(None) == DEFAULT_PART_SIZE
    with pytest.raises(RestoreSourceError, match="not a positive number of bytes"):
        PartSizeChoice().choose("5")  # type: ignore[arg-type]
