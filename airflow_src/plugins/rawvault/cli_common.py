"""What every command of rawvault's command line shares: the settings with an S3 section, the S3 client, the error.

Its own module so that the commands in modules of their own (:mod:`rawvault.cli_buckets`) use the same ones
as :mod:`rawvault.cli`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from botocore.config import Config
    from mypy_boto3_s3 import S3Client

    from shared.settings import Settings


class CannotRunError(RuntimeError):
    """The command cannot start: the message says what to fix."""


def s3_settings() -> Settings:
    """The settings (``RAWVAULT_ENV`` / ``RAWVAULT_CONFIG``); :class:`CannotRunError` without ``backup.s3``."""
    from shared.settings import SettingsError, get_settings

    try:
        settings = get_settings()
    except SettingsError as error:
        raise CannotRunError(str(error)) from None
    if settings.backup.s3 is None:
        raise CannotRunError(
            f"{settings.source} has no backup.s3 section (backup_type {settings.backup.backup_type!r}): "
            "there is no S3 backup to restore or verify; select the environment with RAWVAULT_ENV or RAWVAULT_CONFIG"
        )
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
