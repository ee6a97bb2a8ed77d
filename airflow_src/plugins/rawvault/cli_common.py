"""What every command of rawvault's command line shares: the settings with an S3 section, the S3 client, the error.

Its own module so that the commands in modules of their own (:mod:`rawvault.cli_buckets`) use the same ones
as :mod:`rawvault.cli`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rawvault.s3.client import S3Client

if TYPE_CHECKING:
    from botocore.config import Config

    from shared.settings import Settings


class CannotRunError(RuntimeError):
    """The command cannot start: the message says what to fix."""


def s3_settings(*, needs_database: bool = True, needs_s3: bool = True, restore_id: str | None = None) -> Settings:
    """The settings (``RAWVAULT_ENV`` / ``RAWVAULT_CONFIG``) once every setting the command needs is there.

    Every missing one (environment, ``RAWVAULT_MONGO_URI``, the AWS connection) is reported at once with a line
    to paste (:mod:`rawvault.cli_setup`); ``restore_id``: a restore, which can do without the database. With
    ``needs_s3``, :class:`CannotRunError` without ``backup.s3``.
    """
    from rawvault.cli_setup import missing_setup, setup_report
    from shared.settings import SettingsError, get_settings

    settings: Settings | None = None
    try:
        settings = get_settings()
    except SettingsError as error:
        settings_error = str(error)
    s3 = settings.backup.s3 if settings is not None else None
    if settings is not None and needs_s3 and s3 is None:  # no setting would help: say so first
        raise CannotRunError(
            f"{settings.source} has no backup.s3 section (backup_type {settings.backup.backup_type!r}): "
            "there is no S3 backup to restore or verify; select the environment with RAWVAULT_ENV or RAWVAULT_CONFIG"
        )
    problems = missing_setup(
        needs_database=needs_database,
        needs_s3=needs_s3 and (settings is None or s3 is not None),
        aws_conn_id=s3.aws_conn_id if s3 else None,
        region=s3.region if s3 else None,
        restore_id=restore_id,
    )
    if problems:
        raise CannotRunError(setup_report(problems, Path(__file__).resolve().parents[3]))
    if settings is None:
        raise CannotRunError(settings_error)
    return settings


def s3_client(settings: Settings, max_pool_connections: int, extra_config: Config | None = None) -> S3Client:
    """The S3 client of ``backup.s3`` (the Airflow connection), ``extra_config`` merged into its botocore config."""
    from rawvault.s3.client import s3_client_for
    from rawvault.s3.errors import S3BackupError

    s3 = settings.backup.s3
    assert s3 is not None  # s3_settings() made sure
    try:
        return s3_client_for(s3, max_pool_connections, extra_config=extra_config)
    except S3BackupError as error:
        raise CannotRunError(str(error)) from None
