"""Property-based tests: whatever a settings YAML holds, loading it is valid settings or one clear SettingsError.

Documents start from a valid one and get one to four random edits at any key path (a
value of any YAML type, including NaN, huge numbers, NUL characters, ``${VAR}``
references and nested structures; a removed key; an unknown key, also a non-text one).
``parse_settings`` must return settings or raise :class:`SettingsError` naming the file
and the key path; never another exception. Raw YAML text goes through ``load_settings``.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from shared.settings import Settings, SettingsError, load_settings, parse_settings
from tests.properties import examples

SOURCE = Path("/etc/rawvault/rawvault.props.yaml")
BASE: dict[str, Any] = {
    "instruments": {
        "thermo1": {"type": "thermo", "path": "/data/instruments/thermo1"},
        "tims1": {"type": "bruker", "path": "instruments/tims1"},
    },
    "locations": {"backup": "/data/backup"},
    "acquisition": {"poke_interval_seconds": 60, "size_stable_seconds": 300, "timeout_hours": 48},
    "watcher": {"schedule": "*/5 * * * *", "fallback_project_id": "_FALLBACK"},
    "file_mover": {"delay_minutes": 60, "target_folder": "Backup"},
    "airflow": {"queue_prefix": "", "task_retries": 2, "retry_delay_minutes": 5},
    "backup": {
        "backup_type": "s3",
        "s3": {
            "region": "eu-central-1",
            "bucket_prefix": "facility",
            "part_size_mb": 64,
            "auto_create_buckets": False,
            "storage_class": "STANDARD",
            "server_side_encryption": "AES256",
            "upload_retries": 3,
            "upload_retry_delay_minutes": 15,
            "stale_upload_minutes": 10,
        },
    },
}
# The first line names the file; every further line is "  <key path>: <problem> [-> fix: ...]".
PROBLEM_LINE = re.compile(r"^  \S.*?: .+")

texts = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            "",
            " ",
            "\0",
            "a\0b",
            "${UNSET_RAWVAULT_VAR}",
            "${HOME}/x",
            "${X:-/tmp/x}",
            "~",
            "~nobody/x",
            "..",
            "/",
            "thermo",
            "bruker",
            "s3",
            "local",
            "aws:kms",
            "GLACIER",
            "* * * * *",
            "0 0 31 2 *",
            "@reboot",
            "x" * 5000,
        ]
    ),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    texts,
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.one_of(texts, st.integers(), st.booleans()), inner, max_size=3)
    ),
    max_leaves=8,
)
# An edit: a path chosen by index into the document, and what happens there.
edits = st.lists(
    st.tuples(st.lists(st.integers(min_value=0, max_value=20), min_size=1, max_size=4),
              st.sampled_from(["set", "delete", "add"]), values, st.one_of(texts, st.integers(), st.none())),
    min_size=1, max_size=4,
)  # fmt: skip


def _apply(document: dict[str, Any], path: list[int], action: str, value: Any, new_key: Any) -> None:
    """Walk ``path`` (indexes into the keys of each mapping) and edit the mapping found there."""
    node: Any = document
    for step, index in enumerate(path):
        keys = list(node)
        if not keys:
            break
        key = keys[index % len(keys)]
        last = step == len(path) - 1 or not isinstance(node[key], dict)
        if last:
            if action == "set":
                node[key] = value
            elif action == "delete":
                del node[key]
            else:
                node[new_key] = value
            return
        node = node[key]


def _assert_clear(error: SettingsError) -> None:
    message = str(error)
    first, *problems = message.splitlines()
    assert str(SOURCE) in first, message
    assert problems or "top level" in first, message
    for line in problems:
        if line.startswith("  "):
            assert PROBLEM_LINE.match(line), f"no key path in {line!r}:\n{message}"


def _assert_sane(settings: Settings) -> None:
    """Accepted settings keep the invariants the pipeline relies on."""
    assert settings.instruments and settings.locations.backup.is_absolute()
    for instrument in settings.instruments.values():
        assert instrument.path.is_absolute() and "\0" not in str(instrument.path)
    for number in (settings.acquisition.poke_interval_seconds, settings.acquisition.timeout_hours):
        assert math.isfinite(number) and number > 0
    if settings.s3_enabled:
        assert settings.backup.s3 is not None and 5 <= settings.backup.s3.part_size_mb <= 5120


@hypothesis_settings(max_examples=examples(150))
@given(edits)
@example([([1, 0, 1], "set", "a\0b", None)])  # a NUL in an instrument path
@example([([1, 0], "set", "/tmp/x\0y", None)])  # a NUL in locations.backup
@example([([0], "add", {"type": "thermo", "path": "/x"}, 7)])  # an instrument id that is not text
@example([([6, 0, 4], "set", float("nan"), None)])  # NaN as a part size
@example([([0], "add", None, " ")])  # a blank unknown key: the message showed an empty key path
def test_any_edit_gives_valid_settings_or_one_clear_error(changes: list) -> None:
    document = copy.deepcopy(BASE)
    for path, action, value, new_key in changes:
        _apply(document, path, action, value, new_key)
    try:
        settings = parse_settings(document, SOURCE)
    except SettingsError as error:
        _assert_clear(error)
    else:
        _assert_sane(settings)


@hypothesis_settings(max_examples=examples(100))
@given(
    st.one_of(
        st.text(max_size=200),
        st.sampled_from(["[" * 600, "{a: " * 600, "&a [*a]", "!!python/object:os.system x", "- - -", "\ufeff"]),
    )
)
def test_any_yaml_text_is_valid_settings_or_one_clear_error(tmp_path_factory: Any, text: str) -> None:
    path = tmp_path_factory.mktemp("yaml") / "rawvault.props.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_settings(path)
    except SettingsError as error:
        assert str(path) in str(error), error


def test_deeply_nested_yaml_is_a_settings_error(tmp_path: Path) -> None:
    """PyYAML parses nesting recursively: 600 levels raised RecursionError (Hypothesis raises the limit)."""
    path = tmp_path / "rawvault.deep.yaml"
    path.write_text("[" * 600, encoding="utf-8")
    with pytest.raises(SettingsError, match=r"rawvault\.deep\.yaml nests lists or mappings too deeply"):
        load_settings(path)
