"""Failures of the acquisition handler recorded on the RawFile, and acquisition_redrive's rules (in-memory MongoDB)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout, AirflowTaskTimeout
from pymongo.errors import ServerSelectionTimeoutError

from rawvault import keys
from rawvault.acquisition import AcquisitionGoneError, WrongInstrumentError
from rawvault.failures import KILLED_REASON, describe, record_failure
from rawvault.impl.fail_fast import fail_fast
from rawvault.impl.handler_failures import classify, record_handler_failure
from rawvault.local_backup import BackupConflictError
from rawvault.pipeline import FileInfoMismatchError
from rawvault.redrive import GAVE_UP_MARK, AirflowView, missing_run_grace, plan_redrives
from rawvault.s3.errors import S3TransientError
from rawvault.sweeper import backoff, capped_backoff
from shared.db.interface import DatabaseError, create_raw_file, get_raw_file, update_raw_file, utc_now
from shared.db.models import RawFile
from shared.settings import Settings, SettingsError, parse_settings

pytest_plugins = ["tests.unit.fakes"]

HANDLER = keys.handler_dag_id("thermo1")


def settings_for(tmp_path: Path, **acquisition: Any) -> Settings:
    raw = {
        "instruments": {"thermo1": {"type": "thermo", "path": str(tmp_path / "thermo1")}},
        "locations": {"backup": str(tmp_path / "backup")},
        "acquisition": {"poke_interval_seconds": 1, "redrive_delay_minutes": 10, "max_redrives": 2, **acquisition},
        "watcher": {"schedule": "* * * * *"},
        "backup": {"backup_type": "local"},
    }
    return parse_settings(raw, tmp_path / "rawvault.yaml")


def register(name: str, **fields: Any) -> RawFile:
    create_raw_file(name, instrument_id="thermo1", created_at=utc_now() - timedelta(hours=2), **fields)
    return get_raw_file(name)


def wrapped(error: BaseException) -> AirflowFailException:
    """What fail_fast raises for ``error`` (AirflowFailException from it)."""

    @fail_fast
    def task() -> None:
        raise error

    with pytest.raises(AirflowFailException) as raised:
        task()
    return raised.value


class Runs:
    """A fake of the Task SDK's DAG run queries: run id -> state; every lookup is counted."""

    def __init__(self, **states: str) -> None:
        self.states = dict(states)
        self.asked: list[str] = []

    def __call__(self, dag_id: str, run_id: str) -> str | None:
        assert dag_id == HANDLER
        self.asked.append(run_id)
        return self.states.get(run_id)


# --- the one classification -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (None, True),  # killed from outside: no exception at all
        (FileNotFoundError("the folder of instrument 'thermo1' is not there: is the share mounted?"), True),
        (OSError(112, "Host is down"), True),
        (ServerSelectionTimeoutError("mongodb:27017 timed out"), True),
        (DatabaseError("RAWVAULT_MONGO_URI is not set"), True),
        (S3TransientError("cannot reach S3"), True),
        (AirflowTaskTimeout("Timeout, PID: 1"), True),
        (AirflowSensorTimeout("Sensor has timed out"), True),
        (RuntimeError("something unexpected"), True),  # unknown: re-driven (capped) rather than left unprotected
        (PermissionError(13, "Permission denied"), False),
        (wrapped(AcquisitionGoneError("deleted while acquired")), False),
        (wrapped(BackupConflictError("a different file is in the backup")), False),
        (wrapped(FileInfoMismatchError("the files differ")), False),
        (wrapped(WrongInstrumentError("belongs to tims1")), False),
        (AirflowFailException("failed by hand"), False),
    ],
)
def test_one_classification_of_transient_and_permanent_causes(error: BaseException | None, transient: bool) -> None:
    assert classify(error) is transient


def test_a_permanent_error_wrapped_in_an_oserror_stays_permanent() -> None:
    try:
        try:
            raise BackupConflictError("conflict")
        except BackupConflictError as cause:
            raise OSError("while copying") from cause
    except OSError as error:
        assert classify(error) is True  # the outermost known kind decides: an OSError on the way out
    assert classify(wrapped(PermissionError(13, "denied"))) is False


def test_the_reason_names_the_error_once() -> None:
    assert describe(wrapped(AcquisitionGoneError("gone"))) == "AcquisitionGoneError: gone"
    assert describe(FileNotFoundError("no share")) == "FileNotFoundError: no share"
    assert describe(None) == KILLED_REASON


# --- recording ------------------------------------------------------------------------------------------


def test_a_failure_is_recorded_with_step_reason_time_and_kind(fake_db: None) -> None:
    register("a.raw", status="monitoring_acquisition")
    at = utc_now()
    assert record_failure("a.raw", step="monitor_acquisition", reason="OSError: down", transient=True, at=at)
    raw_file = get_raw_file("a.raw")
    assert (raw_file.status, raw_file.status_details) == ("error", "monitor_acquisition: OSError: down")
    assert (raw_file.error_step, raw_file.error_at, raw_file.error_transient) == ("monitor_acquisition", at, True)


def test_a_late_failure_never_marks_a_moved_or_re_driven_raw_file(fake_db: None) -> None:
    register("moved.raw", status="moved")
    assert not record_failure("moved.raw", step="start_file_mover", reason="x", transient=True)
    assert get_raw_file("moved.raw").status == "moved"
    register("redriven.raw", status="queued", redrive_count=2)
    assert not record_failure("redriven.raw", step="compute_checksum", reason="x", transient=True, redrives=1)
    assert record_failure("redriven.raw", step="compute_checksum", reason="x", transient=True, redrives=2)


def test_the_callback_records_the_last_try_of_a_handler_task(fake_db: None) -> None:
    register("cb.raw", status="checksumming")
    run_id = keys.handler_run_id("cb.raw")
    context = {
        "ti": SimpleNamespace(task_id="compute_checksum"),
        "dag_run": SimpleNamespace(conf={"raw_file_id": "cb.raw"}, run_id=run_id),
        "run_id": run_id,
        "exception": wrapped(FileInfoMismatchError("the files differ from the ones checksummed before")),
    }
    record_handler_failure(context)
    raw_file = get_raw_file("cb.raw")
    assert raw_file.status_details == (
        "compute_checksum: FileInfoMismatchError: the files differ from the ones checksummed before"
    )
    assert raw_file.error_transient is False and raw_file.error_step == "compute_checksum"

    # The dag-processor's callback of a task whose worker died: no exception, a transient cause.
    del context["exception"]
    context["ti"] = SimpleNamespace(task_id="copy_raw_file")
    record_handler_failure(context)
    raw_file = get_raw_file("cb.raw")
    assert raw_file.error_step == "copy_raw_file" and raw_file.error_transient is True
    assert raw_file.status_details == f"copy_raw_file: {KILLED_REASON}"

    context["ti"] = SimpleNamespace(task_id="upload_to_s3")  # records upload_failed itself
    context["exception"] = RuntimeError("S3 down")
    record_handler_failure(context)
    assert get_raw_file("cb.raw").error_step == "copy_raw_file"


def test_the_callback_never_raises_when_mongodb_is_down(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(*_args: Any, **_kwargs: Any) -> bool:
        raise ServerSelectionTimeoutError("mongodb:27017: timed out")

    monkeypatch.setattr("rawvault.failures.update_raw_file", unreachable)
    record_handler_failure(
        {"ti": SimpleNamespace(task_id="monitor_acquisition"), "dag_run": SimpleNamespace(conf={"raw_file_id": "x"})}
    )


# --- backoff --------------------------------------------------------------------------------------------


def test_backoff_never_overflows() -> None:
    # Before: OverflowError from 2^attempts x base minutes (e.g. 37 attempts at 15 minutes; max_upload_attempts is 100).
    assert backoff(100, 15) == timedelta(hours=6)
    assert backoff(37, 15) == timedelta(hours=6)
    assert capped_backoff(31, 1440, timedelta(hours=6)) == timedelta(hours=6)
    assert [backoff(n, 15) for n in (0, 1, 2)] == [timedelta(minutes=m) for m in (15, 30, 60)]
    assert backoff(5, 0) == timedelta(0)


# --- acquisition_redrive --------------------------------------------------------------------------------


def failed(name: str, *, transient: bool, ago: timedelta, step: str = "monitor_acquisition", **fields: Any) -> None:
    register(name, status="error", status_details=f"{step}: OSError: share down", error_step=step,
             error_transient=transient, error_at=utc_now() - ago, **fields)  # fmt: skip


def test_a_transient_failure_is_re_driven_after_its_backoff_and_only_once(fake_db: None, tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    failed("due.raw", transient=True, ago=timedelta(minutes=11))
    failed("waiting.raw", transient=True, ago=timedelta(minutes=5))
    failed("permanent.raw", transient=False, ago=timedelta(days=3))
    runs = Runs(**{keys.handler_run_id("due.raw"): "failed"})

    report = plan_redrives(settings, AirflowView(runs))
    (redrive,) = report.redrives
    assert (redrive.raw_file_id, redrive.attempt, redrive.dag_id) == ("due.raw", 1, HANDLER)
    assert redrive.run_id == f"{keys.run_id_for('due.raw')}__redrive1"
    assert set(report.waiting) == {"waiting.raw"} and report.permanent == ["permanent.raw"]
    raw_file = get_raw_file("due.raw")
    assert (raw_file.status, raw_file.redrive_count) == ("queued", 1)
    assert raw_file.status_details.startswith("re-driven by acquisition_redrive (1 of 2) after monitor_acquisition:")
    assert get_raw_file("permanent.raw").status == "error"  # never re-driven, stays visible

    # The next sweep finds the re-driven run queued (Airflow runs it): nothing is triggered twice.
    runs.states[redrive.run_id] = "queued"
    later = plan_redrives(settings, AirflowView(runs), utc_now() + timedelta(hours=1))
    assert [redrive.raw_file_id for redrive in later.redrives] == ["waiting.raw"]  # its backoff has passed now


def test_two_sweeps_that_read_the_same_raw_file_trigger_it_once(fake_db: None, tmp_path: Path) -> None:
    from rawvault.redrive import _Sweep

    settings = settings_for(tmp_path)
    failed("race.raw", transient=True, ago=timedelta(hours=1))
    read_by_both = get_raw_file("race.raw")
    first, second = (_Sweep(settings, utc_now(), AirflowView(Runs())) for _ in range(2))
    first.claim(read_by_both, 0, "x")
    second.claim(read_by_both, 0, "x")
    assert [len(sweep.report.redrives) for sweep in (first, second)] == [1, 0]
    assert get_raw_file("race.raw").redrive_count == 1


def test_after_max_redrives_it_gives_up_once_and_says_so(fake_db: None, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, max_redrives=2)
    failed("capped.raw", transient=True, ago=timedelta(days=1), redrive_count=2)
    report = plan_redrives(settings, AirflowView(Runs()))
    assert report.gave_up == ["capped.raw"] and report.redrives == []
    details = get_raw_file("capped.raw").status_details
    assert details.startswith(f"monitor_acquisition: {GAVE_UP_MARK} 2 re-drives; clear monitor_acquisition")
    assert details.endswith("Last error: OSError: share down")
    plan_redrives(settings, AirflowView(Runs()))
    assert get_raw_file("capped.raw").status_details == details  # said once


def test_a_lost_handler_run_is_re_driven_and_an_ended_one_recorded_first(fake_db: None, tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    grace = missing_run_grace(settings)
    assert grace == timedelta(minutes=2)  # twice the watcher's minute; 15 pokes of 1 s are less
    old = utc_now() - grace - timedelta(seconds=1)
    register("lost.raw", status="queued", db_updated_at=old)
    register("ended.raw", status="checksumming", db_updated_at=old)
    register("alive.raw", status="monitoring_acquisition", db_updated_at=old)
    register("fresh.raw", status="queued")
    register("copied.raw", status="checksumming_done", backup_status="copying_done", db_updated_at=old)
    runs = Runs(**{keys.handler_run_id("ended.raw"): "failed", keys.handler_run_id("alive.raw"): "running"})

    report = plan_redrives(settings, AirflowView(runs))
    assert [redrive.raw_file_id for redrive in report.redrives] == ["lost.raw"]
    assert report.recorded == ["ended.raw"]
    ended = get_raw_file("ended.raw")
    assert (ended.status, ended.error_step, ended.error_transient) == ("error", "compute_checksum", True)
    assert "ended failed while the raw file was still checksumming" in ended.status_details
    assert get_raw_file("alive.raw").status == "monitoring_acquisition"
    assert keys.handler_run_id("fresh.raw") not in runs.asked  # changed recently: no question to Airflow
    assert keys.handler_run_id("copied.raw") not in runs.asked  # the handler is done with it

    runs.states[report.redrives[0].run_id] = "running"  # Airflow runs the re-drive of lost.raw
    runs.states[keys.handler_run_id("fresh.raw")] = "queued"
    later = plan_redrives(settings, AirflowView(runs), utc_now() + timedelta(minutes=11))  # ended.raw: backoff over
    assert [redrive.raw_file_id for redrive in later.redrives] == ["ended.raw"]


def test_a_queued_raw_file_waits_while_its_watcher_still_has_triggers_to_run(fake_db: None, tmp_path: Path) -> None:
    # Seen in the load run: on a busy instrument queue the watcher's trigger task waited minutes for a slot, and a
    # re-drive meanwhile started a second handler run beside the one the watcher then started.
    settings = settings_for(tmp_path)
    old = utc_now() - timedelta(hours=1)
    register("waiting.raw", status="queued", db_updated_at=old)
    register("deleted-run.raw", status="checksumming", db_updated_at=old)  # the watcher never starts these
    asked: list[str] = []

    def pending(instrument_id: str) -> bool:
        asked.append(instrument_id)
        return True

    report = plan_redrives(settings, AirflowView(Runs(), pending))
    assert [redrive.raw_file_id for redrive in report.redrives] == ["deleted-run.raw"]
    assert "waiting.raw" in report.waiting and asked == ["thermo1"]
    later = plan_redrives(settings, AirflowView(Runs(), lambda _instrument_id: False))
    assert [redrive.raw_file_id for redrive in later.redrives] == ["waiting.raw"]


def test_no_redrive_when_airflow_cannot_say_whether_the_run_exists(fake_db: None, tmp_path: Path) -> None:
    failed("unknown.raw", transient=True, ago=timedelta(hours=1))

    def api_down(_dag_id: str, _run_id: str) -> str | None:
        raise ConnectionError("the API server is down")

    report = plan_redrives(settings_for(tmp_path), AirflowView(api_down))
    assert report.redrives == [] and report.unknown == ["unknown.raw"]
    assert get_raw_file("unknown.raw").status == "error"


def test_the_watcher_starts_a_re_driven_raw_file_under_its_attempt(fake_db: None, tmp_path: Path) -> None:
    from rawvault.watcher import handler_starts

    settings = settings_for(tmp_path)
    settings.instruments["thermo1"].path.mkdir(parents=True)
    register("first.raw", status="queued")
    register("again.raw", status="queued", redrive_count=3)
    assert sorted(handler_starts("thermo1", settings)) == [
        ("again.raw", keys.handler_run_id("again.raw", 3)),
        ("first.raw", keys.run_id_for("first.raw")),
    ]


def test_redrive_settings_are_validated_with_their_fix(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"acquisition\.max_redrives: .*-> fix: use a whole number from 0"):
        settings_for(tmp_path, max_redrives=101)
    with pytest.raises(SettingsError, match=r"acquisition\.redrive_schedule: .*-> fix: write 5 cron fields"):
        settings_for(tmp_path, redrive_schedule="every ten minutes")
    defaults = settings_for(tmp_path).acquisition
    assert defaults.step_timeout_hours == 24 and settings_for(tmp_path, max_redrives=0).acquisition.max_redrives == 0


def test_redrive_run_ids_are_valid_and_name_their_attempt() -> None:
    from tests.unit.test_keys import airflow_accepts_run_id

    for raw_file_id in ("a..raw", "x" * 400, "20261122 ä.d"):
        run_id = keys.handler_run_id(raw_file_id, 100)
        assert airflow_accepts_run_id(run_id) and keys.redrive_of_run_id(run_id) == 100
    assert keys.handler_run_id("a.raw", 0) == keys.run_id_for("a.raw")
    assert keys.redrive_of_run_id(keys.run_id_for("a.raw")) == 0 and keys.redrive_of_run_id("manual__2026") == 0


def test_update_raw_file_keeps_the_attempt_compare_and_set(fake_db: None) -> None:
    register("cas.raw", status="queued")  # redrive_count 0 by default
    assert update_raw_file("cas.raw", expected={"redrive_count__in": [0, None]}, redrive_count=1)
    assert not update_raw_file("cas.raw", expected={"redrive_count__in": [0, None]}, redrive_count=2)
    assert isinstance(get_raw_file("cas.raw").db_updated_at, datetime)


# --- alerts read what is recorded -------------------------------------------------------------------------


def test_alerts_name_a_gave_up_re_drive_and_link_the_latest_run() -> None:
    from rawvault.alerts.raw_files import RuleContext, raw_file_alert_state

    now = utc_now()
    ctx = RuleContext(now=now, deadline=timedelta(hours=24), s3=True, ui_base_url="https://af.example/")

    def state(**fields: Any) -> Any:
        doc = RawFile(id="x.raw", original_name="x.raw", instrument_id="thermo1", created_at=now, **fields)
        return raw_file_alert_state(doc, ctx)

    details = f"monitor_acquisition: {GAVE_UP_MARK} 6 re-drives; clear monitor_acquisition ..."
    gave_up = state(status="error", redrive_count=6, error_transient=True, status_details=details)
    assert gave_up.state == "redrive_gave_up:monitor_acquisition" and gave_up.title.startswith("Re-drives given up")
    assert gave_up.link is not None and gave_up.link.endswith(
        f"/runs/{keys.handler_run_id('x.raw', 6)}/tasks/monitor_acquisition"
    )
    transient = state(status="error", error_transient=True, redrive_count=1,
                      status_details="compute_checksum: OSError: share down")  # fmt: skip
    assert transient.state == "pipeline_error:compute_checksum"
    assert "acquisition_redrive starts the handler again" in transient.hint
    assert state(status="queued", redrive_count=1, status_details="re-driven by ...").health == "unknown"  # on its way
