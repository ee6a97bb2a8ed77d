"""Reading a settings file: which file, YAML, validation, path expansion, and errors that say the fix."""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from shared.settings.base import FIXES, TYPE_FIXES, SettingsError
from shared.settings.model import Settings, cross_checks
from shared.settings.purge import purge_fix
from shared.settings.sections import INSTRUMENT_PATH_FIX, INSTRUMENT_TYPE_FIX

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
ENVS_DIR = REPO_ROOT / "envs"
ENV_VAR_ENV = "RAWVAULT_ENV"
ENV_VAR_CONFIG = "RAWVAULT_CONFIG"


_PLAIN_KEY_RE = re.compile(r"[A-Za-z0-9_-]+|\[key\]")  # [key]: pydantic's mark of a bad mapping key


def _key_part(part: object) -> str:
    """One part of a key path as the user can find it: quoted unless it is a plain name (blank, '.', spaces, ...)."""
    text = str(part)
    return text if _PLAIN_KEY_RE.fullmatch(text) else repr(part)


def _format_errors(source: Path, error: ValidationError) -> str:
    lines = [f"invalid rawvault settings in {source}:"]
    for item in error.errors():
        loc = [str(part) for part in item["loc"]]
        key = ".".join(_key_part(part) for part in item["loc"]) or "<top level>"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (misspelt?)"
            fix = "remove it or correct its spelling; see the comments in envs/rawvault.local.yaml"
        elif item["type"] == "missing":
            message = "missing"
            fix = _fix_for(loc)
        else:
            fix = _fix_for(loc) or TYPE_FIXES.get(item["type"], "")
            if item["type"] != "value_error" and item["type"] not in ("model_type", "dict_type"):
                message += f" (got {item['input']!r})"
        lines.append(f"  {key}: {message}" + (f" -> fix: {fix}" if fix else ""))
    return "\n".join(lines)


def _fix_for(loc: list[str]) -> str:
    while len(loc) > 1 and loc[-1].isdigit():  # an item of a list: the list's fix
        loc = loc[:-1]
    if len(loc) >= 3 and loc[0] == "instruments":
        if loc[2] == "type":
            return INSTRUMENT_TYPE_FIX
        if loc[2] == "path":
            return INSTRUMENT_PATH_FIX
        if loc[2] == "purge" and len(loc) >= 4:
            return purge_fix(loc[3])
    return FIXES.get(".".join(loc), "")


_ENV_REF_RE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def _resolve_path(value: Path, base: Path, source: Path, key: str) -> Path:
    """Expand ``${VAR}``, ``${VAR:-default}`` and ``~``; make relative paths relative to ``base``."""

    def expand(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise SettingsError(
            f"invalid rawvault settings in {source}:\n  {key}: uses ${{{name}}}, which is not set "
            f"-> fix: set the environment variable {name} or write ${{{name}:-<default>}}"
        )

    expanded = Path(_ENV_REF_RE.sub(expand, str(value))).expanduser()
    return expanded if expanded.is_absolute() else (base / expanded).resolve()


def parse_settings(raw: Any, source: Path) -> Settings:
    """Validate an already-parsed YAML document; relative paths resolve against ``source``'s folder."""
    if not isinstance(raw, dict):
        raise SettingsError(
            f"invalid rawvault settings in {source}: the file must hold a YAML mapping at the top level"
        )
    try:
        settings = Settings.model_validate({**raw, "source": source})
    except ValidationError as error:
        raise SettingsError(_format_errors(source, error)) from None
    base = source.parent
    instruments = {
        instrument_id: instrument.model_copy(
            update={"path": _resolve_path(instrument.path, base, source, f"instruments.{instrument_id}.path")}
        )
        for instrument_id, instrument in settings.instruments.items()
    }
    backup = _resolve_path(settings.locations.backup, base, source, "locations.backup")
    locations = settings.locations.model_copy(update={"backup": backup})
    settings = settings.model_copy(update={"instruments": instruments, "locations": locations})
    problems = cross_checks(settings)
    if problems:
        lines = [f"invalid rawvault settings in {source}:"]
        lines += [f"  {key}: {message} -> fix: {fix}" for key, message, fix in problems]
        raise SettingsError("\n".join(lines))
    return settings


def settings_path() -> Path:
    """The YAML file selected by ``RAWVAULT_CONFIG`` or ``RAWVAULT_ENV``."""
    config = os.environ.get(ENV_VAR_CONFIG)
    if config:
        return Path(config).expanduser().resolve()
    env = os.environ.get(ENV_VAR_ENV)
    if not env:
        available = ", ".join(
            sorted(p.name[len("rawvault.") : -len(".yaml")] for p in ENVS_DIR.glob("rawvault.*.yaml"))
        )
        raise SettingsError(
            f"no rawvault environment selected: set {ENV_VAR_ENV} to one of {available} "
            f"(reads {ENVS_DIR}/rawvault.<env>.yaml) or {ENV_VAR_CONFIG} to the path of a settings YAML file"
        )
    if not re.fullmatch(r"[A-Za-z0-9_-]+", env):
        raise SettingsError(f"{ENV_VAR_ENV}={env!r} is not a valid environment name: use letters, digits, '_' or '-'")
    return ENVS_DIR / f"rawvault.{env}.yaml"


def load_settings(path: Path | None = None) -> Settings:
    """Read and validate a settings file (by default the one the environment selects)."""
    path = path or settings_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        hint = f" (selected by {ENV_VAR_CONFIG})" if os.environ.get(ENV_VAR_CONFIG) else ""
        raise SettingsError(
            f"rawvault settings file {path}{hint} does not exist: create it or select another one"
        ) from None
    except OSError as error:
        raise SettingsError(f"cannot read rawvault settings file {path}: {error.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise SettingsError(f"rawvault settings file {path} is not valid YAML: {error}") from None
    except RecursionError:  # PyYAML parses nested collections recursively
        raise SettingsError(
            f"rawvault settings file {path} nests lists or mappings too deeply to be read: it is not a rawvault "
            "settings file (see envs/rawvault.local.yaml)"
        ) from None
    return parse_settings(raw, path)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process's environment, loaded once."""
    return load_settings()
