"""Verify a set's single PUTs from one listing after them, instead of a HEAD per object (issue 16).

A HEAD after a PUT proves that the store holds, at the key, an object of the
recorded size whose ETag is the recorded MD5: the one rule of
:func:`rawvault.s3.objects.check_object`. A ListObjectsV2 of the set's keys,
sent after every PUT of the set has been answered, reports the same size and
ETag of each key in one request per 1,000 keys (:func:`rawvault.s3.listing.list_keys`),
and the same rule reads it. For 200 small files that is 1 request instead of
200, and the set's verification is no longer what makes it slower than
``aws s3 cp --recursive``.

The listing stands in for the HEAD only where it can tell all a HEAD would
(:func:`listing_verifies`, and per object
:func:`rawvault.s3.upload_verify.shows_recorded_file`): a single PUT (not
multipart) of a set with at least two of them, whose store could list the
set in the check phase, without SSE-KMS (its ETag is no MD5, the proof is a
SHA-256 only a HEAD reports), without Object Lock (the retention a store
kept shows only on a HEAD), whose PUT answer had the recorded MD5 as ETag
and, when a SHA-256 was sent, the SHA-256 on a store that validates it
(recorded from that answer, as a HEAD would have reported it). Everything
else is verified by a HEAD right after its upload, as before.

An object the listing leaves out, or shows with another ETag than its PUT
answer or another size than recorded (a store whose listing lags, another
writer, a listing that failed transiently), is verified by HEAD as every
upload was before (:func:`rawvault.s3.upload_verify.verify_upload`, given
the PUT's answer): an object that then does not hold the file fails the set,
and is deleted again only where it is certainly this upload's (the version,
or the ETag, its PUT answered with); another writer's object is left as it
is. Nothing counts as uploaded before it is verified one way or the other,
and the manifest is written only after that.

Like a HEAD, the listing is taken to show the store's current state, as AWS
S3 does (strongly consistent since 2020): a store whose listing still showed
an object deleted right after its PUT (with the recorded ETag) would pass it,
where a HEAD a moment later could have seen it gone; that object was, at
least, the recorded file, and the audit (``backup_verifier``) finds it missing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

from rawvault.digests import multipart_parts
from rawvault.s3.capabilities import etag_shape_of
from rawvault.s3.client import S3Client
from rawvault.s3.errors import S3TransientError
from rawvault.s3.file_info import RecordedFile
from rawvault.s3.listing import list_keys
from rawvault.s3.objects import check_object, etag_of
from rawvault.s3.set_write import AwaitingListing, MultipartHooks, SetWrite, UploadedObject
from rawvault.s3.upload_verify import verify_upload

log = logging.getLogger(__name__)


def listing_verifies(to_upload: Sequence[RecordedFile], write: SetWrite, *, listable: bool = True) -> bool:
    """Whether the single PUTs of this upload may await the set's listing (see the module docstring).

    ``listable``: the check phase could list the set (a store that cannot,
    or a prefix crowded with other objects, would only cost a listing more).
    """
    settings = write.settings
    single_puts = sum(1 for entry in to_upload if multipart_parts(entry.size, write.part_size) is None)
    return listable and single_puts >= 2 and not settings.kms and settings.object_lock is None


def verify_listed(
    client: S3Client, bucket: str, awaiting: Sequence[AwaitingListing], write: SetWrite, hooks: MultipartHooks
) -> dict[str, UploadedObject]:
    """Verify the PUTs that await the listing: one listing, a HEAD for each it cannot vouch for; objects by path.

    A listing that fails transiently, or that the store cannot give, leaves
    every object to its HEAD. The HEADs run ``max_concurrency`` at a time;
    the first failure among them is raised once all have finished (the
    objects verified stay: a retry skips them).
    """
    if not awaiting:
        return {}
    keys = [item.expected.key for item in awaiting]
    try:
        listed = list_keys(client, bucket, keys)
    except S3TransientError as error:
        log.warning("s3://%s: the listing after the uploads failed (%s): verifying each object by HEAD", bucket, error)
        listed = None
    verified: dict[str, UploadedObject] = {}
    to_head: list[AwaitingListing] = []
    for item in awaiting:
        found = _by_listing(item, (listed or {}).get(item.expected.key), hooks)
        if found is None:
            to_head.append(item)
        else:
            verified[item.expected.path] = found
    if listed is None:
        log.info("s3://%s: no listing of the %d uploaded objects: verifying each by HEAD", bucket, len(awaiting))
    else:
        log.info(
            "s3://%s: %d uploaded objects verified by one listing (size and ETag)%s",
            bucket,
            len(verified),
            f", {len(to_head)} by HEAD (not listed as uploaded)" if to_head else "",
        )
    verified.update(_verify_by_head(client, bucket, to_head, write, hooks))
    return verified


def _by_listing(
    item: AwaitingListing, listed: Mapping[str, Any] | None, hooks: MultipartHooks
) -> UploadedObject | None:
    """The verified object, if the listing shows it with its PUT answer's ETag and the verification rule accepts it."""
    if listed is None or etag_of(listed) != etag_of(item.put_answer):
        return None
    verdict = check_object(listed, item.expected, etag_shape=etag_shape_of(hooks.caps))
    if not verdict.ok:
        return None
    assert verdict.how is not None
    return UploadedObject.of(
        item.expected, etag_of(listed), item.put_answer.get("ChecksumSHA256"), verdict.how, uploaded=True
    )


def _verify_by_head(
    client: S3Client, bucket: str, to_head: Sequence[AwaitingListing], write: SetWrite, hooks: MultipartHooks
) -> dict[str, UploadedObject]:
    """:func:`verify_upload` for each, ``max_concurrency`` at a time; raise the first failure after all ran.

    An interruption (task timeout, SIGTERM) cancels the HEADs not started and leaves at once.
    """
    if not to_head:
        return {}
    pool = ThreadPoolExecutor(
        max(1, min(write.settings.max_concurrency, len(to_head))), thread_name_prefix="rawvault-verify"
    )
    futures = [
        pool.submit(verify_upload, client, bucket, item.expected, item.source, write, hooks, answer=item.put_answer)
        for item in to_head
    ]
    try:
        wait(futures)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    failures = [error for error in (future.exception() for future in futures) if error is not None]
    if failures:
        for later in failures[1:]:
            log.warning("also failed its verification: %s", later)
        raise failures[0]
    return {future.result().path: future.result() for future in futures}
