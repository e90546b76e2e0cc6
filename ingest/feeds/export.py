"""Export a stored period as canonical case-event records (JSON lines) for ``python -m ingest replay``.

``python -m ingest export --since ISO [--until ISO] [--area CODE] --out FILE.jsonl[.gz]``: a header line, then the
cases reported in [since, until) as records rebuilt from the store (the report carries the case's fields as stored
now; later events what the timeline keeps; every event its stored identity as ``event_id``). Case events only:
sensor readings are not stored one by one.
"""

from __future__ import annotations

import argparse
import gzip
import logging
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy.exc import OperationalError, ProgrammingError

from config.city import get_city
from core.records import CITY_TZ
from store.replay_reads import case_event_rows
from store.services import get_engine

log = logging.getLogger(__name__)

EXPORT_VERSION = 1


def iso(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(CITY_TZ).isoformat()


def parse_time(value: Any) -> datetime:
    """An export's time: ISO 8601, Asia/Shanghai when it names no zone; ValueError says what is wrong."""
    if not isinstance(value, str):
        raise ValueError("expected an ISO 8601 time")
    try:
        t = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 time") from None
    return t.replace(tzinfo=CITY_TZ) if t.tzinfo is None else t


def export_period(engine, since: datetime, until: datetime, area: str | None = None,
                  redact: bool = False) -> Iterator[dict[str, Any]]:
    """Canonical case-event records of the cases reported in [since, until) (within ``area``), in time order.

    ``redact`` leaves out personal data (reporter name and phone).

    Events are ordered by time; an event stored after a later-timed event of the same case (a late
    arrival) keeps its place after it, so every case's sequence stays the one the store applied.
    """
    if since.tzinfo is None or until.tzinfo is None:
        raise ValueError("since and until must be timezone-aware")
    for row in case_event_rows(engine, since, until, area):
        rec: dict[str, Any] = {"source": row.source, "external_id": row.external_id, "event": row.action,
                               "event_id": row.event_key, "occurred_at": iso(row.occurred_at)}
        if row.action == "report":
            rec.update(category=row.category, grade=row.grade, title=row.title, description=row.description,
                       address=row.address, reporter_name=row.reporter_name, reporter_phone=row.reporter_phone,
                       lon=row.lon, lat=row.lat, grid_code=row.grid_code, due_at=iso(row.due_at),
                       accept_due_at=iso(row.accept_due_at), flags=row.flags or None)
            if row.onsite:
                rec["onsite"] = True
            if redact:
                del rec["reporter_name"], rec["reporter_phone"]
        elif row.action == "evaluate":
            rec["rating"] = row.rating
        rec.update(actor=row.actor, departments=row.departments, note=row.note)
        yield {k: v for k, v in rec.items() if v is not None}


def _open_out(path: Path, gz: bool):
    return gzip.open(path, "wb") if gz else open(path, "wb")  # noqa: SIM115


def write_export(engine, out: str | Path, since: datetime, until: datetime, area: str | None = None,
                 progress_every: int = 10_000, redact: bool = False) -> int:
    """Write the export file (header line, then one record per line); returns the number of events.

    Writes ``out.part`` and renames it when complete, so a failed export never leaves a half file behind.
    """
    out = Path(out)
    part = out.with_name(out.name + ".part")
    header = {"gridwatch_export": EXPORT_VERSION, "since": iso(since), "until": iso(until), "area": area,
              "exported_at": iso(datetime.now(UTC).replace(microsecond=0)), "redacted": redact}
    n = 0
    cases: set[tuple[str, str]] = set()
    started = time.monotonic()
    try:
        with _open_out(part, out.name.endswith(".gz")) as fh:
            fh.write(orjson.dumps(header) + b"\n")
            for rec in export_period(engine, since, until, area, redact):
                fh.write(orjson.dumps(rec) + b"\n")
                n += 1
                if rec["event"] == "report":
                    cases.add((rec["source"], rec["external_id"]))
                if progress_every and n % progress_every == 0:
                    log.info("export: %d events of %d cases written, up to %s (%.1f s)", n, len(cases),
                             rec["occurred_at"], time.monotonic() - started)
        os.replace(part, out)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    log.info("export: done, %d events of %d cases in %s (%.1f s)", n, len(cases), out, time.monotonic() - started)
    return n


# --------------------------------------------------------------------------------------- command line


def _parse_when(value: str) -> datetime:
    try:
        return parse_time(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (e.g. 2025-03-04T08:00 or 2025-03-04T08:00:00+08:00; "
                                         "a time without a zone is Asia/Shanghai)") from None


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Write the cases reported in [--since, --until) as canonical case-event records, one JSON "
                          "object per line in time order after a header line, for `python -m ingest replay`. "
                          "Times without a zone are Asia/Shanghai.")
    parser.add_argument("--since", type=_parse_when, required=True, help="start of the period (ISO 8601), inclusive")
    parser.add_argument("--until", type=_parse_when, default=None, help="end of the period, exclusive (default: now)")
    parser.add_argument("--area", default=None, help="only cases within this area (district, street, community or "
                                                     "grid code)")
    parser.add_argument("--out", required=True, help="the file to write; a name ending in .gz is gzip-compressed")
    parser.add_argument("--progress-every", type=int, default=10_000, metavar="N",
                        help="log progress every N events (default 10000; 0 for none)")
    parser.add_argument("--redact", action="store_true",
                        help="leave out personal data (reporter name and phone) — for files that leave the center")


def main_export(args: argparse.Namespace) -> int:
    until = args.until or datetime.now(UTC)
    if args.since >= until:
        print(f"export: --since ({iso(args.since)}) must be before --until ({iso(until)})", flush=True)
        return 2
    if args.area and args.area not in get_city().geography:
        print(f"export: --area {args.area}: no such area (give a 6/9/12/15-digit district, street, community "
              "or grid code of the city)", flush=True)
        return 2
    out = Path(args.out)
    if not out.parent.exists():
        print(f"export: --out {out}: the folder {out.parent} does not exist", flush=True)
        return 2
    try:
        n = write_export(get_engine(), out, args.since, until, args.area, args.progress_every, args.redact)
    except (OperationalError, ProgrammingError) as exc:
        print(f"export: cannot read the store ({str(exc.orig).strip() or type(exc.orig).__name__}); check DATABASE_URL, "
              "and start the worker once so it creates the tables", flush=True)
        return 2
    print(f"export: {n} events written to {out}" + ("" if n else " (no cases were reported in that period)"),
          flush=True)
    return 0
