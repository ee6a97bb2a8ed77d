"""rawvault.text_table: aligned columns, the last one free."""

from __future__ import annotations

from rawvault.text_table import table_lines


def test_columns_are_padded_to_their_widest_cell_and_the_last_is_left_free() -> None:
    lines = table_lines(("ID", "SIZE", "REASON"), [("a.raw", "1.0 GB", "kept: the S3 check failed"), ("bb", "", "")])
    assert lines == [
        "ID     SIZE    REASON",
        "a.raw  1.0 GB  kept: the S3 check failed",
        "bb",
    ]


def test_a_header_alone_is_one_line() -> None:
    assert table_lines(("RAW FILE", "DECISION"), []) == ["RAW FILE  DECISION"]
