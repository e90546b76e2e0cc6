"""Import a CSV or XLSX export through a YAML mapping: ``python -m ingest import FILE --mapping M.yaml``.

Each row becomes the legal event sequence of one case on the bulk stream, in row order; rows that cannot be mapped
are dead-lettered with the column and the problem. Event ids are fixed per row and step, so importing the same file
again changes nothing. Why it works column-wise and in chunks: docs/decisions/0006-spreadsheet-import-column-wise.md.
"""

from __future__ import annotations

import argparse
import gc
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

from config.city import get_city
from config.settings import get_settings
from core.records import LIMITS
from ingest.feeds.spreadsheet.mapping import ID_RE, Mapping, MappingError, check_columns, load_mapping
from ingest.feeds.spreadsheet.records import context_for, map_chunk
from ingest.feeds.spreadsheet.report import ImportReport
from ingest.feeds.spreadsheet.rows import ImportFileError, read_chunks
from store.services import get_redis
from store.streams import Producer, StreamNames, dead_letter

__all__ = ["ImportFileError", "ImportReport", "Mapping", "MappingError", "add_import_arguments", "import_file",
           "iter_records", "load_mapping", "main_import", "map_rows"]

DEFAULT_CHUNK_ROWS = 50_000
DEFAULT_PROGRESS_ROWS = 100_000


def map_rows(rows: list[dict[str, Any]], mapping: Mapping, city, source: str, file_label: str,
             first_row: int = 1) -> tuple[list[bytes], list[tuple[dict, str]]]:
    """Rows as an import dead-letters them (column → text), mapped again: (events as JSON, [(row, reason)])."""
    df = pd.DataFrame([{k: "" if v is None else str(v) for k, v in row.items()} for row in rows], dtype=str)
    check_columns(mapping, list(df.columns), file_label)
    report = ImportReport(file=file_label, mapping=mapping.path, source=source, dry_run=True)
    return map_chunk(df, context_for(mapping, city, source, file_label), first_row, report, None)


def import_file(path: str | Path, mapping: Mapping | str | Path, settings=None, r=None, dry_run: bool = False, *,
                city=None, source: str | None = None, encoding: str | None = None,
                chunk_rows: int = DEFAULT_CHUNK_ROWS, progress: Callable[[ImportReport], None] | None = None,
                progress_rows: int = DEFAULT_PROGRESS_ROWS) -> ImportReport:
    """Import ``path`` (CSV or XLSX) through ``mapping`` (a Mapping or a mapping file) and return the report.

    ``dry_run`` maps and counts everything but publishes nothing (``r`` may then be None). Raises MappingError
    (the mapping does not fit the file) or ImportFileError (the file cannot be read) before publishing anything.
    """
    city = city or get_city()
    if not isinstance(mapping, Mapping):
        mapping = load_mapping(mapping, city)
    settings = settings or get_settings()
    path = Path(path)
    src = source or mapping.source.value
    if source is not None and (not re.match(ID_RE, source) or len(source) > LIMITS["source"]):
        raise MappingError([f"--source: {source!r} is not a usable source name; use letters, digits, - and _"])
    label = path.name
    chunks, enc = read_chunks(path, mapping, encoding, chunk_rows)
    report = ImportReport(file=label, mapping=mapping.path, source=src, dry_run=dry_run, encoding=enc)
    producer = None
    if not dry_run:
        if r is None:
            r = get_redis(settings)
        producer = Producer(r, settings, source=src)
    ctx = context_for(mapping, city, src, label)
    seen: set[str] = set()
    # Mapping a chunk allocates hundreds of thousands of short-lived objects and no cycles: collect the
    # young generation less often while importing (as the worker does), and restore the settings after.
    thresholds = gc.get_threshold()
    gc.set_threshold(50_000, 20, 100)
    try:
        _run(chunks, mapping, ctx, report, seen, producer, r if producer is not None else None, settings,
             progress, progress_rows)
    finally:
        gc.set_threshold(*thresholds)
    return report


def _run(chunks, mapping, ctx, report, seen, producer, r, settings, progress, progress_rows) -> None:
    label = ctx.file_label
    src = ctx.source
    if producer is not None:
        names = StreamNames.of(settings)
    t0 = time.perf_counter()
    next_progress = progress_rows
    for events, dead in _mapped_chunks(chunks, mapping, ctx, report, seen):
        if producer is not None:
            if events:
                producer.bulk(events)  # after live events: an import never holds up the wall
            if dead:
                pipe = r.pipeline(transaction=False)
                for raw, reason in dead:
                    dead_letter(pipe, names, settings, orjson.dumps(raw, default=str), reason,
                                stream=f"import:{label}"[:120], source=src)
                pipe.execute()
        report.events_published += len(events)
        report.seconds = time.perf_counter() - t0
        if progress is not None and report.rows_read >= next_progress:
            progress(report)
            next_progress = (report.rows_read // progress_rows + 1) * progress_rows
    report.seconds = time.perf_counter() - t0


def _mapped_chunks(chunks, mapping, ctx, report, seen) -> Iterator[tuple[list[bytes], list[tuple[dict, str]]]]:
    """(events, rejected rows) chunk by chunk; checks the header first and counts rows read and rejected."""
    first = True
    for chunk in chunks:
        chunk.columns = [str(c).strip() for c in chunk.columns]
        if first:
            check_columns(mapping, list(chunk.columns), ctx.file_label)
            first = False
        if not len(chunk):
            continue
        events, dead = map_chunk(chunk, ctx, report.rows_read + 1, report, seen)
        report.rows_read += len(chunk)
        report.rows_dead += len(dead)
        yield events, dead
    if first:
        raise ImportFileError("the file has no header row")


def iter_records(path: str | Path, mapping_path: str | Path, *, city=None, encoding: str | None = None) -> Iterator[dict]:
    """The canonical case events of a spreadsheet export, in time order (for replaying an export as a drill).

    Rows that cannot be mapped are left out (``import --dry-run`` lists them with reasons); a case's own events
    keep their order, since each row's steps are never earlier than the one before.
    """
    city = city or get_city()
    mapping = load_mapping(mapping_path, city)
    path = Path(path)
    chunks, _ = read_chunks(path, mapping, encoding, DEFAULT_CHUNK_ROWS)
    ctx = context_for(mapping, city, mapping.source.value, path.name)
    report = ImportReport(file=path.name, mapping=mapping.path, source=mapping.source.value, dry_run=True, encoding="")
    records = [orjson.loads(e) for events, _dead in _mapped_chunks(chunks, mapping, ctx, report, set()) for e in events]
    records.sort(key=lambda rec: rec["occurred_at"])  # stable: equal times keep row order
    return iter(records)


# --------------------------------------------------------------------------- the command line


def add_import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Import a CSV or XLSX export through a YAML mapping (config/mappings/README.md): each row "
                          "becomes one case's legal event sequence on the case stream; rows that cannot be mapped are "
                          "dead-lettered with the column and the problem. Importing the same file again changes nothing.")
    parser.add_argument("file", help="the export: .csv (any other extension is read as CSV) or .xlsx")
    parser.add_argument("--mapping", required=True, help="the YAML mapping, e.g. config/mappings/la311.yaml")
    parser.add_argument("--source", default=None, help="source name for the cases (default: the mapping's source.value)")
    parser.add_argument("--dry-run", action="store_true", help="map and count every row, publish nothing")
    parser.add_argument("--encoding", default=None,
                        help="CSV text encoding (default: UTF-8 with or without BOM if the first MiB is valid UTF-8, "
                             "else gb18030 for Chinese Excel/WPS exports)")
    parser.add_argument("--progress", type=int, default=DEFAULT_PROGRESS_ROWS, metavar="N",
                        help=f"print a progress line every N rows (default {DEFAULT_PROGRESS_ROWS:,}; 0: none)")
    parser.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS, metavar="N",
                        help=f"rows mapped and published at a time (default {DEFAULT_CHUNK_ROWS:,})")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of text")


def main_import(args: argparse.Namespace) -> int:
    def progress(rep: ImportReport) -> None:
        rate = rep.rows_read / rep.seconds if rep.seconds else 0.0
        print(f"… {rep.rows_read:,} rows read, {rep.rows_published:,} published, {rep.rows_dead:,} dead-lettered "
              f"({rate:,.0f} rows/s)", file=sys.stderr, flush=True)

    try:
        rep = import_file(args.file, args.mapping, get_settings(), None, dry_run=args.dry_run, source=args.source,
                          encoding=args.encoding, chunk_rows=max(1, args.chunk_rows),
                          progress=progress if args.progress > 0 else None, progress_rows=max(1, args.progress))
    except MappingError as exc:
        print("The mapping cannot be used:", *exc.problems, sep="\n  ", file=sys.stderr)
        return 2
    except ImportFileError as exc:
        print(f"Cannot import {args.file}: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "json", False):
        print(orjson.dumps(rep.as_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(rep)
    return 0
