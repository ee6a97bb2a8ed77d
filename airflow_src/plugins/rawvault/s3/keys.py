"""Object keys: where a raw file's files go in its bucket, path validation and ``s3://`` URLs.

Layout (the same for every project, including the fallback project): the key
prefix is the raw file's folder in the local backup, ``RawFile.backup_base_path``,
plus ``/``, i.e. ``<instrument_id>/<YYYY_MM>/`` (or
``<instrument_id>/<YYYY_MM>/<raw_file_id>/`` when the raw file's name was
taken and it got an id of its own). Each ``file_info`` path ``p`` is stored at
``<key_prefix><p>``, so the bucket mirrors the local backup and acquisitions
of different instruments and months never mix.
"""

from __future__ import annotations

from rawvault.s3.errors import UnsafePathError

MAX_KEY_BYTES = 1024  # S3's limit on the UTF-8 length of a key


def validate_relative_path(path: str, *, what: str = "path") -> str:
    """Return ``path`` if it is a safe relative POSIX path, else raise :class:`UnsafePathError`.

    Rejected: empty paths, absolute paths, backslashes, ``.``/``..`` or empty
    components (``a//b``, trailing ``/``), NUL and other control characters.
    """
    if not isinstance(path, str) or not path:
        raise UnsafePathError(f"{what} {path!r} is empty or not text: file paths must be relative, like NAME.d/x.tdf")
    problem = None
    if path.startswith("/"):
        problem = "is absolute"
    elif "\\" in path:
        problem = "contains a backslash (paths use '/')"
    elif any(ord(char) < 32 or ord(char) == 127 for char in path):
        problem = "contains a NUL or control character"
    elif any(0xD800 <= ord(char) <= 0xDFFF for char in path):
        # A lone surrogate (e.g. JSON's "\udcff" in a manifest) cannot be encoded: no S3 key can name it.
        problem = "is not valid UTF-8 text"
    elif any(part in ("", ".", "..") for part in path.split("/")):
        problem = "has an empty, '.' or '..' component"
    elif len(path.encode("utf-8")) > MAX_KEY_BYTES:
        problem = f"is longer than {MAX_KEY_BYTES} bytes"
    if problem:
        raise UnsafePathError(
            f"{what} {path!r} {problem}: it could escape the raw file's key prefix, so nothing of this raw file "
            "was uploaded; fix the file_info of the raw file"
        )
    return path


def key_prefix_for(backup_base_path: str) -> str:
    """The key prefix (ending in ``/``) of a raw file whose backup folder is ``backup_base_path``."""
    validate_relative_path(backup_base_path.strip("/"), what="backup_base_path")
    return backup_base_path.strip("/") + "/"


def validate_key_prefix(key_prefix: str) -> str:
    """Return ``key_prefix`` if it is empty or a safe relative path ending in ``/``."""
    if key_prefix == "":
        return key_prefix
    if not key_prefix.endswith("/"):
        raise UnsafePathError(f"key prefix {key_prefix!r} must be empty or end in '/'")
    validate_relative_path(key_prefix[:-1], what="key prefix")
    return key_prefix


def object_key(key_prefix: str, path: str) -> str:
    """The key of ``file_info`` path ``path`` (validated) under ``key_prefix``."""
    key = validate_key_prefix(key_prefix) + validate_relative_path(path)
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise UnsafePathError(f"key {key!r} is longer than S3's {MAX_KEY_BYTES} bytes")
    return key


class S3UrlError(ValueError):
    """A text that should be an ``s3://<bucket>/<key>`` URL is not one."""


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://<bucket>/<key>`` as ``(bucket, key)``; the key may be empty or a prefix ending in ``/``."""
    if not isinstance(url, str) or not url.startswith("s3://"):
        raise S3UrlError(f"{url!r} is not an S3 URL: write s3://<bucket>/<key>")
    bucket, _, key = url[len("s3://") :].partition("/")
    if not bucket:
        raise S3UrlError(f"{url!r} names no bucket: write s3://<bucket>/<key>")
    return bucket, key


def s3_url(bucket: str, key: str) -> str:
    """``s3://<bucket>/<key>``."""
    return f"s3://{bucket}/{key}"
