"""docs/iam-policy.json grants exactly the S3 actions rawvault's code calls (issue 13, item 6).

Every boto3 S3 call in the ``rawvault`` package is found in the source (``x.<operation>(...)``,
``get_paginator("<operation>")``, the managed transfers) and mapped to the IAM actions AWS
requires for it by :data:`rawvault.s3.permissions.ACTIONS_OF` (the table the access-denied
messages name the missing permission from). A new S3 call without a row there fails here,
and so does a policy that grants more or less than the calls need.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import boto3
import pytest

from devtools.iam_s3 import OPTIONAL_SID_PREFIX, POLICY_PATH, load_policy
from rawvault.s3 import permissions

PACKAGE = Path(__file__).resolve().parents[2] / "airflow_src" / "plugins" / "rawvault"
# boto3 S3 operation -> the IAM actions AWS checks for it: the product's table (access-denied messages name them).
ACTIONS_OF = {operation: set(actions) for operation, actions in permissions.ACTIONS_OF.items()}
# Operations needed only with an opt-in setting -> the optional statement of docs/iam-policy.json that grants them.
OPTIONAL_STATEMENT_OF = {
    **dict.fromkeys(
        ("create_bucket", "put_public_access_block", "put_bucket_versioning", "put_bucket_encryption",
         "put_bucket_tagging", "delete_bucket"),
        "OptionalAutoCreateBuckets",
    ),
    **dict.fromkeys(
        ("put_object_lock_configuration", "get_object_lock_configuration", "put_object_retention"),
        "OptionalObjectLock",
    ),
    **dict.fromkeys(
        ("get_bucket_lifecycle_configuration", "put_bucket_lifecycle_configuration"), "OptionalLifecycle"
    ),
}  # fmt: skip
# Request parameters that need an IAM action of their own -> its optional statement (permissions.PARAMETER_ACTIONS).
OPTIONAL_STATEMENT_OF_PARAMETER = {"Tagging": "OptionalLifecycle", "ObjectLockMode": "OptionalObjectLock"}
TRANSFER_METHODS = {"download_file", "download_fileobj", "upload_file", "upload_fileobj", "copy"}


def _s3_operations() -> set[str]:
    return set(boto3.client("s3", region_name="us-east-1").meta.method_to_api_mapping) | TRANSFER_METHODS


def s3_calls_in_code() -> dict[str, list[str]]:
    """S3 operation -> the ``file:line`` places in the rawvault package that call it."""
    operations = _s3_operations()
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            name = node.func.attr
            # get_paginator("<operation>"), and a helper that takes the operation by name (the probe's call("..."))
            if name in ("get_paginator", "call") and node.args and isinstance(node.args[0], ast.Constant):
                name = str(node.args[0].value)
            if name in operations:
                found.setdefault(name, []).append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    return found


def _statement_actions(policy: dict, sid: str) -> set[str]:
    """The S3 actions of the statement ``sid``."""
    (statement,) = [statement for statement in policy["Statement"] if statement.get("Sid") == sid]
    listed = statement["Action"]
    return {action for action in ({listed} if isinstance(listed, str) else set(listed)) if action.startswith("s3:")}


def _granted(policy: dict, sid_filter: bool) -> set[str]:
    """Actions of the statements that are (``sid_filter``) or are not optional."""
    actions: set[str] = set()
    for statement in policy["Statement"]:
        if statement.get("Sid", "").startswith(OPTIONAL_SID_PREFIX) == sid_filter:
            listed = statement["Action"]
            actions |= {listed} if isinstance(listed, str) else set(listed)
    return actions


def test_every_s3_call_in_the_code_has_its_iam_actions() -> None:
    calls = s3_calls_in_code()
    unknown = {name: places for name, places in calls.items() if name not in ACTIONS_OF}
    assert not unknown, (
        f"rawvault calls S3 operations this test does not know: {unknown}. Add each to rawvault.s3.permissions."
        "ACTIONS_OF with the IAM actions AWS requires, to docs/iam-policy.json and to the README's IAM section"
    )
    unused = sorted(set(ACTIONS_OF) - set(calls))
    assert not unused, f"ACTIONS_OF lists operations rawvault no longer calls: {unused}; drop them and their actions"


def test_the_policy_grants_exactly_what_the_calls_need() -> None:
    calls = s3_calls_in_code()
    policy = json.loads(POLICY_PATH.read_text(encoding="utf-8"))
    required = set().union(*(ACTIONS_OF[name] for name in calls if name not in OPTIONAL_STATEMENT_OF))
    assert _granted(policy, sid_filter=False) == required, "required statements of docs/iam-policy.json"
    for sid in sorted(set(OPTIONAL_STATEMENT_OF.values())):
        needed = set().union(*(ACTIONS_OF[name] for name in calls if OPTIONAL_STATEMENT_OF.get(name) == sid))
        for parameter, parameter_sid in OPTIONAL_STATEMENT_OF_PARAMETER.items():
            if parameter_sid == sid:
                needed |= set(permissions.PARAMETER_ACTIONS[parameter])
        assert _statement_actions(policy, sid) == needed, f"{sid} of docs/iam-policy.json"


def test_request_parameters_with_actions_of_their_own_are_known() -> None:
    # A PUT with Tagging needs s3:PutObjectTagging, one with retention s3:PutObjectRetention, and a HEAD shows an
    # object's retention only to s3:GetObjectRetention (issue 15): parameters, not calls, so the call scan misses them.
    assert set(permissions.PARAMETER_ACTIONS) == set(OPTIONAL_STATEMENT_OF_PARAMETER)
    sent = {
        node.value
        for path in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and node.value in permissions.PARAMETER_ACTIONS
    }
    assert sent == set(permissions.PARAMETER_ACTIONS), "each parameter is sent somewhere in the code"


def test_the_policy_stays_on_the_bucket_prefix() -> None:
    policy = load_policy("facility", optional=["OptionalAutoCreateBuckets"])
    resources = {
        resource
        for statement in policy["Statement"]
        for resource in ([statement["Resource"]] if isinstance(statement["Resource"], str) else statement["Resource"])
    }
    assert resources == {"arn:aws:s3:::facility-*", "arn:aws:s3:::facility-*/*"}
    assert all(statement["Effect"] == "Allow" and "*" not in statement["Action"] for statement in policy["Statement"])


def test_load_policy_refuses_an_unknown_optional_statement(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no statements \['OptionalNope'\]"):
        load_policy("facility", optional=["OptionalNope"])
    (tmp_path / "p.json").write_text('{"Statement": []}')
    with pytest.raises(ValueError, match="does not use the placeholder BUCKET_PREFIX"):
        load_policy("facility", path=tmp_path / "p.json")


def test_the_readme_lists_the_policy_actions() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### IAM permissions") :]
    section = section[: section.index("\n## ")]
    policy = json.loads(POLICY_PATH.read_text(encoding="utf-8"))
    granted = _granted(policy, sid_filter=False) | _granted(policy, sid_filter=True)
    missing = sorted(action for action in granted if f"`{action}`" not in section)
    assert not missing, f"README's IAM section does not mention {missing}"
    assert "docs/iam-policy.json" in section


def test_the_policy_file_the_messages_name_is_the_shipped_one() -> None:
    assert Path(__file__).resolve().parents[2] / permissions.POLICY_FILE == POLICY_PATH
    assert set(permissions.BUCKET_OPERATIONS) <= set(permissions.ACTIONS_OF)
