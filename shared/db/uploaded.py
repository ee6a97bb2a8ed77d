"""verify's selection of ``upload_done`` raw files: how many match, and a random sample, never every id.

The sample: every raw file has a random ``sample_key`` in [0, 1) (given at
insert; documents older than the key get one on the first sample). The keys
order the raw files at random, so the first N keys from a random point
(wrapping round at 1) are a random set of N in which, over the keys' own
randomness, every raw file is equally likely (for keys already given, one
after a wider gap between keys is a little likelier, less so the larger N;
the same ``seed`` gives the same set while the keys stay). They are read through
the ``(backup_status, sample_key)`` index in key windows sized for N (about
twice N keys), so a sample reads about 2N index entries whatever the size of
the collection. A filtered selection of at most :data:`SMALL_SELECTION` raw
files is sampled from its ids instead (read through the filter's own index):
key windows would pass over many raw files of other instruments or projects
to find its few.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Unpack

from shared.db.backups_counts import count
from shared.db.interface import connect_db
from shared.db.models import BackupStatus, RawFile
from shared.db.uploaded_filter import UploadedFilters, uploaded_query

UPLOAD_DONE = BackupStatus.UPLOAD_DONE.value
SMALL_SELECTION = 5000
WINDOW_MARGIN = 2.0  # keys per window: this many times what the sample still needs
_ID_BATCH = 500


@dataclass
class UploadedSample:
    """How many raw files matched the filters, and the ones chosen (oldest first)."""

    matched: int
    raw_files: list[RawFile] = field(default_factory=list)


def count_uploaded(query: dict[str, Any]) -> int:
    """How many raw files ``query`` (of :func:`uploaded_query`) matches; all of them: total minus the others."""
    if set(query) != {"backup_status"}:
        return count(query)
    total = count({})  # MongoDB's metadata count: an estimate, which may lag behind recent writes
    if total <= SMALL_SELECTION:
        return count(query)  # a small collection: the exact count is cheap (the estimate failed a sample of 1)
    others = [status.value for status in BackupStatus if status.value != UPLOAD_DONE]
    return max(0, total - count({"backup_status": {"$in": [None, *others]}}))


def _assign_missing_sample_keys() -> None:
    """Give ``upload_done`` raw files written before ``sample_key`` existed theirs (a no-op once done)."""
    RawFile._get_collection().update_many(
        {"backup_status": UPLOAD_DONE, "sample_key": None}, [{"$set": {"sample_key": {"$rand": {}}}}]
    )


def _by_ids(raw_file_ids: list[str]) -> list[RawFile]:
    found: list[RawFile] = []
    for start in range(0, len(raw_file_ids), _ID_BATCH):
        found += RawFile.objects(id__in=raw_file_ids[start : start + _ID_BATCH])
    return found


def _by_keys(query: dict[str, Any], sample: int, matched: int, rng: random.Random) -> list[RawFile]:
    """The ``sample`` raw files whose keys follow a random point, in windows of about twice what is missing."""
    found: list[RawFile] = []
    low, covered = rng.random(), 0.0
    width = min(1.0, WINDOW_MARGIN * sample / max(matched, 1))
    while len(found) < sample and covered < 1.0:
        width = min(width, 1.0 - covered)
        high = low + width
        for start, end in [(low, min(high, 1.0)), (0.0, high - 1.0)] if high > 1.0 else [(low, high)]:
            if len(found) >= sample:
                break  # never a query with limit(0): MongoDB reads that as "no limit"
            window = {**query, "sample_key": {"$gte": start, "$lt": end}}
            found += RawFile.objects(__raw__=window).order_by("sample_key").limit(sample - len(found))
        low, covered, width = high % 1.0, covered + width, width * 2
    return found


def sample_uploaded_raw_files(
    sample: int, *, seed: int | None = None, **filters: Unpack[UploadedFilters]
) -> UploadedSample:
    """``sample`` raw files chosen at random among the ``upload_done`` ones matching the filters, and how many match.

    ``seed`` makes the choice reproducible (for the same keys). The documents
    are whole (verify checks their ``file_info``), oldest first.
    """
    if sample < 1:
        raise ValueError(f"sample must be 1 or more raw files, got {sample}")
    connect_db()
    _assign_missing_sample_keys()
    query = uploaded_query(**filters)
    matched = count_uploaded(query)
    rng = random.Random(seed)  # noqa: S311 - choosing a sample to audit, not a secret
    if sample >= matched:  # bounded all the same: an estimated count may be low
        chosen = list(RawFile.objects(__raw__=query).limit(sample))
    elif set(query) != {"backup_status"} and matched <= SMALL_SELECTION:
        ids = sorted(str(row["_id"]) for row in RawFile._get_collection().find(query, {"_id": 1}))
        chosen = _by_ids(rng.sample(ids, sample))
    else:
        chosen = _by_keys(query, sample, matched, rng)
    return UploadedSample(matched, sorted(chosen, key=lambda raw_file: (raw_file.created_at, raw_file.id)))


__all__ = ["SMALL_SELECTION", "UploadedSample", "count_uploaded", "sample_uploaded_raw_files", "uploaded_query"]
