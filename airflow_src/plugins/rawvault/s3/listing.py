"""Which keys of a set are in the bucket, with size and ETag: one paginated ListObjectsV2 over their common prefix.

The upload asks this instead of a HEAD per key (issue 16), twice: a fresh
set of N files costs one listing (a page per 1,000 keys) instead of N HEADs
in the check phase, and one more instead of N verifying HEADs after its
single PUTs (:mod:`rawvault.s3.listed_check`). In the check phase the listing
only decides which keys are *absent*; a key it shows is still read by HEAD
and checked like any object found at a key. A key the listing does not show
but that appears later (another writer, a store whose listing lags) is still
never replaced: the conditional PUT (or, on a store without conditional
writes, the HEAD of :func:`rawvault.s3.put.check_key_free`) finds it and the
upload checks it then.

The prefix is the longest common prefix of the set's keys (``NAME.d/`` for a
Bruker set, ``NAME.`` for a Sciex one), so the listing reads the set and
rarely anything else; it stops after the page that reaches the set's last key
(S3 lists keys in UTF-8 binary order, the order of Python strings). A prefix
shared with many other objects (file names with nothing in common, in a busy
folder) could cost more than the HEADs: once the listing has shown more than
``N + page_size`` other keys (as many as the set has, and a page more) it
gives up and the set's keys are HEADed. A store that answers with smaller
pages than asked costs more pages, never a wrong answer. A store that does not
implement ListObjectsV2 gets one HEAD per key, as before.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection
from typing import Any

from rawvault.s3.client import S3Client
from rawvault.s3.errors import classify, error_code, http_status
from rawvault.s3.keys import s3_url

log = logging.getLogger(__name__)

PAGE_SIZE = 1000  # S3's largest page
# Answers of a store that has no ListObjectsV2 (the set is then checked by one HEAD per key).
NOT_IMPLEMENTED_CODES = frozenset({"NotImplemented", "MethodNotAllowed", "501", "405"})


def list_keys(
    client: S3Client, bucket: str, keys: Collection[str], *, page_size: int = PAGE_SIZE
) -> dict[str, dict[str, Any]] | None:
    """The keys of ``keys`` that a listing of ``bucket`` shows (see the module docstring), each with what it lists.

    Each value has the ``ContentLength`` and ``ETag`` of the object, the
    fields a ``head_object`` answer gives them under
    (:func:`rawvault.s3.objects.check_object` reads either).

    ``None`` when a listing saves nothing (fewer than two keys: one HEAD costs
    one request either way; a prefix crowded with other objects) or the store
    cannot list: the caller HEADs every key then. Other failures raise an
    :class:`~rawvault.s3.errors.S3BackupError`.
    """
    if len(keys) < 2:
        return None
    wanted, last = frozenset(keys), max(keys)
    prefix = os.path.commonprefix([min(keys), last])  # noqa: RUF071 (a key prefix, not a path)
    found: dict[str, dict[str, Any]] = {}
    others = 0  # listed keys of other objects
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size}
    )
    try:
        for page in pages:
            listed = page.get("Contents", [])
            hits = {item["Key"]: _as_head(item) for item in listed if item["Key"] in wanted}
            found.update(hits)
            others += len(listed) - len(hits)
            if listed and listed[-1]["Key"] >= last:
                break  # the rest of the prefix sorts after every key of the set
            if others > len(wanted) + page_size:
                log.info("%s: crowded with other objects: checking each key by HEAD", s3_url(bucket, prefix))
                return None
    except Exception as error:
        if error_code(error) in NOT_IMPLEMENTED_CODES or http_status(error) in (405, 501):
            log.warning(
                "%s: the store cannot list objects (%s): checking each key by HEAD", s3_url(bucket, prefix), error
            )
            return None
        raise classify(error, f"listing {s3_url(bucket, prefix)}", bucket=bucket) from error
    return found


def _as_head(item: dict[str, Any]) -> dict[str, Any]:
    """A listed object's size and ETag under the names of a ``head_object`` answer."""
    return {"ContentLength": item.get("Size"), "ETag": item.get("ETag", "")}
