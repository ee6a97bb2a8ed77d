"""rawvault's S3 library: plain functions of a boto3 S3 client, no database, no use cases.

- :mod:`~rawvault.s3.client`: the client from an Airflow AWS connection (the only Airflow import here),
  sending ``ExpectedBucketOwner`` with every request when configured.
- :mod:`~rawvault.s3.buckets`: bucket names and the bucket check/creation.
- :mod:`~rawvault.s3.keys`: object keys, key prefixes, path validation, ``s3://`` URLs.
- :mod:`~rawvault.s3.errors`: error types and ``classify()``; ``S3PermanentError`` means
  "do not retry before a person fixed something".
- :mod:`~rawvault.s3.permissions`: the IAM actions of every S3 call (access-denied messages, the policy test).
- :mod:`~rawvault.s3.objects`: ``head``, ``etag_of``, ``is_kms``, ``version_of``, ``delete_version``
  and THE check "does this object hold this recorded file" (upload, restore and audit use it).
- :mod:`~rawvault.s3.file_info`: the recorded ``file_info`` and its fit with the part size.
- :mod:`~rawvault.s3.body`: request bodies read from a byte range of a file.
- :mod:`~rawvault.s3.put`: the settings of written objects and the single no-overwrite PUT.
- :mod:`~rawvault.s3.multipart_resume`, :mod:`~rawvault.s3.multipart`: resumable multipart uploads.
- :mod:`~rawvault.s3.upload_file`, :mod:`~rawvault.s3.upload`: one file, and one set all-or-nothing;
  :mod:`~rawvault.s3.set_write`: what a set hands each file and what each gives back;
  :mod:`~rawvault.s3.upload_verify`: the HEAD after an upload, and when an unverified object may be deleted.
- :mod:`~rawvault.s3.listing`: which keys of a set exist, with size and ETag (one listing instead of a HEAD
  per key); :mod:`~rawvault.s3.listed_check`: a set's single PUTs verified by one listing after them;
  :mod:`~rawvault.s3.parallel`: the files of a set side by side in one pool of part slots.
- :mod:`~rawvault.s3.file_set`: a set's layout, the result of an upload, the read-only check of a complete set.
- :mod:`~rawvault.s3.manifest`: the manifest object that marks a complete set (build, read, write, replace).
- :mod:`~rawvault.s3.download`, :mod:`~rawvault.s3.archive`: verified download of a set (the S3 half of restore);
  :mod:`~rawvault.s3.restore_target`: the target folder, walked without following links, and its temporary files.
- :mod:`~rawvault.s3.drift`: the S3 half of the audit (drift items and report).
- :mod:`~rawvault.s3.readback`: scrubbing, an object's bytes read back and hashed within a byte budget.
- :mod:`~rawvault.s3.progress`: progress lines.

The use cases that join MongoDB and S3 live beside the pipeline: :mod:`rawvault.backup`,
:mod:`rawvault.restore`, :mod:`rawvault.audit`, :mod:`rawvault.scrub` (and :mod:`rawvault.claim`).
"""
