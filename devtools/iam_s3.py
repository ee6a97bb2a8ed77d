"""moto's S3 server with IAM enforcement, and IAM users that have exactly a given policy.

moto checks the signature and the IAM policy of every request once it has served
``INITIAL_NO_AUTH_ACTION_COUNT`` requests (``moto/core/authorization.py``).
:class:`IamS3Server` lets exactly the requests that create an administrator through
unauthenticated; every later request, a test's own set-up included, is signed by an
IAM user and checked against that user's policy, as on AWS.

moto names a few S3 actions differently from AWS (``ACTION_MAP`` in
``moto/s3/responses.py``): HeadBucket needs ``s3:HeadBucket`` (AWS: ``s3:ListBucket``),
and PutBucketEncryption and PutPublicAccessBlock fall back to ``s3:CreateBucket`` (AWS:
``s3:PutEncryptionConfiguration``, ``s3:PutBucketPublicAccessBlock``). :func:`for_moto`
adds moto's name next to each AWS action a policy grants, so a policy written for AWS
is judged here as AWS would judge it (``tests/integration/test_iam_least_privilege.py``
shows each alias is needed). Not emulated by moto: AWS's 403 for HeadObject of a
missing key without ``s3:ListBucket``, ``s3:PutBucketOwnershipControls`` for
CreateBucket's ``ObjectOwnership``, ``s3:GetObjectVersion`` for a HeadObject of a
version, and KMS permissions.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.servers import LOCAL_S3_KEY, LOCAL_S3_REGION, S3Server

REPO_ROOT = Path(__file__).resolve().parent.parent
POLICY_PATH = REPO_ROOT / "docs" / "iam-policy.json"
BUCKET_PREFIX_PLACEHOLDER = "BUCKET_PREFIX"
OPTIONAL_SID_PREFIX = "Optional"
# AWS action -> the names moto checks for the same requests.
MOTO_ACTION_ALIASES: dict[str, tuple[str, ...]] = {
    "s3:ListBucket": ("s3:HeadBucket",),
    "s3:PutEncryptionConfiguration": ("s3:CreateBucket",),
    "s3:PutBucketPublicAccessBlock": ("s3:CreateBucket",),
}
ADMIN_USER = "rawvault-test-admin"
ADMIN_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


@dataclass(frozen=True)
class AwsKeys:
    """An IAM user's access key."""

    access_key_id: str
    secret_access_key: str

    def as_boto3(self) -> dict[str, str]:
        """The keyword arguments of ``boto3.client`` for these keys."""
        return {"aws_access_key_id": self.access_key_id, "aws_secret_access_key": self.secret_access_key}


def load_policy(bucket_prefix: str, *, optional: Iterable[str] = (), path: Path = POLICY_PATH) -> dict[str, Any]:
    """The policy file with ``BUCKET_PREFIX`` replaced; ``Optional...`` statements only if their Sid is in ``optional``.

    Fails if the placeholder does not appear or an ``optional`` Sid does not exist, so a
    renamed statement cannot silently drop out of the tests.
    """
    text = path.read_text(encoding="utf-8")
    if BUCKET_PREFIX_PLACEHOLDER not in text:
        raise ValueError(f"{path} does not use the placeholder {BUCKET_PREFIX_PLACEHOLDER}")
    policy = json.loads(text.replace(BUCKET_PREFIX_PLACEHOLDER, bucket_prefix))
    wanted = set(optional)
    sids = {statement.get("Sid", "") for statement in policy["Statement"]}
    if wanted - sids:
        raise ValueError(f"{path} has no statements {sorted(wanted - sids)} (it has {sorted(sids)})")
    policy["Statement"] = [
        statement
        for statement in policy["Statement"]
        if not statement.get("Sid", "").startswith(OPTIONAL_SID_PREFIX) or statement["Sid"] in wanted
    ]
    return policy


def for_moto(policy: dict[str, Any]) -> dict[str, Any]:
    """``policy`` with moto's names added beside the AWS actions it grants (see the module docstring)."""
    translated = copy.deepcopy(policy)
    for statement in translated["Statement"]:
        actions = statement.get("Action", [])
        actions = [actions] if isinstance(actions, str) else list(actions)
        extra = [alias for action in actions for alias in MOTO_ACTION_ALIASES.get(action, ())]
        statement["Action"] = actions + [alias for alias in dict.fromkeys(extra) if alias not in actions]
    return translated


class IamS3Server(S3Server):
    """moto's S3 (and IAM) server that authenticates and authorises every request after its own set-up."""

    name = "s3-iam"
    # create_user, put_user_policy and create_access_key of the administrator.
    BOOTSTRAP_REQUESTS = 3

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        super().__init__(port, log_path)
        self.admin: AwsKeys | None = None
        self._bootstrapped_pid: int | None = None

    def environment(self) -> dict[str, str]:
        return {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(self.BOOTSTRAP_REQUESTS)}

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and create its administrator (a new process starts with an empty IAM)."""
        super().start(timeout)
        assert self.process is not None
        if self._bootstrapped_pid != self.process.pid:
            bootstrap = AwsKeys(LOCAL_S3_KEY, LOCAL_S3_KEY)  # not checked: the first BOOTSTRAP_REQUESTS requests
            self.admin = self._create_user(ADMIN_USER, ADMIN_POLICY, bootstrap)
            self._bootstrapped_pid = self.process.pid

    def client(self, service: str = "s3", keys: AwsKeys | None = None, **client_kwargs: Any) -> Any:
        """A boto3 client of this server signed with ``keys`` (default: the administrator's)."""
        import boto3

        keys = keys or self.admin
        if keys is None:
            raise RuntimeError("the IAM server is not started: call start() first")
        return boto3.client(
            service, endpoint_url=self.endpoint_url, region_name=LOCAL_S3_REGION, **keys.as_boto3(), **client_kwargs
        )

    def create_user(self, name: str, policy: dict[str, Any]) -> AwsKeys:
        """A new IAM user whose only permissions are ``policy`` (an AWS policy; moto's aliases are added)."""
        return self._create_user(name, for_moto(policy), None)

    def _create_user(self, name: str, policy: dict[str, Any], keys: AwsKeys | None) -> AwsKeys:
        iam = self.client("iam", keys)
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName=f"{name}-policy", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return AwsKeys(key["AccessKeyId"], key["SecretAccessKey"])


def start_with_policy_user(
    bucket_prefix: str, *, optional: Iterable[str] = (), user: str = "rawvault"
) -> tuple[IamS3Server, AwsKeys]:
    """Start an :class:`IamS3Server` and create ``user`` with exactly the shipped policy; return both.

    The caller stops the server (``server.close()``, or use it as a context manager).
    """
    server = IamS3Server()
    server.start()
    try:
        return server, server.create_user(user, load_policy(bucket_prefix, optional=optional))
    except BaseException:
        server.close()
        raise


__all__ = [
    "BUCKET_PREFIX_PLACEHOLDER",
    "MOTO_ACTION_ALIASES",
    "OPTIONAL_SID_PREFIX",
    "POLICY_PATH",
    "AwsKeys",
    "IamS3Server",
    "for_moto",
    "load_policy",
    "start_with_policy_user",
]
