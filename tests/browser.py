"""Headless Chromium for the Backups page's tests and benchmark: the driver, the rows shown, waiting for a load."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARGUMENTS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--no-proxy-server",
    "--window-size=1600,1000",
)


@contextmanager
def chromium(log_dir: Path, *, timeout: float) -> Iterator[Any]:
    """Debian's Chromium through /usr/bin/chromedriver, with a profile of its own (removed at the end)."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        raise RuntimeError(
            f"{CHROMIUM} or {CHROMEDRIVER} is missing: run scripts/setup.sh (apt: chromium chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = Path(tempfile.mkdtemp(prefix="rawvault-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (*ARGUMENTS, f"--user-data-dir={profile}"):
        options.add_argument(argument)
    log_dir.mkdir(parents=True, exist_ok=True)
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(log_dir / f"chromedriver-{os.getpid()}.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(timeout)
    driver.set_script_timeout(timeout)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def login(driver: Any, base: str, username: str, password: str, *, next_url: str, timeout: float = 60) -> None:
    """Log in on the simple auth manager's page like a user, going on to ``next_url``."""
    from urllib.parse import quote

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, timeout)
    driver.get(f"{base}/auth/login?next={quote(next_url, safe='')}")
    wait.until(ec.visibility_of_element_located((By.NAME, "username"))).send_keys(username)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda d: d.get_cookie("_token") is not None)


def rows(driver: Any) -> list[str]:
    """The raw file ids of the table's rows, in order."""
    from selenium.webdriver.common.by import By

    return [
        row.get_attribute("data-raw-file-id")
        for row in driver.find_elements(By.CSS_SELECTOR, "tbody tr[data-raw-file-id]")
    ]


def wait_ready(driver: Any, wait: Any, *, total: int | None = None) -> None:
    """Wait until the page has finished its latest load (and shows ``total`` raw files)."""
    wait.until(lambda d: d.execute_script("return document.body.dataset.state") in ("ready", "error"))
    if driver.execute_script("return document.body.dataset.state") == "error":
        raise AssertionError(
            "the page shows an error: " + driver.execute_script("return document.getElementById('error').textContent")
        )
    if total is not None:
        wait.until(lambda d: d.execute_script("return document.body.dataset.total") == str(total))


def after_click(driver: Any, wait: Any, element_id: str) -> list[str]:
    """Click ``element_id`` (next, prev, ...) and return the rows of the page it loads."""
    from selenium.webdriver.common.by import By

    driver.execute_script("document.body.dataset.state = 'clicked'")  # not "ready" until the new page is
    driver.find_element(By.ID, element_id).click()
    wait_ready(driver, wait)
    return rows(driver)
