"""Least privilege, proven: rawvault works with exactly docs/iam-policy.json and nothing more (issue 13, item 6).

moto's server with IAM enforcement (:mod:`devtools.iam_s3`) checks the signature and the
policy of every request. A user with exactly the shipped policy (``BUCKET_PREFIX``
substituted) runs, through the Airflow AWS connection as a task would: a full backup
of a Thermo file and a Bruker set (creating the bucket), a resumed and an aborted
multipart upload, a repair of a vanished manifest, a restore and a verify. Actions
outside the policy are refused. Finding 6: with the README's old list (no
``s3:DeleteObject``/``s3:DeleteObjectVersion``) an object the upload wrote and found
wrong stays and blocks the key; with the shipped policy it is deleted and the next run
succeeds.
"""

from __future__ import annotations

import filecmp
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from botocore.exceptions import ClientError

from devtools.iam_s3 import MOTO_ACTION_ALIASES, AwsKeys, IamS3Server, load_policy
from devtools.local_stack import aws_connection_uri
from rawvault.s3.errors import ExistingObjectMismatchError, LocalFileChangedError, S3AccessDeniedError
from shared.db.interface import create_raw_file, get_raw_file
from shared.settings import Settings, get_settings, load_settings
from tests.s3_fixtures import (
    MIB,
    PART,
    REGION,
    file_info_of,
    make_bruker_set,
    make_thermo_file,
    settings_document,
    unique_prefix,
    write_file,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CREATED = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
AUTO_CREATE = "OptionalAutoCreateBuckets"
# What the README listed before issue 13 (finding 6): no s3:DeleteObject / s3:DeleteObjectVersion.
OLD_README_ACTIONS = {
    "bucket": ["s3:ListBucket", "s3:ListBucketMultipartUploads", "s3:CreateBucket", "s3:PutBucketVersioning",
               "s3:PutEncryptionConfiguration", "s3:PutBucketPublicAccessBlock", "s3:PutBucketOwnershipControls",
               "s3:PutBucketTagging", "s3:DeleteBucket"],
    "object": ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts",
               "s3:GetObjectVersion"],
}  # fmt: skip


def old_readme_policy(prefix: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": OLD_README_ACTIONS["bucket"], "Resource": f"arn:aws:s3:::{prefix}-*"},
            {"Effect": "Allow", "Action": OLD_README_ACTIONS["object"], "Resource": f"arn:aws:s3:::{prefix}-*/*"},
        ],
    }


class Rawvault:
    """The one place this module calls rawvault's use cases, with the client a task builds from the Airflow
    connection."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def client(self) -> Any:
        from rawvault.s3.client import s3_client_from_connection

        s3 = self.settings.backup.s3
        assert s3 is not None
        return s3_client_from_connection(s3.aws_conn_id, s3.region, max_attempts=2)

    def back_up(self, raw_file_id: str) -> Any:
        from rawvault.backup import upload_raw_file

        return upload_raw_file(raw_file_id, self.settings, progress_interval=60)

    def restore(self, raw_file_id: str, target: Path) -> Any:
        from rawvault.restore import restore_raw_file

        return restore_raw_file(raw_file_id, target, self.client(), progress_interval=60)

    def verify(self) -> Any:
        from rawvault.audit import verify_backups

        return verify_backups(self.client())


@dataclass
class Env:
    server: IamS3Server
    settings: Settings
    rawvault: Rawvault
    keys_client: Any  # a plain boto3 client with the rawvault user's keys
    admin: Any

    @property
    def bucket(self) -> str:
        return f"{self.settings.backup.s3.bucket_prefix}-fallback"


@pytest.fixture(scope="module")
def iam_server() -> Iterator[IamS3Server]:
    with IamS3Server() as server:
        yield server


@pytest.fixture
def make_env(
    iam_server: IamS3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mongo_uri: str
) -> Iterator[Callable[..., Env]]:
    """Settings of their own and a rawvault user with ``policy`` (default: exactly the shipped one, bucket creation
    included) in the Airflow connection ``aws_default``."""

    def make(policy: Callable[[str], dict[str, Any]] | None = None, *, prefix: str | None = None, **s3: Any) -> Env:
        prefix = prefix or unique_prefix()
        chosen = policy or (lambda p: load_policy(p, optional=[AUTO_CREATE]))
        keys = iam_server.create_user(f"rawvault-{unique_prefix()}", chosen(prefix))
        raw = settings_document(tmp_path, prefix, **{"auto_create_buckets": True, "max_concurrency": 2, **s3})
        config_path = tmp_path / "rawvault.test.yaml"
        config_path.write_text(yaml.safe_dump(raw))
        monkeypatch.setenv("RAWVAULT_CONFIG", str(config_path))
        connection = aws_connection_uri(
            iam_server.endpoint_url, REGION, access_key_id=keys.access_key_id, secret_access_key=keys.secret_access_key
        )
        monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", connection)
        get_settings.cache_clear()
        settings = load_settings(config_path)
        return Env(iam_server, settings, Rawvault(settings), iam_server.client("s3", keys), iam_server.client("s3"))

    yield make
    get_settings.cache_clear()


def register(env: Env, instrument_id: str, make: Callable[[Path], Any]) -> tuple[str, Path]:
    """A raw file with its verified local backup copy (``copying_done``), as copy_raw_file leaves it."""
    folder = env.settings.locations.backup / f"{instrument_id}/{CREATED:%Y_%m}"
    made = make(folder)
    paths = [made] if isinstance(made, str) else made
    raw_file = create_raw_file(
        paths[0].split("/")[0],
        instrument_id=instrument_id,
        created_at=CREATED,
        file_info=file_info_of(folder, paths),
        etag_part_size=PART,
        backup_status="copying_done",
    )
    return raw_file.id, folder


def key_of(raw_file_id: str, path: str | None = None) -> str:
    return f"{get_raw_file(raw_file_id).backup_base_path}/{path or raw_file_id}"


def assert_done(raw_file_id: str) -> None:
    raw_file = get_raw_file(raw_file_id)
    assert raw_file.backup_status == "upload_done", raw_file.backup_status_details


def access_denied(call: Callable[[], Any]) -> bool:
    try:
        call()
    except ClientError as error:  # a HEAD answer has no body: its code is just "403"
        return error.response["Error"]["Code"] in ("AccessDenied", "403")
    return False


def start_killed_upload(env: Env, raw_file_id: str, folder: Path, parts: list[int], **create: Any) -> str:
    """An unfinished multipart upload of the raw file holding ``parts``, as a run killed mid-upload leaves it."""
    client, key = env.keys_client, key_of(raw_file_id)
    upload_id = client.create_multipart_upload(Bucket=env.bucket, Key=key, **create)["UploadId"]
    data = (folder / raw_file_id).read_bytes()
    for number in parts:
        body = data[(number - 1) * PART : number * PART]
        client.upload_part(Bucket=env.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body,
                           **({"ChecksumAlgorithm": "SHA256"} if create else {}))  # fmt: skip
    return upload_id


# ---------------------------------------------------------------------------------------------- the whole cycle


def test_backup_resume_repair_restore_and_verify_with_exactly_the_policy(make_env, tmp_path: Path) -> None:
    env = make_env()
    thermo_id, thermo_folder = register(env, "thermo1", make_thermo_file)
    bruker_id, bruker_folder = register(env, "tims1", make_bruker_set)

    # A full backup; the bucket is created (private, versioned, encrypted, tagged) with these keys.
    for raw_file_id in (thermo_id, bruker_id):
        env.rawvault.back_up(raw_file_id)
        assert_done(raw_file_id)
    assert env.admin.get_bucket_versioning(Bucket=env.bucket)["Status"] == "Enabled"
    assert env.admin.get_bucket_tagging(Bucket=env.bucket)["TagSet"] == [{"Key": "managed-by", "Value": "rawvault"}]

    # Resume: a killed run left 2 of 4 parts; the next run lists them (ListMultipartUploads, ListParts), checks
    # them and uploads only the rest.
    resume_id, resume_folder = register(env, "thermo1", lambda f: make_thermo_file(f, "resume.raw", 17 * MIB))
    start_killed_upload(env, resume_id, resume_folder, [1, 2], ChecksumAlgorithm="SHA256")
    assert env.rawvault.back_up(resume_id).parts_resumed == 2
    assert_done(resume_id)

    # An unfinished upload that cannot be resumed (no SHA-256 checksums) is aborted and started anew.
    abort_id, abort_folder = register(env, "thermo1", lambda f: make_thermo_file(f, "abort.raw", 11 * MIB))
    start_killed_upload(env, abort_id, abort_folder, [1])
    env.rawvault.back_up(abort_id)
    assert_done(abort_id)
    assert env.admin.list_multipart_uploads(Bucket=env.bucket).get("Uploads", []) == []

    # Repair: the Bruker set's manifest vanished; the next run checks every object and writes it again.
    manifest = key_of(bruker_id, f"{bruker_id}.rawvault-manifest.json")
    for version in env.admin.list_object_versions(Bucket=env.bucket, Prefix=manifest)["Versions"]:
        env.admin.delete_object(Bucket=env.bucket, Key=manifest, VersionId=version["VersionId"])
    repaired = env.rawvault.back_up(bruker_id)
    assert repaired.manifest_written and repaired.uploaded == []
    assert_done(bruker_id)

    # Restore (GetObject of the checked version) and verify (HeadObject) with the same keys.
    for raw_file_id, folder in ((thermo_id, thermo_folder), (bruker_id, bruker_folder)):
        result = env.rawvault.restore(raw_file_id, tmp_path / "restored" / raw_file_id)
        assert result.restored, result
        for path in result.restored:
            assert filecmp.cmp(folder / path, tmp_path / "restored" / raw_file_id / path, shallow=False), path
    report = env.rawvault.verify()
    assert report.ok and sorted(report.raw_file_ids) == sorted([thermo_id, bruker_id, resume_id, abort_id]), report


def test_without_the_optional_statement_backups_work_in_existing_buckets(make_env) -> None:
    env = make_env(lambda prefix: load_policy(prefix), auto_create_buckets=False)
    env.admin.create_bucket(Bucket=env.bucket)  # created by an administrator
    raw_file_id, _folder = register(env, "tims1", make_bruker_set)
    env.rawvault.back_up(raw_file_id)
    assert_done(raw_file_id)
    assert env.rawvault.verify().ok


# ---------------------------------------------------------------------------------------------- refused


def test_actions_outside_the_policy_are_refused(make_env) -> None:
    env = make_env(lambda prefix: load_policy(prefix), auto_create_buckets=False)
    env.admin.create_bucket(Bucket=env.bucket)
    outside = f"other-{unique_prefix()}"
    env.admin.create_bucket(Bucket=outside)
    env.admin.put_object(Bucket=outside, Key="someone-elses.raw", Body=b"x")
    keys = env.keys_client

    refused = {
        "DeleteBucket": lambda: keys.delete_bucket(Bucket=env.bucket),
        "CreateBucket": lambda: keys.create_bucket(Bucket=f"{env.settings.backup.s3.bucket_prefix}-new"),
        "PutBucketPolicy": lambda: keys.put_bucket_policy(Bucket=env.bucket, Policy=json.dumps({"Statement": []})),
        "PutBucketVersioning": lambda: keys.put_bucket_versioning(
            Bucket=env.bucket, VersioningConfiguration={"Status": "Suspended"}
        ),
        "PutObject outside the prefix": lambda: keys.put_object(Bucket=outside, Key="x.raw", Body=b"x"),
        "GetObject outside the prefix": lambda: keys.get_object(Bucket=outside, Key="someone-elses.raw"),
        "DeleteObject outside the prefix": lambda: keys.delete_object(Bucket=outside, Key="someone-elses.raw"),
        "ListBuckets": lambda: keys.list_buckets(),
    }
    allowed = sorted(name for name, call in refused.items() if not access_denied(call))
    assert not allowed, f"the policy lets these through: {allowed}"


def test_a_bucket_outside_the_prefix_fails_naming_the_bucket_and_the_permission(make_env) -> None:
    env = make_env(lambda _prefix: load_policy("granted"), prefix=unique_prefix())
    raw_file_id, _folder = register(env, "thermo1", make_thermo_file)

    with pytest.raises(S3AccessDeniedError) as raised:
        env.rawvault.back_up(raw_file_id)

    message = str(raised.value)
    assert f"access denied to bucket {env.bucket!r}" in message, message
    assert f"s3:ListBucket on arn:aws:s3:::{env.bucket}" in message, message
    raw_file = get_raw_file(raw_file_id)
    assert raw_file.backup_status == "upload_failed" and env.bucket in raw_file.backup_status_details


def test_a_refused_bucket_creation_names_the_missing_permission(make_env) -> None:
    env = make_env(lambda prefix: load_policy(prefix), auto_create_buckets=True)
    raw_file_id, _folder = register(env, "thermo1", make_thermo_file)
    with pytest.raises(S3AccessDeniedError) as raised:
        env.rawvault.back_up(raw_file_id)
    message = str(raised.value)
    assert (
        f"the IAM identity lacks one of s3:CreateBucket, s3:PutBucketOwnershipControls on arn:aws:s3:::{env.bucket}"
        in message
    ), message
    assert "docs/iam-policy.json" in message


# ---------------------------------------------------------------------------------------------- finding 6


@pytest.mark.parametrize("versioned", [True, False], ids=["versioned", "unversioned"])
@pytest.mark.parametrize("policy_name", ["shipped", "old_readme"])
def test_an_object_found_wrong_is_deleted_only_with_the_shipped_policy(
    make_env, policy_name: str, versioned: bool
) -> None:
    policy = old_readme_policy if policy_name == "old_readme" else (lambda p: load_policy(p, optional=[AUTO_CREATE]))
    env = make_env(policy, auto_create_buckets=versioned)  # rawvault creates its buckets versioned
    if not versioned:
        env.admin.create_bucket(Bucket=env.bucket)
    raw_file_id, folder = register(env, "thermo1", lambda f: make_thermo_file(f, "changed.raw", 1 * MIB))
    original = (folder / raw_file_id).read_bytes()
    write_file(folder / raw_file_id, len(original), seed=99)  # changed after checksumming, same size

    with pytest.raises(LocalFileChangedError) as raised:
        env.rawvault.back_up(raw_file_id)
    versions = env.admin.list_object_versions(Bucket=env.bucket, Prefix=key_of(raw_file_id)).get("Versions", [])

    (folder / raw_file_id).write_bytes(original)  # the file is put right; the next run should upload it
    if policy_name == "shipped":
        assert "the uploaded object was deleted again" in str(raised.value)
        assert versions == []
        env.rawvault.back_up(raw_file_id)
        assert_done(raw_file_id)
    else:  # finding 6: the wrong object stays and blocks the key
        assert "deleting the unverified object failed" in str(raised.value)
        missing = "s3:DeleteObjectVersion" if versioned else "s3:DeleteObject "  # the permission it lacks
        assert f"the IAM identity lacks {missing}" in str(raised.value), str(raised.value)
        assert len(versions) == 1
        with pytest.raises(ExistingObjectMismatchError, match="already holds a different object"):
            env.rawvault.back_up(raw_file_id)


# ---------------------------------------------------------------------------------------------- the emulation


@pytest.mark.parametrize(("aws_action", "moto_action"), sorted((a, m) for a, ms in MOTO_ACTION_ALIASES.items()
                                                               for m in ms))  # fmt: skip
def test_moto_needs_its_own_name_for_these_actions(iam_server: IamS3Server, aws_action: str, moto_action: str) -> None:
    """Why devtools.iam_s3.for_moto adds aliases: without them moto refuses what AWS allows."""
    bucket = f"rv-alias-{unique_prefix()}"
    iam_server.client().create_bucket(Bucket=bucket)
    operation = {
        "s3:ListBucket": lambda c: c.head_bucket(Bucket=bucket),
        "s3:PutEncryptionConfiguration": lambda c: c.put_bucket_encryption(
            Bucket=bucket,
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
            },
        ),
        "s3:PutBucketPublicAccessBlock": lambda c: c.put_public_access_block(
            Bucket=bucket, PublicAccessBlockConfiguration={"BlockPublicAcls": True}
        ),
    }[aws_action]
    statement = {"Effect": "Allow", "Action": [aws_action], "Resource": f"arn:aws:s3:::{bucket}"}
    raw_keys = iam_server.client("iam")
    name = f"alias-{unique_prefix()}"
    raw_keys.create_user(UserName=name)
    policy = {"Version": "2012-10-17", "Statement": [statement]}
    raw_keys.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=json.dumps(policy))
    key = raw_keys.create_access_key(UserName=name)["AccessKey"]

    untranslated = iam_server.client("s3", AwsKeys(key["AccessKeyId"], key["SecretAccessKey"]))
    translated = iam_server.client("s3", iam_server.create_user(f"{name}-t", policy))
    assert access_denied(lambda: operation(untranslated)), f"moto allows {aws_action} without {moto_action}"
    operation(translated)
