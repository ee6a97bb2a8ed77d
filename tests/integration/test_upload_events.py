"""Issue 17 items 3-4 through real DAG runs: the upload's metrics reach a real UDP StatsD receiver through
Airflow's own stats, every verified backup emits an Airflow asset event with its extra, and the README's
example consumer DAG is started by the scheduler's own code for asset-triggered runs."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.receivers import WebhookReceiver
from devtools.servers import HOST
from shared.db.models import RawFile
from tests.airflow_harness import load_dags, run_dag, run_triggered
from tests.data_factory import make_thermo
from tests.integration.test_upload_dags import _env, s3, s3_server  # noqa: F401 - fixtures

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CONSUMER_DAG_FOLDER = Path(__file__).resolve().parents[1] / "dags"
CONSUMER_DAG_ID = "process_thermo1_backups"


class StatsdReceiver:
    """A UDP StatsD server: keeps every metric line it receives (``name:value|type``)."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind((HOST, 0))
        self.socket.settimeout(0.2)
        self.port = self.socket.getsockname()[1]
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.socket.recv(65535)
            except TimeoutError:
                continue
            self.lines += data.decode().splitlines()

    def names(self) -> dict[str, list[str]]:
        """Metric name -> the values received (``value|type``)."""
        found: dict[str, list[str]] = {}
        for line in self.lines:
            name, _, value = line.partition(":")
            found.setdefault(name, []).append(value)
        return found

    def __enter__(self) -> StatsdReceiver:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.socket.close()


@pytest.fixture
def statsd(monkeypatch: pytest.MonkeyPatch) -> Iterator[StatsdReceiver]:
    """[metrics] statsd_on to a receiver of this test; the stats backend set up as the task runner does."""
    from airflow.sdk._shared.observability.metrics import stats
    from airflow.sdk.observability.metrics import stats_utils

    with StatsdReceiver() as receiver:
        monkeypatch.setenv("AIRFLOW__METRICS__STATSD_ON", "True")
        monkeypatch.setenv("AIRFLOW__METRICS__STATSD_HOST", HOST)
        monkeypatch.setenv("AIRFLOW__METRICS__STATSD_PORT", str(receiver.port))
        monkeypatch.setenv("AIRFLOW__METRICS__STATSD_PREFIX", "airflow")
        # What airflow.sdk.execution_time.task_runner.main() does in every task process (dag.test runs the
        # tasks in this process, where nothing has done it).
        stats.initialize(factory=stats_utils.get_stats_factory(), export_legacy_names=False)
        yield receiver
        stats.initialize(factory=stats_utils.get_stats_factory(), export_legacy_names=False)


def _sync_consumer_dag() -> Any:
    """Parse the example consumer DAG and write it to the metadata DB (unpaused), as the dag-processor does."""
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import update

    bag = DagBag(str(CONSUMER_DAG_FOLDER))
    assert not bag.import_errors, bag.import_errors
    sync_bag_to_db(bag, "dags-folder", None)  # the bundle the DAGs of dag.test() are in
    with create_session() as session:
        session.execute(update(DagModel).where(DagModel.dag_id == CONSUMER_DAG_ID).values(is_paused=False))
    return bag.dags


def _scheduler_creates_asset_triggered_runs() -> list[Any]:
    """The scheduler's own step for asset-triggered DAGs; return the consumer's runs it created."""
    from airflow.jobs.job import Job
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
    from airflow.models.dag import DagModel
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        runner = SchedulerJobRunner(job=Job())
        ready = DagModel.dags_needing_dagruns(session)[1]  # {dag_id: (first event, last event)} of ADRQs
        assert CONSUMER_DAG_ID in ready, ready
        consumer = session.scalars(select(DagModel).where(DagModel.dag_id == CONSUMER_DAG_ID)).all()
        runner._create_dag_runs_asset_triggered(dag_models=consumer, session=session)
        session.flush()
        runs = session.scalars(select(DagRun).where(DagRun.dag_id == CONSUMER_DAG_ID)).all()
        return [(run.run_type, [dict(event.extra) for event in run.consumed_asset_events]) for run in runs]


def test_a_verified_upload_sends_metrics_emits_an_asset_event_and_starts_the_consumer(
    tmp_path: Path,
    mongo_uri: str,
    s3: Any,  # noqa: F811 - the fixture imported above
    statsd: StatsdReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    alerts = {"enabled": True, "channels": {"webhook": {"conn_id": "rawvault_webhook"}}}
    env = _env(tmp_path, monkeypatch, auto_create=True, alerts=alerts)
    make_thermo(env.instrument_path("thermo1"), "20261122_events_01.raw")
    dags = load_dags()
    assert run_dag(dags["instrument_watcher.thermo1"])["__dagrun__"] == "success"  # syncs the DAG bundle
    consumer_dags = _sync_consumer_dag()  # before the upload: the event queues a run for every DAG scheduled on it
    handlers = run_triggered(dags, "acquisition_handler.")
    assert [h["tasks"]["upload_to_s3"] for h in handlers] == ["success"], handlers
    raw_file = RawFile.objects.get(id="20261122_events_01.raw")
    bucket, _, key_prefix = raw_file.s3_backup_key.removeprefix("s3://").partition("/")

    # Item 4: the asset event of the handler's upload_to_s3, with the extra set by the task.
    with create_session() as session:
        asset = session.scalars(select(AssetModel).where(AssetModel.uri == "x-rawvault://thermo1")).one()
        events = session.scalars(select(AssetEvent).where(AssetEvent.asset_id == asset.id)).all()
        extras = [dict(event.extra) for event in events]
    expected = {
        "raw_file_id": raw_file.id,
        "instrument_id": "thermo1",
        "bucket": bucket,
        "key_prefix": key_prefix,
        "s3_backup_key": raw_file.s3_backup_key,
        "etag": raw_file.s3_etag,
        "files_uploaded": 1,
    }
    assert expected in extras, extras

    # The example consumer DAG: the scheduler's code creates its asset-triggered run with this event...
    created = _scheduler_creates_asset_triggered_runs()
    assert [(str(run_type), events) for run_type, events in created] == [("asset_triggered", [expected])]
    # ...and the run executes: its task finds the event and returns its extra.
    ran = run_triggered({**dags, **consumer_dags}, CONSUMER_DAG_ID)
    assert ran and ran[0]["state"] == "success", ran
    with create_session() as session:
        value = session.scalars(
            select(XComModel.value).where(XComModel.dag_id == CONSUMER_DAG_ID, XComModel.key == "return_value")
        ).first()
    assert value is not None and (value if isinstance(value, dict) else json.loads(value)) == expected

    # Item 3: the upload's metrics, and the state gauges of an alert check, at the UDP receiver.
    with WebhookReceiver() as webhook:
        monkeypatch.setenv("AIRFLOW_CONN_RAWVAULT_WEBHOOK", json.dumps({"conn_type": "http", "host": webhook.url}))
        assert run_dag(dags["backup_alerts"])["__dagrun__"] == "success"
    deadline = time.monotonic() + 5  # UDP: give the last datagrams a moment
    while "airflow.rawvault.raw_files.upload_done" not in statsd.names() and time.monotonic() < deadline:
        time.sleep(0.1)
    received = statsd.names()
    size = sum(entry[0] for entry in raw_file.file_info.values())
    assert received["airflow.rawvault.upload.done"] == ["1|c"]
    assert received["airflow.rawvault.upload.bytes"] == [f"{size}|c"]
    assert received["airflow.rawvault.upload.duration"][0].endswith("|ms")
    assert float(received["airflow.rawvault.upload.throughput_mib_s"][0].split("|")[0]) > 0
    assert received["airflow.rawvault.raw_files.upload_done"][-1] == "1|g"
    assert received["airflow.rawvault.coverage.unprotected"][-1] == "0|g"
    assert received["airflow.rawvault.coverage.oldest_unprotected_age_seconds"][-1] == "0.0|g"
