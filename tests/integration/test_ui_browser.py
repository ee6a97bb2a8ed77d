"""The Backups page in a real headless Chromium against a real ``airflow api-server`` with seeded raw files.

One api-server (SQLite metadata DB, simple auth manager with a known
password, the rawvault plugin from ``airflow_src/plugins``) serves the whole
module. The browser logs in on the simple auth manager's login page like a
user, opens "Backups" from the navigation, checks the table, the counts and a
filter, pages forward and back by the API's cursors, searches by the start
of an id, follows a raw file's link to its ``acquisition_handler`` runs, and
keeps a screenshot in ``test-artifacts/backups-page.png``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import mongoengine
import pytest

from devtools.local_stack import REPO_ROOT
from shared.db import interface
from shared.db.totals import fold_totals, record_totals, totals_groups
from tests.browser import after_click, chromium, login, rows, wait_ready
from tests.page_rows import insert_raw_file
from tests.ui_stack import UiServer, database_uri, http
from tests.ui_stack import ui_server as start_ui_server

pytestmark = pytest.mark.slow

ARTIFACTS = REPO_ROOT / "test-artifacts"
USERNAME, PASSWORD = "admin", "rawvault-ui-test"
WAIT_SECONDS = 30

NOW = datetime.now(UTC).replace(microsecond=0)
# id: (instrument, project, status, backup_status, created hours ago, updated hours ago, extra fields)
SEED: dict[str, tuple] = {
    "20261101_P1_fail.raw": (
        "thermo1", "P1", "moving", "upload_failed", 3, 2,
        {"backup_status_details": "upload_to_s3: S3 reports ETag 9f0e…-2 for 20261101_P1_fail.raw, expected "
         "5d41…-2: the object was replaced; fix: clear the upload_to_s3 task to upload again", "size": 734_003_200},
    ),
    "20261030_P2_copyfail.d": (
        "tims1", "P2", "checksumming_done", "copying_failed", 30, 29,
        {"backup_status_details": "copy_raw_file: no space left on /backup (needs 2.1 GiB); fix: free space, "
         "then clear the task", "size": 2_254_857_830},
    ),
    "20261101_P1_stuck.wiff": ("zeno1", "P1", "checksumming_done", "upload_in_progress", 12, 10, {"size": 91_226_112}),
    # The pipeline failed before any backup (status error): failed too, with its reason.
    "20261101_P1_checksum_error.raw": (
        "thermo1", "P1", "error", None, 4, 3.5,
        {"status_details": "compute_checksum: 20261101_P1_checksum_error.raw changed while it was read; fix: "
         "clear the task once the instrument has finished", "size": 52_428_800},
    ),
    "20261101_P2_uploading.raw": ("thermo1", "P2", "moving", "upload_in_progress", 0.5, 0.1, {"size": 1_288_490_188}),
    "20261101_P1_done.raw": (
        "thermo1", "P1", "moved", "upload_done", 1, 0.5,
        {"size": 1_503_238_553, "s3_backup_key": "s3://rv-p1/thermo1/2026_11/",
         "s3_etag": "6f5902ac237024bdd0c176cb93063dc4-23"},
    ),
    "20261029_P2_done.d": (
        "tims1", "P2", "moved", "upload_done", 48, 47,
        {"size": 5_905_580_032, "s3_backup_key": "s3://rv-p2/tims1/2026_10/20261029_P2_done.d/",
         "s3_etag": "c2f7d3a1e4b5968877665544332211aa-3"},
    ),
    "20261101_copied.wiff": ("zeno1", "_FALLBACK", "moving", "copying_done", 5, 4, {"size": 45_613_056}),
    "20261101_P1_acquiring.raw": ("thermo1", "P1", "monitoring_acquisition", None, 0.05, 0.05, {}),
    '<img src=x onerror="document.title=1">.raw': ("thermo1", "P2", "moved", "skipped", 72, 71, {"size": 1024}),
}  # fmt: skip
FAILED_FIRST = [
    "20261101_P1_fail.raw",
    "20261101_P1_checksum_error.raw",
    "20261030_P2_copyfail.d",
    "20261101_P1_stuck.wiff",
]
ALL_IN_ORDER = [
    *FAILED_FIRST,
    "20261101_P1_acquiring.raw",
    "20261101_P2_uploading.raw",
    "20261101_P1_done.raw",
    "20261101_copied.wiff",
    "20261029_P2_done.d",
    '<img src=x onerror="document.title=1">.raw',
]
LINKED_RAW_FILE, LINKED_RUN_ID = "20261101_P1_fail.raw", "rawvault_ui_test_run"


def seed_raw_files() -> None:
    for raw_file_id, (*row, extra) in SEED.items():
        insert_raw_file(raw_file_id, *row, now=NOW, **extra)


@pytest.fixture(scope="module")
def ui_server(mongo_server: str) -> Iterator[UiServer]:
    """Seeded MongoDB database + ``airflow api-server`` with the rawvault plugin on a free port."""
    db_name = f"rv_ui_{uuid.uuid4().hex[:12]}"
    mongo_uri = database_uri(mongo_server, db_name)
    interface.connect_db(mongo_uri)
    seed_raw_files()
    with pytest.MonkeyPatch.context() as env:  # the totals the alert check records (zeno1's: not yet)
        env.setenv(interface.ENV_VAR_MONGO_URI, mongo_uri)
        for instrument in ("thermo1", "tims1"):
            projects = fold_totals(totals_groups(instrument), {"upload_done"})
            record_totals(instrument, projects, verified_by="s3", now=NOW - timedelta(minutes=20))
    try:
        with start_ui_server(mongo_uri, {USERNAME: ("admin", PASSWORD)}) as server:
            yield server
    finally:
        mongoengine.get_connection().drop_database(db_name)
        interface.reset_connection()


@pytest.fixture(scope="module")
def linked_run(ui_server: UiServer) -> str:
    """A queued acquisition_handler run for LINKED_RAW_FILE and one for a look-alike id (no scheduler runs them)."""
    token = ui_server.token(USERNAME)
    url = f"{ui_server.base_url}/api/v2/dags/acquisition_handler.thermo1/dagRuns"
    for run_id, raw_file_id in ((LINKED_RUN_ID, LINKED_RAW_FILE), ("look_alike_run", f"{LINKED_RAW_FILE}-thermo1-x")):
        body = {"dag_run_id": run_id, "logical_date": None, "conf": {"raw_file_id": raw_file_id}}
        status, answer, _ = http(url, token=token, method="POST", body=body)
        assert status == 200, answer
    return LINKED_RUN_ID


def test_json_endpoints_refuse_requests_without_an_airflow_login(ui_server: UiServer) -> None:
    for path in (
        "/rawvault/raw-files",
        "/rawvault/raw-files/counts",
        "/rawvault/raw-files?backup_status=upload_failed",
        "/rawvault/stores",
    ):
        status, body, _ = http(ui_server.base_url + path)
        assert status == 401, (path, body)
        assert body == {"detail": "Not authenticated"}
        status, body, _ = http(ui_server.base_url + path, token="not-a-jwt")
        assert status == 403, (path, body)
        status, body, _ = http(ui_server.base_url + path, cookie="forged")
        assert status == 403, (path, body)
    # The page itself sends a browser to Airflow's login, which comes back to it.
    status, _, headers = http(ui_server.base_url + "/rawvault/")
    assert status == 303
    assert headers["Location"].startswith("/auth/login?next=")
    assert quote(f"{ui_server.base_url}/rawvault/", safe="") in headers["Location"]


def test_json_endpoints_with_a_token(ui_server: UiServer) -> None:
    token = ui_server.token(USERNAME)
    status, page, _ = http(f"{ui_server.base_url}/rawvault/raw-files?limit=4", token=token)
    assert status == 200
    assert [row["id"] for row in page["items"]] == ALL_IN_ORDER[:4] and page["previous_cursor"] is None
    raw_files = f"{ui_server.base_url}/rawvault/raw-files?limit=4&cursor="
    status, page, _ = http(raw_files + page["next_cursor"], cookie=token)
    assert [row["id"] for row in page["items"]] == ALL_IN_ORDER[4:8]
    status, back, _ = http(raw_files + page["previous_cursor"], token=token)
    assert [row["id"] for row in back["items"]] == ALL_IN_ORDER[:4]
    status, body, _ = http(f"{ui_server.base_url}/rawvault/raw-files?cursor=forged", token=token)
    assert status == 422 and "cursor: not a cursor this page gave out" in body["detail"]

    status, page, _ = http(f"{ui_server.base_url}/rawvault/raw-files?instrument=tims1,zeno1", token=token)
    assert {row["instrument_id"] for row in page["items"]} == {"tims1", "zeno1"} and len(page["items"]) == 4

    status, counts, _ = http(f"{ui_server.base_url}/rawvault/raw-files/counts?project=P1", token=token)
    assert status == 200
    assert counts["total"] == 5 and counts["stuck"] == 1 and counts["pipeline_error"] == 1
    assert counts["counts"]["upload_failed"] == 1 and counts["counts"]["not_started"] == 2

    status, body, _ = http(f"{ui_server.base_url}/rawvault/raw-files?backup_status=done", token=token)
    assert status == 422 and "backup_status: unknown value(s) 'done'" in body["detail"]
    status, body, _ = http(f"{ui_server.base_url}/rawvault/raw-files?limit=0", token=token)
    assert status == 422


def test_plugin_is_registered_with_a_nav_entry(ui_server: UiServer) -> None:
    status, body, _ = http(f"{ui_server.base_url}/api/v2/plugins", token=ui_server.token(USERNAME))
    assert status == 200
    (plugin,) = [p for p in body["plugins"] if p["name"] == "rawvault"]
    assert plugin["fastapi_apps"][0]["url_prefix"] == "/rawvault"
    (view,) = plugin["external_views"]
    assert (view["name"], view["href"], view["destination"], view["url_route"]) == (
        "Backups", "rawvault/", "nav", "backups",
    )  # fmt: skip
    status, body, _ = http(f"{ui_server.base_url}/api/v2/plugins/importErrors", token=ui_server.token(USERNAME))
    assert body["import_errors"] == [], body


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """Headless Debian Chromium driven through /usr/bin/chromedriver."""
    with chromium(ARTIFACTS, timeout=WAIT_SECONDS) as driver:
        yield driver


def open_backups_view(driver, wait, base: str):
    """Log in like a user, then the Backups view of the Airflow UI (the page in an iframe): the frame."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    login(driver, base, USERNAME, PASSWORD, next_url=f"{base}/plugin/backups", timeout=WAIT_SECONDS)
    wait.until(lambda d: "/plugin/backups" in d.current_url)
    # The navigation has the "Backups" entry; the view is the page in an iframe.
    nav = wait.until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "nav a[href$='/plugin/backups'], a[href$='/plugin/backups']"))
    )
    assert nav is not None
    frame = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "iframe[title='Backups']")))
    driver.switch_to.frame(frame)
    wait_ready(driver, wait, total=len(SEED))
    return frame


def check_table(driver) -> None:
    """Counts at the top, failed and stuck rows first and highlighted, reasons readable, names as text."""
    from selenium.webdriver.common.by import By

    counts = {
        chip.get_attribute("data-status"): int(chip.get_attribute("data-count") or -1)
        for chip in driver.find_elements(By.CSS_SELECTOR, "#counts .chip[data-count]")
    }
    assert counts["upload_failed"] == 1 and counts["copying_failed"] == 1 and counts["stuck"] == 1
    assert counts["upload_done"] == 2 and counts["not_started"] == 2 and counts["skipped"] == 1
    assert counts["pipeline_error"] == 1
    assert driver.find_element(By.CSS_SELECTOR, "#counts .chip[data-status=''] .n").text == str(len(SEED))
    assert rows(driver) == ALL_IN_ORDER
    first = driver.find_element(By.CSS_SELECTOR, "#raw-files tbody tr")
    assert "failed" in first.get_attribute("class").split()
    assert "the object was replaced" in first.find_element(By.CSS_SELECTOR, "[data-testid=reason]").text
    assert first.value_of_css_property("background-color") not in ("rgba(0, 0, 0, 0)", "transparent")
    stuck = driver.find_element(By.CSS_SELECTOR, "tr[data-raw-file-id='20261101_P1_stuck.wiff']")
    assert "stuck" in stuck.get_attribute("class").split()
    pipeline_error = driver.find_element(By.CSS_SELECTOR, "tr[data-raw-file-id='20261101_P1_checksum_error.raw']")
    assert "failed" in pipeline_error.get_attribute("class").split()
    assert "changed while it was read" in pipeline_error.text
    cells = [td.text for td in first.find_elements(By.TAG_NAME, "td")]
    assert cells[1:4] == ["thermo1", "P1", "700.0 MiB"]
    done = driver.find_element(By.CSS_SELECTOR, "tr[data-raw-file-id='20261029_P2_done.d']")
    assert (
        "s3://rv-p2/tims1/2026_10/20261029_P2_done.d/" in done.text
        and "c2f7d3a1e4b5968877665544332211aa-3" in done.text
    )
    assert "2 d" in done.text
    # A file name is text, never markup.
    evil = driver.find_element(By.CSS_SELECTOR, "#raw-files tbody tr:last-child a.raw-file")
    assert evil.text == '<img src=x onerror="document.title=1">.raw'
    assert not driver.find_elements(By.CSS_SELECTOR, "tbody img")
    check_totals(driver)


def check_totals(driver) -> None:
    """The totals per instrument and project: the alert check's snapshot, with its time; zeno1 not computed yet."""
    from selenium.webdriver.common.by import By

    cells = {
        (row.get_attribute("data-instrument"), row.get_attribute("data-project")): [
            td.text for td in row.find_elements(By.TAG_NAME, "td")
        ]
        for row in driver.find_elements(By.CSS_SELECTOR, "#totals-table tbody tr")
    }
    assert set(cells) == {("thermo1", "P1"), ("thermo1", "P2"), ("tims1", "P2"), ("zeno1", None)}, cells
    # thermo1/P1: fail (700 MiB), checksum error (50 MiB), done (1.4 GiB), acquiring (no size): 1 of 4 verified.
    thermo_p1 = cells[("thermo1", "P1")]
    assert thermo_p1[:3] == ["thermo1", "P1", "4"] and thermo_p1[4] == "25%", thermo_p1
    assert thermo_p1[3].endswith("GiB") and thermo_p1[5].startswith("as of ") and thermo_p1[5].endswith(" ago)")
    assert cells[("tims1", "P2")][2:5] == ["2", "7.6 GiB", "50%"], cells[("tims1", "P2")]
    assert "not computed yet" in cells[("zeno1", None)][1]


def check_filters(driver, wait) -> None:
    """Each filter and chip changes the rows (failed first still); Clear brings all back."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    # Filter by instrument: the rows change, failed first still.
    Select(driver.find_element(By.ID, "f-instrument")).select_by_value("tims1")
    wait_ready(driver, wait, total=2)
    assert rows(driver) == ["20261030_P2_copyfail.d", "20261029_P2_done.d"]
    assert "instrument=tims1" in driver.execute_script("return location.search")
    # ... and by backup status through a count chip, on top of the instrument.
    driver.find_element(By.CSS_SELECTOR, "#counts .chip[data-status='upload_done']").click()
    wait_ready(driver, wait, total=1)
    assert rows(driver) == ["20261029_P2_done.d"]
    driver.find_element(By.ID, "clear").click()
    wait_ready(driver, wait, total=len(SEED))
    # ... and the raw files whose pipeline failed, through their chip.
    driver.find_element(By.CSS_SELECTOR, "#counts .chip[data-status='pipeline_error']").click()
    wait_ready(driver, wait, total=1)
    assert rows(driver) == ["20261101_P1_checksum_error.raw"]
    assert "backup_status=pipeline_error" in driver.execute_script("return location.search")
    driver.find_element(By.ID, "clear").click()
    wait_ready(driver, wait, total=len(SEED))
    # ... by status, and by a date range that only the 30 h and 48 h old ones fall into.
    Select(driver.find_element(By.ID, "f-status")).select_by_value("moved")
    wait_ready(driver, wait, total=3)
    assert set(rows(driver)) == {
        "20261101_P1_done.raw",
        "20261029_P2_done.d",
        '<img src=x onerror="document.title=1">.raw',
    }
    driver.find_element(By.ID, "clear").click()
    wait_ready(driver, wait, total=len(SEED))
    day = (NOW - timedelta(hours=48)).date()
    driver.execute_script(
        "const f = document.getElementById('filters');"
        "f.elements.created_from.value = arguments[0]; f.elements.created_to.value = arguments[1];"
        "f.dispatchEvent(new Event('change'));",
        day.isoformat(),
        (NOW - timedelta(hours=30)).date().isoformat(),
    )
    wait_ready(driver, wait)
    expected = {
        i for i, s in SEED.items() if day <= (NOW - timedelta(hours=s[4])).date() <= (NOW - timedelta(hours=30)).date()
    }
    assert set(rows(driver)) == expected and "20261029_P2_done.d" in expected
    driver.find_element(By.ID, "clear").click()
    wait_ready(driver, wait, total=len(SEED))


def test_backups_page_in_chromium(ui_server: UiServer, linked_run: str, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver, wait = browser, WebDriverWait(browser, WAIT_SECONDS)
    frame = open_backups_view(driver, wait, ui_server.base_url)
    check_table(driver)
    driver.switch_to.default_content()
    ARTIFACTS.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(ARTIFACTS / "backups-page.png"))
    driver.switch_to.frame(frame)
    check_filters(driver, wait)

    # A raw file links to its acquisition_handler runs; the Airflow UI shows that run and not the look-alike.
    driver.find_element(By.CSS_SELECTOR, f"tr[data-raw-file-id='{LINKED_RAW_FILE}'] a.raw-file").click()
    driver.switch_to.default_content()
    wait.until(lambda d: "/dags/acquisition_handler.thermo1/runs" in d.current_url)
    assert "conf_contains=" in driver.current_url
    wait.until(lambda d: linked_run in d.find_element(By.TAG_NAME, "body").text)
    assert "look_alike_run" not in driver.find_element(By.TAG_NAME, "body").text


def test_keyset_paging_both_ways_and_search_in_chromium(ui_server: UiServer, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver, wait = browser, WebDriverWait(browser, WAIT_SECONDS)
    driver.get(f"{ui_server.base_url}/rawvault/?limit=3")  # logged in by the test before (the module's browser)
    if "/auth/login" in driver.current_url:
        login(driver, ui_server.base_url, USERNAME, PASSWORD, next_url=f"{ui_server.base_url}/rawvault/?limit=3")
    wait.until(lambda d: "/rawvault/" in d.current_url)
    wait_ready(driver, wait, total=len(SEED))

    pages = [rows(driver)]
    while driver.find_element(By.ID, "next").is_enabled():
        pages.append(after_click(driver, wait, "next"))
    assert pages == [ALL_IN_ORDER[n : n + 3] for n in range(0, len(ALL_IN_ORDER), 3)]
    assert driver.find_element(By.ID, "range").text == f"10–10 of {len(SEED)}"
    back = [rows(driver)]
    while driver.find_element(By.ID, "prev").is_enabled():
        back.insert(0, after_click(driver, wait, "prev"))
    assert back == pages
    assert driver.find_element(By.ID, "range").text == f"1–3 of {len(SEED)}"

    # Search: the start of the id, case-sensitive; failed and stuck first, then by id.
    search = driver.find_element(By.ID, "f-q")
    search.send_keys("20261101_P1")
    wait.until(lambda d: "q=20261101_P1" in d.execute_script("return location.search"))
    wait_ready(driver, wait, total=5)
    found = rows(driver)
    while driver.find_element(By.ID, "next").is_enabled():
        found += after_click(driver, wait, "next")
    assert found == [
        "20261101_P1_fail.raw", "20261101_P1_checksum_error.raw", "20261101_P1_stuck.wiff",
        "20261101_P1_done.raw", "20261101_P1_acquiring.raw",
    ]  # fmt: skip
    search.clear()
    search.send_keys("20261101_p1")  # another case: nothing
    wait_ready(driver, wait, total=0)
    assert rows(driver) == []
