"""Resumable multipart uploads without a server: which unfinished upload is resumed, which parts are kept."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rawvault.digests import plan_parts
from rawvault.s3.errors import LocalFileChangedError
from rawvault.s3.multipart_resume import StoredPart, layout_problem, part_digests, part_matches, resume_or_start

PART = 10
SIZE = 25  # parts of 10, 10 and 5 bytes
PLAN = plan_parts(SIZE, PART)


class FakeClient:
    """Answers the listing calls from ``uploads`` and ``parts``; records aborts and new uploads."""

    def __init__(self, uploads: list[dict[str, Any]], parts: dict[str, list[dict[str, Any]]]) -> None:
        self.uploads, self.parts = uploads, parts
        self.aborted: list[str] = []
        self.created: list[dict[str, Any]] = []

    def get_paginator(self, operation: str) -> Any:
        client = self

        class Paginator:
            def paginate(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
                if operation == "list_multipart_uploads":
                    yield {"Uploads": list(client.uploads)}
                else:
                    yield {"Parts": client.parts.get(kwargs["UploadId"], [])}

        return Paginator()

    def abort_multipart_upload(self, Bucket: str, Key: str, UploadId: str) -> None:  # noqa: N803 - boto3's names
        self.aborted.append(UploadId)

    def create_multipart_upload(self, **kwargs: Any) -> dict[str, str]:
        self.created.append(kwargs)
        return {"UploadId": "started"}


def upload(upload_id: str, initiated: str, algorithm: str | None = "SHA256", key: str = "k") -> dict[str, Any]:
    found = {"UploadId": upload_id, "Key": key, "Initiated": initiated}
    if algorithm:
        found["ChecksumAlgorithm"] = algorithm
    return found


def stored(*sizes: int) -> list[dict[str, Any]]:
    return [{"PartNumber": n, "ETag": f'"e{n}"', "Size": size} for n, size in enumerate(sizes, start=1)]


def resume(client: FakeClient, known: str | None = None) -> tuple[str, dict[int, StoredPart]]:
    recorded: list[tuple[str, str | None]] = []
    chosen = resume_or_start(
        client, "b", "k", PLAN, {}, known, lambda key, uid: recorded.append((key, uid)), lambda: None
    )  # type: ignore[arg-type]
    assert recorded == [("k", chosen[0])]  # the chosen upload id is recorded on the raw file
    return chosen


def test_the_recorded_upload_is_resumed_first_and_every_other_one_aborted() -> None:
    client = FakeClient(
        [upload("older", "1"), upload("newest", "3"), upload("recorded", "2"), upload("x", "9", key="k.other")],
        {"older": stored(10), "newest": stored(10, 10), "recorded": stored(10)},
    )
    upload_id, parts = resume(client, known="recorded")
    assert upload_id == "recorded" and list(parts) == [1]
    assert sorted(client.aborted) == ["newest", "older"] and client.created == []  # another key is left alone


def test_without_a_record_the_newest_resumable_upload_is_resumed() -> None:
    client = FakeClient([upload("older", "1"), upload("newest", "3")], {"older": stored(10), "newest": stored(10, 10)})
    assert resume(client)[0] == "newest"
    assert client.aborted == ["older"]


def test_uploads_without_sha256_checksums_are_aborted_unless_recorded() -> None:
    client = FakeClient([upload("crc", "2", "CRC32"), upload("unknown", "1", None)], {"unknown": stored(10)})
    upload_id, parts = resume(client)
    assert upload_id == "started" and parts == {}
    assert sorted(client.aborted) == ["crc", "unknown"]
    assert client.created[0]["ChecksumAlgorithm"] == "SHA256"

    recorded = FakeClient([upload("unknown", "1", None)], {"unknown": stored(10)})
    assert resume(recorded, known="unknown")[0] == "unknown"  # a server that does not say: trusted when recorded


def test_an_upload_of_another_part_layout_is_aborted_and_a_new_one_started() -> None:
    client = FakeClient([upload("other-size", "1")], {"other-size": stored(8, 8)})
    assert resume(client)[0] == "started"
    assert client.aborted == ["other-size"]


def test_layout_problems_name_the_part() -> None:
    assert layout_problem({1: StoredPart(1, "e", 10, None), 3: StoredPart(3, "e", 5, None)}, PLAN) is None
    assert "has only 3 parts" in (layout_problem({4: StoredPart(4, "e", 5, None)}, PLAN) or "")
    assert "its part 2 has 7 bytes, not 10" in (layout_problem({2: StoredPart(2, "e", 7, None)}, PLAN) or "")


@pytest.mark.parametrize(
    ("part", "kms", "keep"),
    [
        (StoredPart(1, '"md5"', 10, None), False, True),  # its ETag is the MD5 of the local part
        (StoredPart(1, '"md5"', 10, "sha"), False, True),
        (StoredPart(1, '"md5"', 10, "other"), False, False),  # a SHA-256 that differs always wins
        (StoredPart(1, '"kms"', 10, "sha"), True, True),  # SSE-KMS: the ETag is no MD5, the SHA-256 decides
        (StoredPart(1, '"kms"', 10, None), True, False),  # ... and without one nothing proves it
        (StoredPart(1, '"kms"', 10, "sha"), False, False),
    ],
)
def test_a_stored_part_is_kept_only_when_it_holds_the_local_part(part: StoredPart, kms: bool, keep: bool) -> None:
    assert part_matches(part, "md5", "sha", kms) is keep


def test_part_digests_read_only_the_part_and_notice_a_shrunk_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(bytes(range(SIZE)))
    import base64
    import hashlib

    md5, sha = part_digests(path, PLAN[1])
    assert md5 == hashlib.md5(bytes(range(10, 20))).hexdigest()
    assert sha == base64.b64encode(hashlib.sha256(bytes(range(10, 20))).digest()).decode()
    path.write_bytes(bytes(range(22)))
    with pytest.raises(LocalFileChangedError, match="the file shrank"):
        part_digests(path, PLAN[2])
