"""Plain-text tables for the command line and task logs (the purge report; drift and coverage may follow)."""

from __future__ import annotations

from collections.abc import Sequence


def table_lines(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """``header`` then ``rows``, one line each: every column but the last padded to its widest cell, two spaces apart.

    The last column is left unpadded (a free-text reason may be long), trailing spaces are stripped.
    """
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return lines
