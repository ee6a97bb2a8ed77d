"""The Backups page shows a running upload's progress advancing (issue 17 item 2), in headless Chromium.

A real upload (the claim, its heartbeat, the bandwidth limit backup.s3.bandwidth) runs in this process
against moto's S3 server while a real ``airflow api-server`` serves the page from the same MongoDB database;
the page reads itself again every second while an upload is shown. Also: status details coloured by outcome,
long values cut with the whole value on hover and a copy button, the last free space of each folder.
Screenshots in ``test-artifacts/backups-progress-*.png``.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mongoengine
import pytest

from devtools.local_stack import REPO_ROOT
from devtools.servers import S3Server
from rawvault.backup import XcomFileInfo, upload_raw_file
from rawvault.s3.bandwidth import limiter_for, throttle_uploads
from shared.db import interface
from shared.db.free_space import record_free_space
from shared.db.interface import create_raw_file, get_raw_file
from shared.db.models import RawFile
from shared.db.s3_stores import save_store_capabilities
from tests.browser import chromium, login, wait_ready
from tests.s3_fixtures import PART, file_info_of, make_client, make_settings, unique_prefix, write_file
from tests.ui_stack import database_uri
from tests.ui_stack import ui_server as start_ui_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ARTIFACTS = REPO_ROOT / "test-artifacts"
USERNAME, PASSWORD = "admin", "rawvault-progress-test"
UPLOADING = "20261130_thermo1_progress.raw"
DONE = "20261130_thermo1_done_with_a_rather_long_name_for_the_column.raw"
LONG_KEY = "s3://rawvault-facility-p1/thermo1/2026_11/20261130_thermo1_done_with_a_rather_long_name_for_the_column/"
SIZE = 40 * 1024 * 1024  # at 8 Mbit/s: about 40 s of upload


@pytest.fixture
def database(mongo_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    db_name = f"rv_progress_{uuid.uuid4().hex[:10]}"
    uri = database_uri(mongo_server, db_name)
    monkeypatch.setenv(interface.ENV_VAR_MONGO_URI, uri)
    interface.connect_db(uri)
    yield uri
    mongoengine.get_connection().drop_database(db_name)
    interface.reset_connection()


def _seed_done_and_free_space() -> None:
    now = datetime.now(UTC)
    RawFile(
        id=DONE, original_name=DONE, instrument_id="thermo1", project_id="P1", status="moved",
        backup_status="upload_done", created_at=now, size=5 << 30, s3_backup_key=LONG_KEY,
        s3_etag="6f5902ac237024bdd0c176cb93063dc4-23",
        backup_status_details="in s3://rawvault-facility-p1/thermo1/2026_11/: 1 file(s) uploaded, 0 already there, "
        "all verified; manifest thermo1/2026_11/x.rawvault-manifest.json",
    ).save(force_insert=True)  # fmt: skip
    save_store_capabilities(  # as the upload's probe records it (rawvault.s3.capabilities)
        "http://s3.facility.test:9000",
        "rawvault-facility-p1",
        {"probed_at": now, "summary": "versioning on, conditional writes, SHA-256 checksums",
         "weaknesses": ["no Object Lock"]},
    )  # fmt: skip
    record_free_space(
        [
            {"id": "instrument:thermo1", "path": "/mnt/thermo1", "free_bytes": 120 << 30, "total_bytes": 500 << 30,
             "measured_at": now},
            {"id": "backup", "path": "/backup", "free_bytes": 3 << 40, "total_bytes": 8 << 40, "measured_at": now},
        ]
    )  # fmt: skip


def _slow_upload(tmp_path: Path, s3_endpoint: str) -> tuple[threading.Thread, list[BaseException]]:
    """Register a raw file with its local copy and upload it in a thread, limited to 8 Mbit/s."""
    settings = make_settings(
        tmp_path, unique_prefix(), auto_create_buckets=True, stale_upload_minutes=0.25, bandwidth={"limit_mbit": 8}
    )  # lease 15 s: the heartbeat renews it (and records the progress) every 5 s
    folder = settings.locations.backup / "thermo1" / "2026_11"
    write_file(folder / UPLOADING, SIZE, seed=7)
    info = file_info_of(folder, [UPLOADING])
    create_raw_file(
        UPLOADING, instrument_id="thermo1", project_id="P1", created_at=datetime.now(UTC), file_info=info,
        etag_part_size=PART, backup_status="copying_done",
    )  # fmt: skip
    errors: list[BaseException] = []

    def upload() -> None:
        try:
            xcom = XcomFileInfo(file_info=info, part_size=PART, backup_folder=folder)
            client = make_client(s3_endpoint)
            # The worker's limiter for backup.s3.bandwidth on this test's own client (the upload takes it as given).
            throttle_uploads(client, limiter_for(settings.backup.s3.bandwidth, settings.timezone))
            upload_raw_file(UPLOADING, settings, xcom=xcom, client=client, progress_interval=5)
        except BaseException as error:  # reported by the test
            errors.append(error)

    thread = threading.Thread(target=upload, daemon=True)
    thread.start()
    return thread, errors


def _progress_shown(driver: Any) -> int | None:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, f"tr[data-raw-file-id='{UPLOADING}'] [data-testid=progress]")
    return int(found[0].get_attribute("data-bytes-done")) if found else None


def test_a_running_uploads_progress_advances_on_the_page(database: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _seed_done_and_free_space()
    ARTIFACTS.mkdir(exist_ok=True)
    with S3Server() as s3, start_ui_server(database, {USERNAME: ("admin", PASSWORD)}, reserialize=False) as ui:
        thread, errors = _slow_upload(tmp_path, s3.endpoint_url)
        with chromium(ARTIFACTS, timeout=60) as driver:
            wait = WebDriverWait(driver, 60)
            login(driver, ui.base_url, USERNAME, PASSWORD, next_url=f"{ui.base_url}/rawvault/?refresh=1", timeout=60)
            wait.until(lambda d: "/rawvault/" in d.current_url)
            wait_ready(driver, wait, total=2)
            first = WebDriverWait(driver, 60, poll_frequency=0.5).until(_progress_shown)
            text = driver.find_element(By.CSS_SELECTOR, "[data-testid=progress]").text
            assert "MiB of 40.0 MiB" in text and "MiB/s" in text and "ETA" in text, text
            assert driver.save_screenshot(str(ARTIFACTS / "backups-progress-1.png"))
            # The page reads itself again; the next heartbeat's bytes show without a click.
            later = WebDriverWait(driver, 60, poll_frequency=0.5).until(
                lambda d: (shown := _progress_shown(d)) is not None and shown > first and shown
            )
            assert driver.save_screenshot(str(ARTIFACTS / "backups-progress-2.png"))
            assert later > first

            # Status details by outcome: a success is green, not the failure colour.
            done = driver.find_element(By.CSS_SELECTOR, f"tr[data-raw-file-id='{DONE}'] [data-testid=reason]")
            assert "ok" in done.get_attribute("class").split()
            assert done.value_of_css_property("color") == "rgba(21, 128, 61, 1)"  # --done-fg
            # A long key: cut on one line, the whole value on hover, a copy button that holds it.
            key = driver.find_element(By.CSS_SELECTOR, f"tr[data-raw-file-id='{DONE}'] [data-testid=key]")
            assert key.get_attribute("title") == LONG_KEY
            assert key.value_of_css_property("text-overflow") == "ellipsis"
            assert key.size["height"] < 24  # one line, not broken in the middle
            copy = driver.find_element(By.CSS_SELECTOR, f"tr[data-raw-file-id='{DONE}'] td.key button.copy")
            assert copy.get_attribute("data-copy") == LONG_KEY
            copy.click()
            wait.until(lambda d: copy.text == "copied")
            # The last free space of each folder, with its time.
            disks = driver.find_element(By.ID, "facility").text
            assert "instrument thermo1: 120.0 GiB free of 500.0 GiB" in disks and "backup root: 3.0 TiB free" in disks
            # ... and what the probe found out about the bucket's store (issue 15).
            stores = driver.find_element(By.ID, "stores").text  # GET stores: an admin may read every DAG
            assert "s3://rawvault-facility-p1: versioning on, conditional writes, SHA-256 checksums" in stores, stores
        thread.join(timeout=300)
    assert not errors, errors
    record = get_raw_file(UPLOADING)
    assert record.backup_status == "upload_done" and not record.upload_progress
