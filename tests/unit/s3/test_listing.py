"""rawvault.s3.listing: which keys of a set a listing shows, with size and ETag; a store that cannot list: HEADs."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from rawvault.s3.errors import S3AccessDeniedError
from rawvault.s3.listing import list_keys

KEYS = ["p/run.d/a", "p/run.d/b", "p/run.d/c"]


class _Pages:
    """A stub paginator: the pages given, or the error raised on the first request."""

    def __init__(self, pages: list[list[str]] | ClientError) -> None:
        self.pages = pages
        self.asked: list[dict[str, Any]] = []
        self.served = 0

    def get_paginator(self, operation: str) -> _Pages:
        assert operation == "list_objects_v2"
        return self

    def paginate(self, **kwargs: Any) -> Any:
        self.asked.append(kwargs)
        if isinstance(self.pages, ClientError):
            raise self.pages
        for page in self.pages:
            self.served += 1
            yield {"Contents": [{"Key": key, "Size": len(key), "ETag": f'"{key[-1]}"'} for key in page]} if page else {}


def _error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "ListObjectsV2")


def test_the_keys_the_listing_shows_under_the_common_prefix() -> None:
    client = _Pages([["p/run.d/a", "p/run.d/aa"], ["p/run.d/c", "p/run.d/d"], ["p/run.d/e"]])
    assert list_keys(client, "b", KEYS) == {
        "p/run.d/a": {"ContentLength": 9, "ETag": '"a"'},  # as a HEAD names them
        "p/run.d/c": {"ContentLength": 9, "ETag": '"c"'},
    }
    assert client.asked[0]["Prefix"] == "p/run.d/" and client.served == 2  # stopped after the set's last key


def test_a_prefix_crowded_with_other_objects_is_left_to_the_heads() -> None:
    crowded = [[f"p/run.d/0-{page}-{n}" for n in range(3)] for page in range(4)]
    client = _Pages([*crowded, ["p/run.d/a"]])
    assert list_keys(client, "b", KEYS, page_size=3) is None
    assert client.served == 3  # 9 other keys listed: more than the set's 3 and a page of 3


def test_an_empty_listing_means_no_key_is_there() -> None:
    assert list_keys(_Pages([[]]), "b", KEYS) == {}


def test_one_key_is_left_to_its_head() -> None:
    client = _Pages([["p/run.d/a"]])
    assert list_keys(client, "b", KEYS[:1]) is None and client.asked == []


@pytest.mark.parametrize(("code", "status"), [("NotImplemented", 501), ("MethodNotAllowed", 405)])
def test_a_store_that_cannot_list_gets_a_head_per_key(code: str, status: int) -> None:
    assert list_keys(_Pages(_error(code, status)), "b", KEYS) is None


def test_a_refused_listing_names_the_missing_permission() -> None:
    with pytest.raises(S3AccessDeniedError, match=r"listing s3://b/p/run\.d/.*s3:ListBucket on arn:aws:s3:::b"):
        list_keys(_Pages(_error("AccessDenied", 403)), "b", KEYS)
