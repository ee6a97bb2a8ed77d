"""Product code stays readable in pieces: no module over 400 lines, no function over 60 (issue 10)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PRODUCT_FOLDERS = ("airflow_src", "shared")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# Known exceptions: "<path>:<function>" -> the most lines it may have until it is split. None today.
KNOWN_LONG_FUNCTIONS: dict[str, int] = {}


def _modules() -> list[Path]:
    return sorted(path for folder in PRODUCT_FOLDERS for path in (REPO_ROOT / folder).rglob("*.py"))


def _name(path: Path) -> str:
    return path.relative_to(REPO_ROOT).as_posix()


def _function_lengths(path: Path) -> dict[str, int]:
    """``"<path>:<function>"`` -> lines from its ``def`` line to its last line, for every function and method."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return {
        f"{_name(path)}:{node.name}": (node.end_lineno or node.lineno) - node.lineno + 1
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def test_the_product_folders_hold_modules() -> None:
    assert len(_modules()) > 50, "the walk found almost no modules: did the layout change?"


@pytest.mark.parametrize("path", _modules(), ids=_name)
def test_module_has_at_most_400_lines(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, (
        f"{_name(path)} has {lines} lines (limit {MAX_MODULE_LINES}): split it into modules of one job each"
    )


@pytest.mark.parametrize("path", _modules(), ids=_name)
def test_functions_have_at_most_60_lines(path: Path) -> None:
    too_long = {
        name: length
        for name, length in _function_lengths(path).items()
        if length > KNOWN_LONG_FUNCTIONS.get(name, MAX_FUNCTION_LINES)
    }
    assert not too_long, (
        f"functions over {MAX_FUNCTION_LINES} lines (def line to last line): {too_long}; "
        "split each into steps with names of their own"
    )
