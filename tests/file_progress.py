"""Pytest plugin: one progress line per test file, written as the file finishes (``scripts/test.sh``).

    [ 7/31] tests/integration/test_upload_dags.py      3 passed                47.1 s

The path appears when the file starts and the counts and time when it ends, so a person watching a
long run sees which file is running and how long each took. Failed tests are named under their
file's line; pytest's ``-ra`` summary still explains them at the end. Active with ``-q``
(``python -m pytest -q -p tests.file_progress -o console_output_style=classic``); with ``-v``
pytest's own per-test lines are kept and this plugin stays silent.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import pytest

# The order the counts are listed in; anything else pytest reports comes after these.
_CATEGORIES = ("failed", "error", "passed", "skipped", "xfailed", "xpassed")
_COUNTS_WIDTH = 30


def file_of(nodeid: str) -> str:
    """The test file part of a node id (``tests/unit/test_x.py::test_y[1]`` -> ``tests/unit/test_x.py``)."""
    return nodeid.split("::", 1)[0]


def format_duration(seconds: float) -> str:
    """``47.1 s`` below a minute, ``3 min 05 s`` from there on."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def format_counts(counts: Counter[str]) -> str:
    """``3 passed, 1 failed``-style counts, failures first."""
    extra = sorted(name for name in counts if name not in _CATEGORIES)
    names = [name for name in (*_CATEGORIES, *extra) if counts[name]]
    return ", ".join(f"{counts[name]} {name}" for name in names) or "no tests"


@dataclass
class _FileRun:
    path: str
    started: float
    counts: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def record(self, report: pytest.TestReport, category: str) -> None:
        """Count one report of the file by its category ('' for a passed setup or teardown: not counted)."""
        if not category:
            return
        self.counts[category] += 1
        if category in ("failed", "error"):
            when = "" if report.when == "call" else f" ({report.when})"
            self.failures.append(f"{category.upper()} {report.nodeid}{when}")

    def write_result(self, reporter: Any, seconds: float, stopped: bool) -> None:
        """The end of the file's line (counts, time) and its failures, one a line."""
        counts = format_counts(self.counts) + (" (stopped)" if stopped else "")
        failed = bool(self.counts["failed"] or self.counts["error"])
        reporter.write(f"{counts:<{_COUNTS_WIDTH}} ", **({"red": True} if failed else {"green": True}))
        reporter.line(f"{format_duration(seconds):>10}")
        for failure in self.failures:
            reporter.line(f"    {failure}", red=True)
        reporter.flush()


class _Progress:
    """What both plugins share: the terminal reporter, and no per-test dot."""

    def __init__(self, config: pytest.Config) -> None:
        self._config = config
        self._reporter: Any = config.pluginmanager.get_plugin("terminalreporter")

    @pytest.hookimpl(wrapper=True)
    def pytest_report_teststatus(self, report: pytest.TestReport) -> Generator[None, Any, Any]:
        category, _letter, word = yield
        return category, "", word  # drop the per-test dot; the word names the outcome in the -ra summary

    def _category(self, report: pytest.TestReport) -> str:
        return self._config.hook.pytest_report_teststatus(report=report, config=self._config)[0]


class FileProgress(_Progress):
    """Writes the per-file lines through pytest's terminal reporter."""

    def __init__(self, config: pytest.Config) -> None:
        super().__init__(config)
        self._files: list[str] = []
        self._path_width = 0
        self._current: _FileRun | None = None

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self._files = list(dict.fromkeys(file_of(item.nodeid) for item in session.items))
        self._path_width = max((len(path) for path in self._files), default=0)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, Any, Any]:
        path = file_of(item.nodeid)
        if self._current is None or self._current.path != path:
            self._start(path)
        try:
            return (yield)
        finally:
            if nextitem is None or file_of(nextitem.nodeid) != path:
                self._finish()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self._current is not None:
            self._current.record(report, self._category(report))

    def pytest_sessionfinish(self) -> None:
        if self._current is not None:  # stopped inside a file (-x, Ctrl-C)
            self._finish(stopped=True)

    def _start(self, path: str) -> None:
        number = self._files.index(path) + 1 if path in self._files else 0
        total = len(self._files)
        self._reporter.ensure_newline()
        self._reporter.write(f"[{number:>{len(str(total))}}/{total}] {path:<{self._path_width}}  ", flush=True)
        self._current = _FileRun(path=path, started=time.monotonic())

    def _finish(self, stopped: bool = False) -> None:
        run, self._current = self._current, None
        if run is not None:
            run.write_result(self._reporter, time.monotonic() - run.started, stopped)


class DistributedFileProgress(_Progress):
    """The same lines when pytest-xdist runs the files in worker processes (``-n``, ``--dist loadfile``).

    The controller sees only the workers' reports: a file's line is written when the teardown of its
    last test has been reported (in the order files finish), with the time from its first test's start
    to its last test's end on its worker.
    """

    def __init__(self, config: pytest.Config) -> None:
        super().__init__(config)
        self._expected: Counter[str] | None = None
        self._runs: dict[str, _FileRun] = {}
        self._last_stop: dict[str, float] = {}  # the file's last report's end (started: its first one's start)
        self._ended: Counter[str] = Counter()
        self._written = 0

    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        if self._expected is None:  # every worker collects the same tests
            self._expected = Counter(file_of(nodeid) for nodeid in ids)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        path = file_of(report.nodeid)
        run = self._runs.setdefault(path, _FileRun(path=path, started=report.start))
        run.started = min(run.started, report.start)
        self._last_stop[path] = max(self._last_stop.get(path, report.stop), report.stop)
        run.record(report, self._category(report))
        if report.when == "teardown":
            self._ended[path] += 1
            if self._expected is not None and self._ended[path] == self._expected[path]:
                self._write(path)

    def pytest_sessionfinish(self) -> None:
        for path in list(self._runs):  # files stopped inside (-x, Ctrl-C, a crashed worker)
            self._write(path, stopped=True)

    def _write(self, path: str, stopped: bool = False) -> None:
        run = self._runs.pop(path, None)
        if run is None:
            return
        self._written += 1
        total = len(self._expected or {})
        width = max((len(name) for name in self._expected or {}), default=len(path))
        self._reporter.ensure_newline()
        self._reporter.write(f"[{self._written:>{len(str(total))}}/{total}] {path:<{width}}  ")
        run.write_result(self._reporter, self._last_stop[path] - run.started, stopped)


@pytest.hookimpl(trylast=True)  # after pytest's own plugin has created the terminal reporter
def pytest_configure(config: pytest.Config) -> None:
    """Register the plugin when pytest runs quietly (``-q``) with a terminal (on xdist's controller only)."""
    quiet = config.get_verbosity(pytest.Config.VERBOSITY_TEST_CASES) < 0
    if not quiet or config.pluginmanager.get_plugin("terminalreporter") is None or hasattr(config, "workerinput"):
        return
    distributed = config.pluginmanager.hasplugin("xdist") and (getattr(config.option, "numprocesses", None) or 0)
    plugin = DistributedFileProgress(config) if distributed else FileProgress(config)
    config.pluginmanager.register(plugin, "rawvault-file-progress")
