"""verify's random sample of upload_done raw files (shared.db.uploaded) on the MongoDB wire server."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from shared.db.models import RawFile
from shared.db.uploaded import sample_uploaded_raw_files

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def seed(count: int = 60) -> None:
    for n in range(count):
        RawFile(
            id=f"r{n:03d}.raw", original_name=f"r{n:03d}.raw", instrument_id=("thermo1", "tims1")[n % 2],
            project_id=None if n % 10 == 0 else f"P{n % 3}", created_at=T0 + timedelta(days=n),
            backup_status="upload_done" if n % 7 else "upload_failed",
        ).save(force_insert=True)  # fmt: skip


def ids(selection) -> list[str]:
    return [raw_file.id for raw_file in selection.raw_files]


def test_a_sample_is_random_reproducible_and_only_upload_done(mongo_uri: str) -> None:
    seed()
    done = {raw_file.id for raw_file in RawFile.objects(backup_status="upload_done")}
    first = sample_uploaded_raw_files(5, seed=1)
    assert first.matched == len(done) == 51
    assert len(ids(first)) == 5 and set(ids(first)) <= done
    assert ids(first) == sorted(ids(first), key=lambda i: RawFile.objects.get(id=i).created_at)  # oldest first
    assert ids(sample_uploaded_raw_files(5, seed=1)) == ids(first)
    # Every raw file can be drawn (each is as likely as any other over the random keys; with the keys fixed,
    # a raw file after a wider gap between keys is a little likelier, less so the larger the sample).
    drawn = Counter(i for seed_ in range(400) for i in ids(sample_uploaded_raw_files(5, seed=seed_)))
    assert set(drawn) == done


def test_a_sample_of_a_filter(mongo_uri: str) -> None:
    seed()
    thermo = sample_uploaded_raw_files(4, seed=3, instrument="thermo1")
    assert thermo.matched == RawFile.objects(backup_status="upload_done", instrument_id="thermo1").count()
    assert {raw_file.instrument_id for raw_file in thermo.raw_files} == {"thermo1"} and len(thermo.raw_files) == 4
    fallback = sample_uploaded_raw_files(100, project="_FALLBACK")  # no project: the fallback project's bucket
    assert {raw_file.project_id for raw_file in fallback.raw_files} == {None}
    assert len(fallback.raw_files) == fallback.matched == 5
    recent = sample_uploaded_raw_files(3, seed=2, since=(T0 + timedelta(days=50)).date())
    assert recent.matched == 9 and all(raw_file.created_at >= T0 + timedelta(days=50) for raw_file in recent.raw_files)
    assert ids(sample_uploaded_raw_files(3, raw_file_id="r001.raw")) == ["r001.raw"]


def test_raw_files_written_before_the_sample_key_get_one(mongo_uri: str) -> None:
    seed(20)
    RawFile._get_collection().update_many({}, {"$unset": {"sample_key": ""}})
    selection = sample_uploaded_raw_files(3, seed=5)
    assert len(selection.raw_files) == 3
    assert RawFile.objects(backup_status="upload_done", sample_key=None).count() == 0


def test_a_bad_sample_size_names_it(mongo_uri: str) -> None:
    with pytest.raises(ValueError, match="sample must be 1 or more raw files, got 0"):
        sample_uploaded_raw_files(0)


def test_a_lagging_metadata_count_never_widens_the_sample(mongo_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The collection's estimated count may lag behind recent writes (a sample of 1 once gave 2 raw files)."""
    from shared.db import uploaded

    seed(14)  # 12 upload_done
    exact = uploaded.count
    monkeypatch.setattr(uploaded, "count", lambda query: 1 if not query else exact(query))  # the estimate lags
    selection = sample_uploaded_raw_files(1, seed=4)
    assert (selection.matched, len(selection.raw_files)) == (12, 1)


def test_a_sample_filled_before_the_keys_wrap_round_reads_nothing_more(mongo_uri: str) -> None:
    """The window after the wrap at 1 once ran with ``limit(0)``, which MongoDB reads as no limit.

    Two raw files, a sample of one: the first window (from the seed's random point up to 1) finds one;
    the wrapped window (from 0) must not add the other (``verify --sample 1`` checked two, now and then).
    """
    import random

    seed(3)  # r001, r002 upload_done; r000 upload_failed
    low = random.Random(11).random()  # where the seed's windows start
    for raw_file_id, key in (("r001.raw", (low + 1) / 2), ("r002.raw", low / 2)):
        RawFile._get_collection().update_one({"_id": raw_file_id}, {"$set": {"sample_key": key}})
    selection = sample_uploaded_raw_files(1, seed=11)
    assert (selection.matched, ids(selection)) == (2, ["r001.raw"])
