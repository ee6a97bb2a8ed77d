"""Realistic ``raw_file`` documents for the scale benchmarks: years of history plus the same few days of work.

Ten instruments (thermo, bruker, sciex), 200 projects of very different
sizes, three years. The last :data:`RECENT_DAYS` days are the same in every
data set (what a facility is working on does not grow with its history):
raw files being acquired, copied, uploaded, some uploads failing and retried.
Everything before is history: nearly all ``moved``/``upload_done``, and the
failures nobody fixed (given-up uploads, failed copies, pipeline errors),
about 2 % of it. Names are date-prefixed (``YYYYMMDD_HHMMSS_P042_astral1_…``).

Inserted with pymongo ``insert_many`` through ``shared.db``'s connection,
then every index is built (building them after the insert is ~4x faster on
the MongoDB wire server than inserting into indexed collections).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
SEED_VERSION = 2  # a data set seeded by another version is seeded again
YEARS = 3
RECENT_DAYS = 3
RECENT_PER_DAY = 250
INSTRUMENTS = {
    "astral1": "thermo", "astral2": "thermo", "exploris1": "thermo", "exploris2": "thermo", "eclipse1": "thermo",
    "tims1": "bruker", "tims2": "bruker", "tims3": "bruker", "zeno1": "sciex", "zeno2": "sciex",
}  # fmt: skip
PROJECTS = [f"P{n:03d}" for n in range(200)]
MAX_ATTEMPTS = 5
SUFFIX = {"thermo": ".raw", "bruker": ".d", "sciex": ".wiff"}
# Indexes rawvault declared before issue 18 (the reference run's queries were planned on these).
LEGACY_INDEXES = [[("instrument_id", 1)], [("backup_status", 1)], [("original_name", 1)], [("created_at", -1)]]
BATCH = 5000


def _common(rng: random.Random, n: int, created: datetime) -> dict[str, Any]:
    instrument = rng.choice(list(INSTRUMENTS))
    kind = INSTRUMENTS[instrument]
    # A few projects hold most raw files (weights 1/rank), the fallback project some.
    project = rng.choices(PROJECTS, weights=[1 / (rank + 1) for rank in range(len(PROJECTS))])[0]
    name = f"{created:%Y%m%d_%H%M%S}_{project}_{instrument}_{n:07d}{SUFFIX[kind]}"
    size = rng.randrange(200 * 2**20, 8 * 2**30)
    parts = -(-size // (64 * 2**20))
    return {
        "_id": name,
        "original_name": name,
        "instrument_id": instrument,
        "instrument_type": kind,
        "project_id": project,
        "created_at": created,
        "size": size,
        "source_inode": 10**6 + n,
        "file_info": {name: [size, f"{rng.getrandbits(128):032x}", f"{rng.getrandbits(128):032x}-{parts}"]},
        "etag_part_size": 64 * 2**20,
        "backup_base_path": f"{instrument}/{created:%Y_%m}",
        "sample_key": rng.random(),
        "s3_upload_attempts": 0,
        "db_created_at": created,
        "db_updated_at": created + timedelta(minutes=30),
    }


def _uploaded(doc: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    created = doc["created_at"]
    doc.update(
        status="moved",
        backup_status="upload_done",
        s3_backup_key=f"s3://facility-{doc['project_id'].lower()}/{doc['instrument_id']}/{created:%Y_%m}/",
        s3_etag=next(iter(doc["file_info"].values()))[2],
        s3_upload_attempts=1,
        s3_upload_attempted_at=created + timedelta(minutes=20),
    )
    return doc


def history_document(rng: random.Random, n: int, created: datetime) -> dict[str, Any]:
    """One raw file of the history: done, or a failure nobody fixed."""
    doc = _uploaded(_common(rng, n, created), rng)
    draw = rng.random()
    if draw < 0.012:  # uploads given up on (and said so); the sweeper must never read these again
        doc.update(backup_status="upload_failed", s3_upload_attempts=MAX_ATTEMPTS + rng.randrange(3),
                   s3_upload_failed_at=created + timedelta(hours=9),
                   backup_status_details=f"gave up after {MAX_ATTEMPTS} attempts; clear upload_to_s3 to retry by "
                   "hand. Last error: upload to S3 failed: SlowDown (503)")  # fmt: skip
    elif draw < 0.015:
        doc.update(status="checksumming_done", backup_status="copying_failed", s3_upload_attempts=0,
                   backup_status_details="copy_raw_file: no space left on /backup")  # fmt: skip
    elif draw < 0.020:
        # Before its copy (checksum failed), or after its upload (the move failed).
        if rng.random() < 0.5:
            doc.update(status="error", status_details="compute_checksum: the file changed while it was read",
                       s3_upload_attempts=0)  # fmt: skip
            for field in ("backup_status", "s3_backup_key", "s3_etag", "s3_upload_attempted_at"):
                doc.pop(field, None)
        else:
            doc.update(status="error", status_details="file mover: the share is read-only")
    return doc


def recent_document(rng: random.Random, n: int, created: datetime) -> dict[str, Any]:
    """One raw file of the last days: mostly done, the newest still on their way."""
    doc = _uploaded(_common(rng, n, created), rng)
    age = NOW - created
    draw = rng.random()
    if age < timedelta(hours=2) and draw < 0.5:
        doc.update(status=rng.choice(["queued", "monitoring_acquisition", "checksumming"]), s3_upload_attempts=0)
        for field in ("backup_status", "s3_backup_key", "s3_etag", "s3_upload_attempted_at"):
            doc.pop(field, None)
    elif age < timedelta(hours=24) and draw < 0.15:
        doc.update(status="moving", backup_status="copying_done", s3_upload_attempts=0, db_updated_at=created)
    elif draw < 0.18:
        doc.update(status="moving", backup_status="upload_in_progress", upload_claim_owner=f"worker:{n}",
                   upload_claim_expires_at=created + timedelta(minutes=40))  # fmt: skip
    elif draw < 0.21:
        doc.update(backup_status="upload_failed", s3_upload_attempts=rng.randrange(1, MAX_ATTEMPTS),
                   s3_upload_failed_at=created + timedelta(hours=1), db_updated_at=created + timedelta(hours=1),
                   backup_status_details="upload to S3 failed: RequestTimeout; backup_sweeper retries it")  # fmt: skip
    elif draw < 0.215:
        doc.update(status="checksumming_done", backup_status="copying_in_progress", s3_upload_attempts=0,
                   db_updated_at=created)  # fmt: skip
    return doc


def documents(size: int, seed: int = 18) -> Iterator[dict[str, Any]]:
    """``size`` raw file documents: the same recent days, then history back to :data:`YEARS` years ago."""
    rng = random.Random(seed)
    recent = RECENT_DAYS * RECENT_PER_DAY
    recent_span = timedelta(days=RECENT_DAYS).total_seconds()
    for n in range(recent):
        yield recent_document(rng, n, NOW - timedelta(seconds=recent_span * (n + 0.5) / recent))
    history = max(0, size - recent)
    start = NOW - timedelta(days=RECENT_DAYS)
    span = timedelta(days=365 * YEARS).total_seconds()
    for n in range(history):
        yield history_document(rng, recent + n, start - timedelta(seconds=span * (n + 0.5) / history))


IndexSpec = tuple[list[tuple[str, int]], dict[str, Any]]  # keys, options (sparse, unique)


def seed_database(database: Any, size: int, index_specs: list[IndexSpec]) -> None:
    """Insert ``size`` documents and the projects into ``database`` (pymongo), then build ``index_specs``."""
    raw_file = database.raw_file
    batch: list[dict[str, Any]] = []
    for doc in documents(size):
        batch.append(doc)
        if len(batch) == BATCH:
            raw_file.insert_many(batch, ordered=False)
            batch = []
    if batch:
        raw_file.insert_many(batch, ordered=False)
    database.project.insert_many([{"_id": project, "name": project} for project in PROJECTS])
    for keys, options in index_specs:
        # As mongoengine asks for them (background: false, the model's sparse/unique): the wire server calls
        # other options another index, and the working tree's connect would then fail to create its own.
        raw_file.create_index(keys, background=False, **options)


def match_model_indexes(database: Any, index_specs: list[IndexSpec]) -> list[str]:
    """Rebuild the indexes of an earlier seed whose options differ from the model's; their names."""
    existing = database.raw_file.index_information()
    rebuilt = []
    for keys, options in index_specs:
        name = "_".join(f"{field}_{direction}" for field, direction in keys)
        found = existing.get(name)
        if found is not None and any(bool(found.get(option)) != bool(value) for option, value in options.items()):
            database.raw_file.drop_index(name)
            database.raw_file.create_index(keys, background=False, **options)
            rebuilt.append(name)
    return rebuilt


def share_names(database: Any, instrument: str) -> list[str]:
    """What the instrument's share holds: its raw files of the last days not moved off yet, and two new ones."""
    recent = database.raw_file.find(
        {"instrument_id": instrument, "created_at": {"$gte": NOW - timedelta(days=RECENT_DAYS)}},
        {"original_name": 1, "status": 1},
    )
    names = [doc["original_name"] for doc in recent if doc.get("status") != "moved"]
    return names + [f"{NOW:%Y%m%d_%H%M%S}_P000_{instrument}_new{n}.raw" for n in range(2)]
