"""The recorded checksums (``file_info``): validation, and their fit with the part size of an upload.

``file_info`` maps a relative path to ``[size, md5, etag]``. The ETag follows
S3's rule for the configured part size: a file of at most ``part_size`` bytes
is one PUT and its ETag is its MD5 hex; a larger file is a multipart upload of
``part_size`` parts (the last one shorter) and its ETag is
``md5(concatenated part MD5 digests)-<number of parts>``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rawvault.digests import S3_MAX_PARTS, multipart_parts
from rawvault.s3.errors import FileInfoError, PartSizeMismatchError
from rawvault.s3.keys import validate_relative_path

_MD5_RE = re.compile(r"[0-9a-f]{32}")
_ETAG_RE = re.compile(r"([0-9a-f]{32})(?:-([1-9][0-9]*))?")


@dataclass(frozen=True)
class RecordedFile:
    """One ``file_info`` entry: a file's path, size, MD5 hex and S3 ETag (for the part size)."""

    path: str
    size: int
    md5: str
    etag: str

    @property
    def etag_parts(self) -> int | None:
        """The part count in the recorded ETag, ``None`` for a single-PUT ETag."""
        match = _ETAG_RE.fullmatch(self.etag)
        return int(match.group(2)) if match and match.group(2) else None


def parse_file_info(file_info: Mapping[str, object]) -> dict[str, RecordedFile]:
    """Validate ``file_info`` (paths and ``[size, md5, etag]`` entries); return it sorted by path."""
    if not isinstance(file_info, Mapping) or not file_info:
        raise FileInfoError("file_info is empty: run compute_checksum for this raw file first")
    recorded: dict[str, RecordedFile] = {}
    for path in sorted(file_info):
        validate_relative_path(path)
        entry = file_info[path]
        size: Any
        md5: Any
        etag: Any
        try:
            size, md5, etag = entry  # type: ignore[misc]
        except (TypeError, ValueError):
            raise FileInfoError(f"file_info entry of {path!r} is {entry!r}, not [size, md5, etag]") from None
        etag = str(etag).strip('"')
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise FileInfoError(f"file_info entry of {path!r} has size {size!r}, not a whole number of bytes")
        if not isinstance(md5, str) or not _MD5_RE.fullmatch(md5):
            raise FileInfoError(f"file_info entry of {path!r} has MD5 {md5!r}, not 32 lower-case hex digits")
        if not _ETAG_RE.fullmatch(etag):
            raise FileInfoError(f"file_info entry of {path!r} has ETag {etag!r}, not <md5 hex> or <md5 hex>-<parts>")
        recorded[path] = RecordedFile(path=path, size=size, md5=md5, etag=etag)
    return recorded


def check_part_size(recorded: RecordedFile, part_size: int) -> None:
    """Raise :class:`PartSizeMismatchError` unless ``recorded.etag`` fits an upload with ``part_size`` parts."""
    expected = multipart_parts(recorded.size, part_size)
    actual = recorded.etag_parts
    if expected is not None and expected > S3_MAX_PARTS:
        raise PartSizeMismatchError(
            f"{recorded.path} ({recorded.size} bytes) needs {expected} parts of {part_size} bytes, more than "
            f"S3's {S3_MAX_PARTS}: it needs a larger backup.s3.part_size_mb (and a new checksum)"
        )
    if expected != actual or (expected is None and recorded.etag != recorded.md5):

        def shape(parts: int | None) -> str:
            return "a single-PUT ETag" if parts is None else f"a {parts}-part ETag"

        raise PartSizeMismatchError(
            f"the recorded ETag {recorded.etag} of {recorded.path} ({recorded.size} bytes) is {shape(actual)}, "
            f"but with parts of {part_size} bytes the upload gives {shape(expected)}: the checksum was computed "
            "with another part size; upload with the part size of compute_checksum (XCom part_size) or re-checksum"
        )
