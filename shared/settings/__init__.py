"""Per-environment settings, loaded from YAML and validated on load.

``RAWVAULT_CONFIG=<path>`` names the YAML file; otherwise ``RAWVAULT_ENV=<env>``
selects ``envs/rawvault.<env>.yaml`` in this repository. Any problem raises a
single :class:`SettingsError` naming the file, the key path and the fix.

One module per concern: :mod:`.base` (the strict section model, shared field
types, the registry of fixes), :mod:`.sections` (instruments, locations,
acquisition, watcher, file mover, Airflow), :mod:`.s3` (backup and S3),
:mod:`.s3_compat` (S3-compatible stores: compatibility mode, bandwidth windows, Object Lock, lifecycle),
:mod:`.alerts` (alert channels, thresholds, digest), :mod:`.purge` (deleting backed-up acquisitions from the share),
:mod:`.scrub` (re-reading stored data),
:mod:`.model` (the root and the checks across sections), :mod:`.loading`
(which file, YAML, paths, error messages). A new section gets a module of its
own that adds its keys' fixes to ``FIXES``, and a field on :class:`Settings`.
"""

from shared.s3_limits import MIB, S3_MAX_PART_MB, S3_MAX_PARTS, S3_MIN_PART_MB
from shared.settings.alerts import AlertSettings
from shared.settings.base import CRON_PRESETS, SettingsError
from shared.settings.loading import (
    ENV_VAR_CONFIG,
    ENV_VAR_ENV,
    ENVS_DIR,
    REPO_ROOT,
    get_settings,
    load_settings,
    parse_settings,
    settings_path,
)
from shared.settings.model import Settings
from shared.settings.purge import PurgeOverrides, PurgePolicy, PurgeSettings, purge_policy
from shared.settings.s3 import (
    DEFAULT_PART_SIZE_MB,
    STORAGE_CLASSES,
    BackupSettings,
    S3Settings,
)
from shared.settings.s3_compat import (
    UPLOAD_BACKOFF_CAP_HOURS,
    BandwidthSettings,
    BandwidthWindow,
    LifecycleSettings,
    ObjectLockSettings,
    TransitionSettings,
    longest_resume_hours,
)
from shared.settings.scrub import ScrubSettings
from shared.settings.sections import (
    AcquisitionSettings,
    AirflowSettings,
    FileMoverSettings,
    InstrumentSettings,
    LocationSettings,
    WatcherSettings,
)

__all__ = [
    "CRON_PRESETS",
    "DEFAULT_PART_SIZE_MB",
    "ENVS_DIR",
    "ENV_VAR_CONFIG",
    "ENV_VAR_ENV",
    "MIB",
    "REPO_ROOT",
    "S3_MAX_PARTS",
    "S3_MAX_PART_MB",
    "S3_MIN_PART_MB",
    "STORAGE_CLASSES",
    "UPLOAD_BACKOFF_CAP_HOURS",
    "AcquisitionSettings",
    "AirflowSettings",
    "AlertSettings",
    "BackupSettings",
    "BandwidthSettings",
    "BandwidthWindow",
    "FileMoverSettings",
    "InstrumentSettings",
    "LifecycleSettings",
    "LocationSettings",
    "ObjectLockSettings",
    "PurgeOverrides",
    "PurgePolicy",
    "PurgeSettings",
    "S3Settings",
    "ScrubSettings",
    "Settings",
    "SettingsError",
    "TransitionSettings",
    "WatcherSettings",
    "get_settings",
    "load_settings",
    "longest_resume_hours",
    "parse_settings",
    "purge_policy",
    "settings_path",
]
