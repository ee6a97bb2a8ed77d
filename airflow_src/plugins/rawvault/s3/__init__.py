"""The S3 upload of rawvault: plain functions that take a boto3 S3 client.

- :mod:`rawvault.s3.client`: the client, built from an Airflow AWS connection
  (the only module here that imports Airflow).
- :mod:`rawvault.s3.buckets`: bucket names and the bucket check/creation.
- :mod:`rawvault.s3.keys`: key prefixes and path validation.
- :mod:`rawvault.s3.upload`: upload and verify one raw file set, all-or-nothing.
- :mod:`rawvault.s3.multipart`: resumable multipart uploads (resume, verify stored parts, keep or abort).
- :mod:`rawvault.s3.manifest`: the manifest object that marks a complete set.
- :mod:`rawvault.s3.backup`: the ``upload_to_s3`` step with its ``RawFile`` status and its claim (owner, lease).
- :mod:`rawvault.s3.errors`: error types; :class:`~rawvault.s3.errors.S3PermanentError`
  means "do not retry before a person fixed something".
"""
