"""moto's S3 server answering like AWS under SSE-KMS: every object (and part) written with ``aws:kms`` gets a NEW
random ETag, not the MD5 of its content.

moto keeps the MD5 ETag under SSE-KMS; on AWS the ETag of an SSE-KMS object is no MD5 and differs with every
upload, even of the same bytes. A simulation that gave the same ETag for the same content would hide a manifest
that still records the ETag of an object uploaded again (issue 11, finding 2). Run as the server process of
:class:`tests.s3_fixtures.KmsS3Server` (``python tests/kms_moto_server.py -H <host> -p <port>``): the ETag lives
in the server, so every client sees the same one (a DAG task's, the CLI's, s3transfer's ``If-Match``).
A multipart object keeps its ``-<parts>`` suffix, as on AWS.
"""

from __future__ import annotations

import sys
import uuid
from typing import Any

from moto.s3 import models

KMS_ENCRYPTION = ("aws:kms", "aws:kms:dsse")
_original_init = models.FakeKey.__init__


def _init_with_kms_etag(self: Any, *args: Any, **kwargs: Any) -> None:
    _original_init(self, *args, **kwargs)
    if self.encryption in KMS_ENCRYPTION:
        given = kwargs.get("etag") or ""
        parts = given.rpartition("-")[2] if "-" in given else ""
        self._etag = uuid.uuid4().hex + (f"-{parts}" if parts else "")


models.FakeKey.__init__ = _init_with_kms_etag  # type: ignore[method-assign]

if __name__ == "__main__":
    from moto.server import main

    main(sys.argv[1:])
