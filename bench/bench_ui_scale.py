"""The Backups page in headless Chromium over the seeded raw files (default 300,000): how long each step takes.

    .venv/bin/python bench/bench_ui_scale.py [--size 300000]

Uses the data of ``bench/bench_scale.py`` (seeded there once, or here if
missing), starts a real ``airflow api-server`` with the rawvault plugin
(tests/ui_stack.py), logs in, opens the page and times, from the action to
the rendered page: the first load (chips and list), each filter (instrument,
project, the ``upload_failed`` chip, one month), paging forward three pages
and back, and a search by the start of an id. "page" is the page's own
measure (request to rendered rows, ``data-load-ms``); "wall" adds the
browser's input handling (a search waits 300 ms for typing to stop). Once,
for the report: not a test.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO_ROOT = BENCH.parent
WAIT_SECONDS = 600
USER = "admin"


def timed(driver: Any, action: Callable[[], None]) -> dict[str, float]:
    """Run ``action`` and wait for the page's next rendered load: wall and in-page seconds."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_script("document.body.dataset.state = 'waiting'")
    started = time.perf_counter()
    action()
    WebDriverWait(driver, WAIT_SECONDS, poll_frequency=0.05).until(
        lambda d: d.execute_script("return document.body.dataset.state") in ("ready", "error")
    )
    wall = time.perf_counter() - started
    if driver.execute_script("return document.body.dataset.state") == "error":
        raise RuntimeError(driver.execute_script("return document.getElementById('error').textContent"))
    page_ms = float(driver.execute_script("return document.body.dataset.loadMs") or 0)
    rows = int(driver.execute_script("return document.querySelectorAll('tbody tr[data-raw-file-id]').length"))
    return {"wall": wall, "page": page_ms / 1000, "rows": rows}


def steps(driver: Any, base: str) -> list[tuple[str, Callable[[], None]]]:
    """The user's steps, in order."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    def select(element_id: str, value: str) -> Callable[[], None]:
        return lambda: Select(driver.find_element(By.ID, element_id)).select_by_value(value)

    def script(code: str) -> Callable[[], None]:
        return lambda: driver.execute_script(code)

    month = ("f.elements.created_from.value = '2025-03-01'; f.elements.created_to.value = '2025-03-31';"
             "f.dispatchEvent(new Event('change'));")  # fmt: skip

    def click(selector: str, by: str = By.ID) -> Callable[[], None]:
        return lambda: driver.find_element(by, selector).click()

    return [
        ("first load: chips and list", lambda: driver.get(f"{base}/rawvault/")),
        ("filter: one instrument", select("f-instrument", "tims2")),
        ("filter: clear", click("clear")),
        ("filter: one project", select("f-project", "P007")),
        ("filter: clear", click("clear")),
        ("chip: upload_failed", click(".chip[data-status='upload_failed']", By.CSS_SELECTOR)),
        ("filter: clear", click("clear")),
        ("filter: one month", script(f"const f = document.getElementById('filters'); {month}")),
        ("filter: clear", click("clear")),
        ("next page (2)", click("next")),
        ("next page (3)", click("next")),
        ("next page (4)", click("next")),
        ("previous page (3)", click("prev")),
        ("previous page (2)", click("prev")),
        ("previous page (1)", click("prev")),
        ("search: id starts with 20250314", lambda: driver.find_element(By.ID, "f-q").send_keys("20250314")),
    ]  # fmt: skip


def run_steps(base: str, password: str, artifacts: Path) -> list[dict[str, object]]:
    """Log in and time every step; a screenshot of the end in ``artifacts``."""
    from tests.browser import chromium, login

    results: list[dict[str, object]] = []
    with chromium(artifacts, timeout=WAIT_SECONDS) as driver:
        login(driver, base, USER, password, next_url=f"{base}/rawvault/", timeout=WAIT_SECONDS)
        for name, action in steps(driver, base):
            result = {"step": name, **timed(driver, action)}
            results.append(result)
            print(f"{name:36} wall {result['wall']:7.2f} s   page {result['page']:7.2f} s   {result['rows']} rows",
                  flush=True)  # fmt: skip
        driver.save_screenshot(str(artifacts / "backups-page-scale.png"))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=300_000)
    args = parser.parse_args()
    sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "airflow_src" / "plugins"), str(BENCH)]
    import bench_scale
    from scale_data import INSTRUMENTS

    from devtools.servers import MongoServer
    from tests.ui_stack import ui_server

    artifacts = bench_scale.RESULTS
    password = secrets.token_hex(8)
    instruments = {iid: {"type": kind, "path": str(artifacts / "shares" / iid)} for iid, kind in INSTRUMENTS.items()}
    # backup_type s3, as the seeded data: with local settings nearly every raw file (upload_done) would be a
    # "small group" of the chips, counted one by one (the run of 2026-11-30 had that: 138 s per page load).
    backup = {"backup_type": "s3", "s3": {"region": "us-east-1", "bucket_prefix": "facility", "part_size_mb": 64}}
    settings = {"instruments": instruments, "backup": backup}
    with MongoServer(storage_path=bench_scale.STORE / "data", log_path=bench_scale.STORE / "mongo.log") as mongo:
        uri = bench_scale.seed(mongo.uri, args.size)
        with ui_server(uri, {USER: ("admin", password)}, reserialize=False, settings=settings) as api:
            results = run_steps(api.base_url, password, artifacts)
    (artifacts / "bench_ui_scale.json").write_text(json.dumps({"size": args.size, "steps": results}, indent=1))


if __name__ == "__main__":
    main()
