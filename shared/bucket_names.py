"""Bucket names: one per project, ``<bucket_prefix>-<normalised project id>`` (the one implementation).

Normalisation: lower case; every run of characters other than ``a-z0-9``
becomes one ``-``; leading and trailing ``-`` are dropped. So ``_FALLBACK``
gives ``fallback`` and ``P_1``, ``p.1`` and ``p-1`` all give ``p-1``. A name
that breaks S3's rules (3-63 characters, reserved prefixes and suffixes) is
an error, never silently shortened. Used by the settings validation (the
fallback project's bucket) and by ``rawvault.s3.buckets``.
"""

from __future__ import annotations

import re

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", "--x-s3", "--table-s3")


def normalise_project_id(project_id: str) -> str:
    """``project_id`` in bucket-name form: lower case ``a-z0-9`` runs joined by single ``-``."""
    return re.sub(r"[^a-z0-9]+", "-", project_id.lower()).strip("-")


def bucket_name(bucket_prefix: str, project_id: str, error: type[Exception] = ValueError) -> str:
    """The bucket of ``project_id``: ``<bucket_prefix>-<normalised project id>``; ``error`` if S3 would refuse it."""
    normalised = normalise_project_id(project_id or "")
    if not normalised:
        raise error(
            f"project id {project_id!r} has no letters or digits, so it gives no bucket name: rename the project"
        )
    name = f"{bucket_prefix}-{normalised}"
    problem = None
    if not _BUCKET_RE.fullmatch(name):
        problem = f"is not 3-63 lower-case letters, digits and '-' ({len(name)} characters)"
    elif name.startswith(_RESERVED_PREFIXES) or name.endswith(_RESERVED_SUFFIXES):
        problem = "uses a prefix or suffix S3 reserves"
    if problem:
        raise error(
            f"bucket name {name!r} for project {project_id!r} {problem}: use a shorter project id or "
            "backup.s3.bucket_prefix"
        )
    return name
