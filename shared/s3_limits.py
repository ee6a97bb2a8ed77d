"""S3's multipart limits and the upload retry cap, defined once: the settings validate with them, rawvault uses them.

``shared`` never imports ``rawvault``, so they live here rather than in
``rawvault.digests`` / ``rawvault.keys`` (which import them). Plain constants:
cheap to import anywhere.
"""

from __future__ import annotations

MIB = 1024 * 1024
# S3 multipart limits: parts of 5 MiB to 5 GiB, at most 10,000 parts per object.
S3_MIN_PART_MB = 5
S3_MAX_PART_MB = 5 * 1024
S3_MAX_PARTS = 10_000

# The longest wait between two tries of one upload (hours): the cap of Airflow's retry delay of upload_to_s3 and of
# backup_sweeper's backoff (rawvault.keys.MAX_UPLOAD_RETRY_DELAY), and a term of the longest time an unfinished
# multipart upload may still be resumed, which the lifecycle abort rule must exceed (shared.settings.s3_compat).
UPLOAD_BACKOFF_CAP_HOURS = 6.0
