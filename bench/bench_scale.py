"""The Backups page, the watcher, the sweeper and verify at 30,000 and 300,000 raw files (issue 18).

    .venv/bin/python bench/bench_scale.py                       # 30k and 300k, today (reference) vs now
    .venv/bin/python bench/bench_scale.py --sizes 30000 --rounds 1

Seeds realistic documents (``bench/scale_data.py``) into the MongoDB wire
server of the tests, once, in ``bench/results/scale-mongo`` (reused by later
runs and by ``bench/bench_ui_scale.py``), and times each query of the
issue's table through the project's own functions: the current working tree,
and the reference commit (``--reference``, default: where this branch left
main) extracted with ``git archive`` into ``bench/results/`` and run in a
subprocess of its own against the same data. Each query: the median of
``--rounds`` runs after a warm-up (see :func:`run_worker`). Prints both,
their ratio, and the growth 30k -> 300k. See bench/README.md for the wire
server's limits.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO_ROOT = BENCH.parent
RESULTS = BENCH / "results"
STORE = RESULTS / "scale-mongo"
DEFAULT_REFERENCE = "1aa866f"

INSTRUMENT, PROJECT, MONTH = "tims2", "P007", ("2025-03-01", "2025-03-31")
SEARCH = "20250314"  # the start of the ids of one day (date-prefixed names)
SAMPLE = 500
# Rows of the report: (name, what it times).
ROWS = [
    ("page: first page, no filter", "list"),
    ("page: counts (the chips)", "counts"),
    ("  of which: the collection's metadata count", "metadata_count"),
    ("page: one instrument: list", "instrument_list"),
    ("page: one instrument: counts", "instrument_counts"),
    ("page: one project: list", "project_list"),
    ("page: one project: counts", "project_counts"),
    ("page: backup_status=upload_failed", "failed_list"),
    ("page: search by raw file id", "search_list"),
    ("page: one month: list", "month_list"),
    ("page: one month: counts", "month_counts"),
    ("page: next page", "next_page"),
    ("page: previous page", "previous_page"),
    ("sweeper: uploads never started", "sweeper_pending"),
    ("sweeper: upload_failed", "sweeper_failed"),
    ("watcher: raw files on one share", "watcher"),
    ("verify: every upload_done id (today) / the sample (now)", "verify_select"),
    ("verify: a 500 raw file sample, every query", "verify_sample"),
]


# --- workers: run in a subprocess with sys.path on one version of the code ------------------------------


def _filters(module: Any, **fields: Any) -> Any:
    from datetime import date

    if "month" in fields:
        first, last = fields.pop("month")
        fields.update(created_from=date.fromisoformat(first), created_to=date.fromisoformat(last))
    return module.RawFileFilter(**fields)


def reference_queries(now: Any, share: list[str]) -> dict[str, Callable[[], Any]]:
    """The issue's queries through the reference commit's functions (offset paging, distinct menus)."""
    from rawvault.ui import queries
    from shared.db import interface

    stuck = timedelta(hours=6)

    def page(offset: int = 0, **fields: Any) -> Any:
        return queries.list_raw_files(_filters(queries, **fields), limit=50, offset=offset, now=now, stuck_after=stuck)

    def counts(**fields: Any) -> Any:
        return queries.count_by_backup_status(_filters(queries, **fields), now=now, stuck_after=stuck)

    ids: list[str] = []

    def verify_select() -> None:
        ids[:] = [doc.id for doc in interface.select_uploaded_raw_files().only("id")]

    def verify_fetch_one() -> None:  # one of the 500 queries of a sample (timed once, reported x500)
        interface.select_uploaded_raw_files().clone().filter(id=ids[len(ids) // 2] if ids else "x").first()

    return {
        "list": page, "counts": counts,
        "instrument_list": lambda: page(instrument=(INSTRUMENT,)),
        "instrument_counts": lambda: counts(instrument=(INSTRUMENT,)),
        "project_list": lambda: page(project=(PROJECT,)), "project_counts": lambda: counts(project=(PROJECT,)),
        "failed_list": lambda: page(backup_status=("upload_failed",)), "search_list": lambda: page(search=SEARCH),
        "month_list": lambda: page(month=MONTH), "month_counts": lambda: counts(month=MONTH),
        "next_page": lambda: page(offset=50), "previous_page": lambda: page(offset=0),
        "sweeper_pending": lambda: list(interface.uploads_pending_since(now - timedelta(hours=6))),
        "sweeper_failed": lambda: list(interface.failed_uploads()),
        "watcher": lambda: interface.list_raw_files_on_share(INSTRUMENT),
        "verify_select": verify_select, "verify_fetch": verify_fetch_one,
    }  # fmt: skip


def current_queries(now: Any, share: list[str]) -> dict[str, Callable[[], Any]]:
    """The same through the working tree's functions (cursors, settings-based menus, bounded reads)."""
    from scale_data import INSTRUMENTS, MAX_ATTEMPTS

    from rawvault.ui import queries
    from shared.db import interface
    from shared.db.backups_counts import count
    from shared.db.uploaded import sample_uploaded_raw_files

    stuck = timedelta(hours=6)
    view = queries.PageView(instruments=tuple(sorted(INSTRUMENTS)))
    since = now - interface.GIVEN_UP_NOTICE

    def page(cursor: str | None = None, **fields: Any) -> Any:
        return queries.list_raw_files(
            _filters(queries, **fields), limit=50, cursor=cursor, view=view, now=now, stuck_after=stuck
        )

    def counts(**fields: Any) -> Any:
        return queries.count_by_backup_status(_filters(queries, **fields), view=view, now=now, stuck_after=stuck)

    second = page(page().next_cursor)
    sample: list[Any] = []
    return {
        "list": page, "counts": counts,
        "instrument_list": lambda: page(instrument=(INSTRUMENT,)),
        "instrument_counts": lambda: counts(instrument=(INSTRUMENT,)),
        "project_list": lambda: page(project=(PROJECT,)), "project_counts": lambda: counts(project=(PROJECT,)),
        "failed_list": lambda: page(backup_status=("upload_failed",)), "search_list": lambda: page(search=SEARCH),
        "month_list": lambda: page(month=MONTH), "month_counts": lambda: counts(month=MONTH),
        "next_page": lambda: page(second.next_cursor), "previous_page": lambda: page(second.previous_cursor),
        # MongoDB answers it from the collection's metadata; the wire server counts its rows.
        "metadata_count": lambda: count({}),
        "sweeper_pending": lambda: interface.uploads_pending_since(
            now - timedelta(hours=6), max_attempts=MAX_ATTEMPTS, given_up_since=since
        ),
        "sweeper_failed": lambda: interface.failed_uploads(max_attempts=MAX_ATTEMPTS, given_up_since=since),
        "watcher": lambda: interface.list_raw_files_on_share(INSTRUMENT, share),
        # The selection returns the whole documents: no fetch one by one.
        "verify_select": lambda: sample.__setitem__(slice(None), sample_uploaded_raw_files(SAMPLE, seed=1).raw_files),
    }  # fmt: skip


def run_worker(kind: str, uri: str, rounds: int, rows: list[str] | None = None) -> None:
    """Time every query of one version (``sys.path`` set by the caller); print ``{row: [seconds...]}``.

    Each query of the working tree runs once untimed first; the reference's
    queries read the whole collection (tens of seconds to minutes at 300k), so
    it warms up once, with its first query, and then times ``rounds`` runs of each.
    """
    from pymongo import MongoClient
    from scale_data import INSTRUMENTS, NOW, share_names

    from shared.db import interface

    os.environ["RAWVAULT_MONGO_URI"] = uri  # the functions connect through it
    interface.connect_db(uri)
    database = MongoClient(uri).get_default_database()
    share = share_names(database, INSTRUMENT)
    table = (reference_queries if kind == "reference" else current_queries)(NOW, share)
    if rows:  # in the table's order: verify_fetch needs the ids verify_select read
        table = {name: query for name, query in table.items() if name in rows}
    assert INSTRUMENT in INSTRUMENTS
    timings: dict[str, list[float]] = {}
    next(iter(table.values()))()  # warm-up: the server's cache, the connection, the indexes on first use
    for name, query in table.items():
        if kind != "reference":
            query()
        runs = []
        for _ in range(rounds):
            started = time.perf_counter()
            query()
            runs.append(time.perf_counter() - started)
        timings[name] = runs
        print(f"  {kind} {name}: {statistics.median(runs):.3f} s", file=sys.stderr, flush=True)
    print(json.dumps(timings))


# --- the driver -----------------------------------------------------------------------------------------


def reference_source(commit: str) -> Path:
    """The reference commit's code, extracted once into bench/results/reference-<commit>."""
    target = RESULTS / f"reference-{commit}"
    if not (target / "shared").is_dir():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", commit, "shared", "airflow_src/plugins"],
                                 check=True, capture_output=True).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def seed(server_uri: str, size: int, *, reference: bool = False) -> str:
    """The URI of the database holding ``size`` seeded raw files (seeded now unless it was before).

    ``reference``: the reference's indexes are there too (the working tree dropped them if it ran before).
    """
    from pymongo import MongoClient
    from scale_data import LEGACY_INDEXES, SEED_VERSION, match_model_indexes, seed_database

    from shared.db.models import RawFile

    name = f"rawvault_scale_{size}"
    base, _, query = server_uri.partition("?")
    uri = f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
    database = MongoClient(uri).get_default_database()
    model_specs = [
        (list(spec["fields"]), {option: spec[option] for option in ("sparse", "unique") if spec.get(option)})
        for spec in RawFile._meta["index_specs"]
    ]
    if database.bench_meta.find_one({"_id": "seed", "size": size, "version": SEED_VERSION}):
        for name in match_model_indexes(database, model_specs):
            print(f"rebuilt index {name} of the {size:,} seed with the model's options", flush=True)
        for spec in LEGACY_INDEXES if reference else []:
            database.raw_file.create_index(spec, background=False)
        return uri
    database.client.drop_database(name)
    started = time.perf_counter()
    specs = model_specs + [(spec, {}) for spec in LEGACY_INDEXES]
    seed_database(database, size, specs)
    database.bench_meta.insert_one({"_id": "seed", "size": size, "version": SEED_VERSION})
    print(f"seeded {size:,} raw files and {len(specs)} indexes in {time.perf_counter() - started:.0f} s", flush=True)
    return uri


def run(kind: str, source: Path, uri: str, rounds: int, rows: list[str] | None = None) -> dict[str, list[float]]:
    """One worker subprocess on ``source``'s code; its timings (of ``rows`` only, if given)."""
    code = (
        f"import sys; sys.path[:0] = [{str(source)!r}, {str(source / 'airflow_src' / 'plugins')!r}, {str(BENCH)!r}]; "
        f"import bench_scale; bench_scale.run_worker({kind!r}, {uri!r}, {rounds}, {rows!r})"
    )
    done = subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _median(runs: list[float] | None, scale: int = 1) -> float | None:
    return statistics.median(runs) * scale if runs else None


def _row(result: dict[str, dict[str, list[float]]], key: str) -> tuple[float | None, float | None]:
    """Today's and now's median of one row (a sample: the reference fetched it one raw file per query)."""
    reference, current = result.get("reference", {}), result.get("current", {})
    if key != "verify_sample":
        return _median(reference.get(key)), _median(current.get(key))
    select, fetch = _median(reference.get("verify_select")), _median(reference.get("verify_fetch"))
    today = select + SAMPLE * fetch if select is not None and fetch is not None else None
    return today, _median(current.get("verify_select"))


def report(results: dict[int, dict[str, dict[str, list[float]]]]) -> None:
    """The table: per size today, now and their ratio, then the growth of now from the smallest size."""
    sizes = sorted(results)
    header = ["query"] + [f"{label} {size // 1000}k" for size in sizes for label in ("today", "now", "x")]
    if len(sizes) > 1:
        header.append(f"growth now {sizes[0] // 1000}k->{sizes[-1] // 1000}k")
    lines = [header]
    for title, key in ROWS:
        line = [title]
        for size in sizes:
            today, now = _row(results[size], key)
            line += [f"{today:.2f} s" if today is not None else "-", f"{now:.3f} s" if now is not None else "-"]
            line.append(f"{today / now:.0f}x" if today and now else "-")
        if len(sizes) > 1:
            first, last = _row(results[sizes[0]], key)[1], _row(results[sizes[-1]], key)[1]
            line.append(f"{last / first:.2f}x" if first and last else "-")
        lines.append(line)
    for size in sizes:
        today = sum(_median(results[size].get("reference", {}).get(k)) or 0 for k in ("list", "counts"))
        now = sum(_median(results[size].get("current", {}).get(k)) or 0 for k in ("list", "counts"))
        lines.append([f"page load (list + chips) {size // 1000}k", f"{today:.2f} s", f"{now:.3f} s",
                      f"{today / now:.0f}x" if today and now else "-"])  # fmt: skip
    widths = [max(len(str(line[i])) for line in lines if i < len(line)) for i in range(len(header))]
    for line in lines:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=False)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[30_000, 300_000])
    parser.add_argument("--rounds", type=int, default=3, help="timed runs per query (after one warm-up)")
    parser.add_argument("--reference", default=DEFAULT_REFERENCE, help="commit of today's code (default: %(default)s)")
    parser.add_argument("--reference-rounds", type=int, default=None, help="timed runs of the reference (slow)")
    parser.add_argument("--no-reference", action="store_true", help="time the working tree only")
    parser.add_argument(
        "--reference-rows",
        nargs="+",
        help="time only these queries of the reference (e.g. list "
        "counts watcher sweeper_pending verify_select verify_fetch: the rest takes an hour at 300k)",
    )
    parser.add_argument("--seed-only", action="store_true", help="seed the data sets (untimed preparation) and stop")
    parser.add_argument(
        "--only",
        choices=["reference", "current"],
        help="time one side; the other's timings are "
        "kept from bench/results/bench_scale.json (the reference takes minutes per query at 300k)",
    )
    args = parser.parse_args()
    sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "airflow_src" / "plugins"), str(BENCH)]
    from devtools.servers import MongoServer

    STORE.mkdir(parents=True, exist_ok=True)
    source = None if args.no_reference else reference_source(args.reference)
    saved = RESULTS / "bench_scale.json"
    kept = json.loads(saved.read_text()) if args.only and saved.exists() else {}
    results: dict[int, dict[str, dict[str, list[float]]]] = {}
    with MongoServer(storage_path=STORE / "data", log_path=STORE / "mongo.log") as server:
        for size in sorted(args.sizes):
            uri = seed(server.uri, size, reference=source is not None and args.only != "current")
            if args.seed_only:
                continue
            results[size] = kept.get(str(size), {}) if args.only else {}
            if source is not None and args.only != "current":  # first: the working tree drops its indexes
                print(f"{size:,}: reference {args.reference} ...", flush=True)
                results[size]["reference"] = run(
                    "reference", source, uri, args.reference_rounds or args.rounds, args.reference_rows
                )
            if args.only != "reference":
                print(f"{size:,}: working tree ...", flush=True)
                results[size]["current"] = run("current", REPO_ROOT, uri, args.rounds)
            # After each size: an interrupted run keeps the sizes it finished.
            saved.write_text(json.dumps({**kept, **{str(n): timings for n, timings in results.items()}}, indent=1))
    if results:
        report(results)


if __name__ == "__main__":
    main()
