"""Which instruments' raw files a caller of the Backups page may see (no Airflow imports).

Reading a raw file is reading what its ``acquisition_handler.<instrument>``
DAG runs did, so the page asks Airflow's auth manager (through
``may_read_runs``, wired by :mod:`rawvault.ui.api`) about the runs of each
configured instrument's handler DAG, by name. The DAG ids come from the
settings, never from the request: a ``?dag_id=`` or an instrument filter a
caller sends cannot widen what it sees.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from rawvault.keys import handler_dag_id

# Asked with a DAG id: may the caller read that DAG's runs? With None: may it read the runs of every DAG?
MayReadRuns = Callable[[str | None], bool]


def readable_instruments(instrument_ids: Iterable[str], may_read_runs: MayReadRuns) -> frozenset[str] | None:
    """The instruments whose handler DAG runs the caller may read; ``None`` when it may read every DAG's runs.

    ``None`` puts no instrument condition on the queries (raw files of
    instruments no longer configured are listed too); an empty set means an
    empty page.
    """
    if may_read_runs(None):
        return None
    return frozenset(instrument for instrument in instrument_ids if may_read_runs(handler_dag_id(instrument)))


__all__ = ["MayReadRuns", "readable_instruments"]
