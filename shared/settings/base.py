"""Building blocks of the settings sections: the strict base model, shared field types and the fix registry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from croniter import croniter  # installed with Airflow (its cron timetables use it)
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict

# Airflow's cron presets (airflow.utils.dates.cron_presets); other @-names are not cron schedules.
CRON_PRESETS = ("@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly")
CRON_FIX = (
    "write 5 cron fields in quotes (minute hour day-of-month month day-of-week), e.g. '*/15 * * * *', "
    f"or one of {', '.join(CRON_PRESETS)}"
)

# How to fix a problem at a key path; shown after pydantic's description of it. Each section module
# adds the fixes of its own keys.
FIXES: dict[str, str] = {}
TYPE_FIXES: dict[str, str] = {
    "bool_type": "write true or false, unquoted",
    "int_type": "write a whole number, unquoted",
    "float_type": "write a number, unquoted",
    "finite_number": "write a finite number (not .nan or .inf)",
    "string_type": "write text (quote it if YAML reads it as something else)",
    "dict_type": "write a mapping of key: value lines",
    "model_type": "write a mapping of key: value lines",
}


def _cron_expression(value: str) -> str:
    """``value`` if Airflow can schedule it: 5 valid cron fields that fire at some time, or a cron preset."""
    text = value.strip()
    if text in CRON_PRESETS:
        return text
    if len(text.split()) != 5 or not croniter.is_valid(text):
        raise ValueError(f"{value!r} is not a valid cron expression")
    try:
        croniter(text).get_next(float)
    except Exception:  # croniter's CroniterBadDateError: a valid expression that never fires (e.g. 31 February)
        raise ValueError(f"cron expression {value!r} never fires") from None
    return text


CronExpression = Annotated[str, AfterValidator(_cron_expression)]


def _folder_path(value: Any) -> Path:
    # YAML gives text; anything else (a number, a list, an empty string) is a mistake, not a path.
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty folder path")
    if "\0" in value:  # no file system accepts it; os.path would raise a bare "embedded null byte"
        raise ValueError("must not contain a NUL character")
    return Path(value)


FolderPath = Annotated[Path, BeforeValidator(_folder_path)]


class SettingsError(ValueError):
    """The settings file is missing or invalid; the message says where and how to fix it."""


class Section(BaseModel):
    """Base of every settings section: strict, closed to unknown keys, immutable."""

    # strict: no silent coercion ("yes" is not a bool, 64 is not a path);
    # forbid: a misspelt key is an error, not a silently ignored setting.
    # allow_inf_nan=False: YAML's .nan and .inf are never a sensible duration or size.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)
