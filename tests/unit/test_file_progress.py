"""The per-file progress lines of scripts/test.sh (tests/file_progress.py)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from tests.file_progress import file_of, format_counts, format_duration

pytest_plugins = ["pytester"]

PLUGIN_ARGS = ("-q", "-p", "tests.file_progress", "-o", "console_output_style=classic")


@pytest.fixture(autouse=True)
def _only_builtin_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # the inner runs load this plugin and pytest's own


def test_names_and_numbers() -> None:
    assert file_of("tests/unit/test_x.py::TestY::test_z[a::b]") == "tests/unit/test_x.py"
    assert format_duration(47.14) == "47.1 s"
    assert format_duration(185.4) == "3 min 05 s"
    assert format_counts(Counter(passed=3, failed=1, deselected=0)) == "1 failed, 3 passed"
    assert format_counts(Counter()) == "no tests"


def test_one_line_per_file_with_counts_and_time_and_the_failures_named(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_first="def test_a(): pass\ndef test_b(): assert False\n",
        test_second="import pytest\n@pytest.mark.skip(reason='later')\ndef test_c(): pass\ndef test_d(): pass\n",
    )

    result = pytester.runpytest(*PLUGIN_ARGS, "-ra")

    lines = result.outlines
    assert re.fullmatch(r"\[1/2\] test_first\.py\s+1 failed, 1 passed\s+\d+\.\d s", lines[0]), lines
    assert lines[1] == "    FAILED test_first.py::test_b"
    assert re.fullmatch(r"\[2/2\] test_second\.py\s+1 passed, 1 skipped\s+\d+\.\d s", lines[2]), lines
    assert not any(re.fullmatch(r"[.FsE]+", line) for line in lines)  # no per-test dots
    assert any(line.startswith("SKIPPED [1] test_second.py") for line in lines)  # -ra keeps its words
    result.assert_outcomes(passed=2, failed=1, skipped=1)


def test_a_stop_inside_a_file_still_ends_its_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_stop="def test_a(): assert False\ndef test_b(): pass\n")

    result = pytester.runpytest(*PLUGIN_ARGS, "-x")

    assert re.fullmatch(r"\[1/1\] test_stop\.py\s+1 failed \(stopped\)\s+\d+\.\d s", result.outlines[0])


def test_verbose_runs_keep_pytest_own_lines(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_verbose="def test_a(): pass\n")

    result = pytester.runpytest("-v", "-p", "tests.file_progress")

    result.stdout.fnmatch_lines(["*test_verbose.py::test_a PASSED*"])
    assert not any(line.startswith("[1/1]") for line in result.outlines)


def test_two_workers_write_one_line_per_file_as_each_file_ends(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))  # the workers import tests.*
    pytester.makepyfile(
        test_first="def test_a(): pass\ndef test_b(): assert False\n",
        test_second="def test_c(): pass\n",
    )

    result = pytester.runpytest_subprocess(*PLUGIN_ARGS, "-p", "xdist", "-n", "2", "--dist", "loadfile")

    lines = [line for line in result.outlines if re.match(r"(\[\d/2\] |    FAILED)", line)]
    first = next(i for i, line in enumerate(lines) if "test_first.py" in line)
    assert re.fullmatch(r"\[\d/2\] test_first\.py\s+1 failed, 1 passed\s+\d+\.\d s", lines[first]), lines
    assert lines[first + 1] == "    FAILED test_first.py::test_b", lines
    assert any(re.fullmatch(r"\[\d/2\] test_second\.py\s+1 passed\s+\d+\.\d s", line) for line in lines), lines
    assert sorted(line[:6] for line in lines if line.startswith("[")) == ["[1/2] ", "[2/2] "]
    result.assert_outcomes(passed=2, failed=1)
