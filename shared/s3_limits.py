"""S3's multipart limits, defined once: the settings validate with them, rawvault plans parts with them.

``shared`` never imports ``rawvault``, so they live here rather than in
``rawvault.digests`` (which imports them).
"""

from __future__ import annotations

MIB = 1024 * 1024
# S3 multipart limits: parts of 5 MiB to 5 GiB, at most 10,000 parts per object.
S3_MIN_PART_MB = 5
S3_MAX_PART_MB = 5 * 1024
S3_MAX_PARTS = 10_000
