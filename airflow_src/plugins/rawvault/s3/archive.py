"""Objects in an S3 archive tier (Glacier Flexible Retrieval, Deep Archive, Intelligent-Tiering's archive tiers).

Such an object cannot be read until it is restored in S3. These functions say
which tier an object is in and build the error that lists every archived
object with the ``aws s3api restore-object`` command that makes it readable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rawvault.s3.keys import s3_url
from rawvault.s3.objects import ExpectedObject, version_of

# Storage classes (and Intelligent-Tiering archive statuses) whose objects must be restored before a GET.
ARCHIVE_STORAGE_CLASSES = ("GLACIER", "DEEP_ARCHIVE")
ARCHIVE_ACCESS_TIERS = ("ARCHIVE_ACCESS", "DEEP_ARCHIVE_ACCESS")
MAX_COMMANDS_IN_MESSAGE = 20

Archived = tuple[ExpectedObject, str, Mapping[str, Any] | None]  # object, its state, its head_object answer


class RestoreError(RuntimeError):
    """A restore failed; the message names the object or file and what to do."""


class RestoreArchivedError(RestoreError):
    """Objects are in an archive tier (Glacier Flexible Retrieval, Deep Archive): restore them in S3 first."""


def archive_tier(response: Mapping[str, Any]) -> str | None:
    """The archive tier an object must be restored from before it can be read (``None``: readable now)."""
    storage_class = response.get("StorageClass") or "STANDARD"
    archive_status = response.get("ArchiveStatus")
    if storage_class in ARCHIVE_STORAGE_CLASSES:
        tier = storage_class
    elif archive_status in ARCHIVE_ACCESS_TIERS:
        tier = f"{storage_class} ({archive_status})"
    else:
        return None
    if 'ongoing-request="false"' in (response.get("Restore") or ""):
        return None  # a restored copy is available until its expiry date
    return tier


def restore_command(bucket: str, key: str, response: Mapping[str, Any] | None) -> str:
    """The ``aws s3api restore-object`` command that makes an archived object readable."""
    version = version_of(response) if response else None
    intelligent_tiering = bool(response and response.get("StorageClass") == "INTELLIGENT_TIERING")
    # Intelligent-Tiering's archive tiers take no Days: the object moves back to the frequent access tier.
    days = "" if intelligent_tiering else '"Days":7,'
    request = f'{{{days}"GlacierJobParameters":{{"Tier":"Standard"}}}}'
    return (
        f"aws s3api restore-object --bucket {bucket} --key '{key}'"
        + (f" --version-id {version}" if version else "")
        + f" --restore-request '{request}'"
    )


def archived_error(
    raw_file_id: str, bucket: str, key_prefix: str, archived: Sequence[Archived], *, downloading: bool = False
) -> RestoreError:
    """:class:`RestoreArchivedError` naming each archived object, with the command that restores it."""
    lines = [f"{s3_url(bucket, entry.key)}: {state}" for entry, state, _response in archived]
    commands = [
        restore_command(bucket, entry.key, response)
        for entry, state, response in archived
        if "in progress" not in state
    ]
    text = (
        f"{len(archived)} object(s) of {raw_file_id} ({s3_url(bucket, key_prefix)}) are in an S3 archive tier (Glacier "
        "Flexible Retrieval or Deep Archive) and cannot be downloaded until they are restored from Glacier in S3; "
        + ("files restored before it are verified and stay" if downloading else "nothing was downloaded")
        + ":\n  "
        + "\n  ".join(lines)
    )
    if commands:
        shown = commands[:MAX_COMMANDS_IN_MESSAGE]
        more = len(commands) - len(shown)
        text += (
            "\nRestore them first (or in the S3 console: select the objects, Actions > Initiate restore), e.g.\n  "
            + "\n  ".join(shown)
            + (f"\n  ... and {more} more" if more else "")
        )
    text += (
        "\nA Standard restore takes about 3-5 hours from GLACIER and up to 12 hours from DEEP_ARCHIVE (Bulk is "
        "cheaper and slower, Expedited faster for GLACIER); run this restore again once every object shows "
        'ongoing-request="false" (aws s3api head-object)'
    )
    return RestoreArchivedError(text)
