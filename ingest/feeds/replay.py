"""Replay an export (or a spreadsheet export, through a mapping) at N× speed as a drill (演练).

``python -m ingest replay FILE [--speed 60] [--source drill] [--loop] [--dry-run]``: every time of a record maps to
``now + (t - t0) / speed`` (``--speed 0``: as fast as possible, the period placed to end now). Replayed records are
drills (docs/decisions/0003-drills-apart.md): source ``--source``, ids prefixed per run, ``"drill": true``, and
``P:live:drill`` set while it runs. A bad line is dead-lettered with file:line and the problem; the replay carries on.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import logging
import re
import secrets
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import redis

from config.city import catalog_of, get_city
from config.settings import get_settings
from core.livestate import LiveKeys
from core.records import CITY_TZ, RecordError, parse_case_event, parse_sensor_reading
from ingest.feeds import spreadsheet
from ingest.feeds.export import add_export_arguments as add_export_arguments  # `python -m ingest export` looks here
from ingest.feeds.export import main_export as main_export
from ingest.feeds.export import parse_time
from store.services import get_redis
from store.streams import Producer

log = logging.getLogger(__name__)

BATCH_WINDOW_S = 0.05  # records due within this many seconds of a batch's first record are published with it
MAX_BATCH = 5000  # records per publish at most (a replay far behind schedule publishes in chunks this size)
DEADLINE_MARGIN = timedelta(hours=23)  # the worker refuses times more than 24 h ahead of its clock
CASE_TIMES = ("occurred_at", "due_at", "accept_due_at")
SENSOR_TIMES = ("ts",)
CASE_MARKS = frozenset({"case", "cases", "case_event"})
SENSOR_MARKS = frozenset({"sensor", "sensors", "sensor_reading"})
MAX_EXTERNAL_ID = 128
MAX_DEVICE_ID = 64


class ReplayError(Exception):
    """Input the replay cannot start on (missing or unreadable file); the message says what to do."""


# --------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Line:
    """One line of an input file: a decoded JSON value, or the problem with it."""

    no: int
    record: Any = None
    raw: bytes = b""
    error: str | None = None


def _open_in(path: Path):
    if not path.exists():
        raise ReplayError(f"no such file: {path} (give a Gridwatch export, .jsonl or .jsonl.gz, "
                          "as written by `python -m ingest export`)")
    if path.is_dir():
        raise ReplayError(f"{path} is a folder, not an export file")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(2)
        return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise ReplayError(f"cannot read {path}: {exc.strerror or exc}") from None


def read_export(path: str | Path) -> Iterator[Line]:
    """The lines of an export file (plain or gzip, told by content), decoded; blank lines are left out.

    Raises :class:`ReplayError` for a missing or unreadable file (also when it breaks off mid-way).
    """
    path = Path(path)
    fh = _open_in(path)
    no = 0
    try:
        with fh:
            for no, raw in enumerate(fh, 1):  # noqa: B007 - no is used after the loop in the error message
                raw = raw.rstrip(b"\r\n")
                if no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                if not raw.strip():
                    continue
                try:
                    yield Line(no, orjson.loads(raw), raw)
                except orjson.JSONDecodeError as exc:
                    yield Line(no, None, raw, f"not valid JSON ({exc})")
    except (OSError, EOFError) as exc:
        raise ReplayError(f"cannot read {path} after line {no}: {exc}") from None


# --------------------------------------------------------------------------------------- replay


@dataclass
class ReplayReport:
    """What a replay pass did."""

    run_id: str
    source: str
    speed: float
    published: int = 0
    cases: int = 0  # case events published
    readings: int = 0  # sensor readings published
    dead: int = 0  # bad input records dead-lettered (or only counted, in a dry run), the replay carried on
    headers: int = 0  # export header lines seen
    batches: int = 0
    deadlines_dropped: int = 0  # due_at / accept_due_at too far ahead for the worker: left to the SLA calendar
    first_time: datetime | None = None  # original time of the first record
    last_time: datetime | None = None  # original time of the latest record published
    started_at: datetime | None = None  # the new time of the first record ("now")
    max_lag_s: float = 0.0  # furthest behind schedule a batch was published
    elapsed_s: float = 0.0
    stopped: bool = False  # stopped by a signal / stop_event before the end
    dry_run: bool = False
    problems: list[str] = field(default_factory=list)  # the first few dead-letter reasons


def new_run_id(now: datetime | None = None) -> str:
    """A short id unique per replay run: D + local time to the second + 4 random hex digits."""
    now = now or datetime.now(UTC)
    return f"D{now.astimezone(CITY_TZ):%y%m%d%H%M%S}{secrets.token_hex(2)}"


def _short(value: str, limit: int, prefix: str) -> str:
    out = f"{prefix}-{value}"
    if len(out) <= limit:
        return out
    return f"{prefix}-{hashlib.sha1(value.encode()).hexdigest()[:24]}"


def drill_external_id(run_id: str, source: str, external_id: str) -> str:
    """The external id a replayed case gets: unique per run, traceable to the original source and id."""
    return _short(f"{source}-{external_id}", MAX_EXTERNAL_ID, run_id)


def drill_device_id(run_id: str, device_id: str) -> str:
    """The device id a replayed reading gets (a drill device, never the real one)."""
    return _short(device_id, MAX_DEVICE_ID, run_id)


def _classify(rec: dict) -> str | None:
    """'case', 'sensor', 'header' or None (unknown shape). Removes a "kind" marker that is not a record field."""
    if "gridwatch_export" in rec:
        return "header"
    kind = rec.get("kind")
    if isinstance(kind, str) and kind in CASE_MARKS:
        del rec["kind"]
        return "case"
    if isinstance(kind, str) and kind in SENSOR_MARKS:
        del rec["kind"]
        return "sensor"
    if "device_id" in rec or kind in ("reading", "offline"):
        return "sensor"
    if "external_id" in rec or "event" in rec:
        return "case"
    return None


def _times(rec: dict, kind: str) -> tuple[dict[str, datetime], list[str]]:
    """The record's times by field, and the problems with them (the main time is required)."""
    main_field = "occurred_at" if kind == "case" else "ts"
    times: dict[str, datetime] = {}
    problems = []
    for f in CASE_TIMES if kind == "case" else SENSOR_TIMES:
        if rec.get(f) is None:
            continue
        try:
            times[f] = parse_time(rec[f])
        except ValueError as exc:
            problems.append(f"{f}: {exc}")
    if main_field not in times and not problems:
        problems.append(f"{main_field}: required field is missing")
    return times, problems


def _identity_problems(rec: dict, kind: str) -> list[str]:
    """What is missing of the record's identity: source and external id of a case event, a reading's device."""
    if kind != "case":
        return [] if isinstance(rec.get("device_id"), str) and rec.get("device_id") else [
            "device_id: required field is missing"]
    problems = []
    source = rec.get("source")
    if not isinstance(source, str) or not source:
        problems.append("source: required field is missing")
    ext = rec.get("external_id")
    if not isinstance(ext, str) or not ext:
        problems.append("external_id: required field is missing")
    return problems


class _Replayer:
    def __init__(self, producer, speed: float, now: datetime | None, stop: threading.Event, run_id: str,
                 source: str, catalog, dry_run: bool, progress_s: float, label: str):
        if speed < 0:
            raise ValueError("speed must be >= 0 (0: as fast as possible)")
        self.producer = producer
        self.speed = speed
        self.scale = 1.0 / speed if speed > 0 else 1.0  # new seconds per original second
        self.now = (now or datetime.now(UTC)).astimezone(UTC)
        self.stop = stop
        self.catalog = catalog
        self.dry_run = dry_run
        self.progress_s = progress_s
        self.label = label
        self.report = ReplayReport(run_id=run_id, source=source, speed=speed, dry_run=dry_run, started_at=self.now)
        self.t0: datetime | None = None
        self.mono0 = time.monotonic()
        self.last_progress = self.mono0
        self.sched = float("-inf")  # seconds after start the latest record is due (never goes back)
        self.batch: list[tuple[str, dict]] = []
        self.batch_due = 0.0
        self.batch_last_time: datetime | None = None

    # ---- one record ------------------------------------------------------------------------
    def map_time(self, t: datetime) -> datetime:
        return self.now + (t - self.t0) * self.scale

    def bad(self, line: Line, reason: str, kind: str | None = None) -> None:
        rep = self.report
        rep.dead += 1
        where = f"{self.label}:{line.no}" if self.label else f"record {line.no}"
        msg = f"replay {rep.run_id}, {where}: {reason}"
        if len(rep.problems) < 20:
            rep.problems.append(msg)
        log.warning("%s", msg)
        if self.producer is not None and not self.dry_run:
            raw = line.raw or (orjson.dumps(line.record, default=str) if line.record is not None else b"")
            stream = self.producer.names.sensors if kind == "sensor" else self.producer.names.cases
            self.producer.dead(raw, msg, stream=stream, source=rep.source)

    def rewrite(self, line: Line) -> tuple[str, dict, datetime] | None:
        """(kind, drill record, original time) or None when the line was dead-lettered / skipped."""
        usable = self._record(line)
        if usable is None:
            return None
        kind, rec = usable
        times, problems = _times(rec, kind)
        problems += _identity_problems(rec, kind)
        if problems:
            self.bad(line, "; ".join(problems), kind)
            return None
        main_field = "occurred_at" if kind == "case" else "ts"
        t = times[main_field]
        if self.t0 is None:
            self.t0 = t
            self.report.first_time = t
        self._as_drill(rec, kind, t)
        new_main = self._retime(rec, times, main_field)
        problems = self._problems_when_published(rec, kind, times, new_main)
        if problems:
            self.bad(line, "; ".join(problems), kind)
            return None
        return kind, rec, t

    def _record(self, line: Line) -> tuple[str, dict] | None:
        """(kind, a copy of the record) of a line that holds one; None once it is dead-lettered or counted."""
        if line.error:
            self.bad(line, line.error)
            return None
        rec = line.record
        if not isinstance(rec, dict):
            self.bad(line, f"record: expected a JSON object, got {type(rec).__name__}")
            return None
        rec = dict(rec)
        kind = _classify(rec)
        if kind == "header":
            self.report.headers += 1
            return None
        if kind is None:
            self.bad(line, "record: neither a case event (external_id, event) nor a sensor reading (device_id); "
                           'add "kind": "case" or "kind": "sensor"')
            return None
        return kind, rec

    def _as_drill(self, rec: dict, kind: str, t: datetime) -> None:
        """Give the record the drill's source and mark, and ids of this run."""
        rep = self.report
        orig_source = rec.get("source", "sensor" if kind == "sensor" else None)
        rec["source"] = rep.source
        rec["drill"] = True  # the mark every figure leaves out unless a view asks for drills
        if kind == "case":
            if not rec.get("event_id") and isinstance(rec.get("event"), str):
                # Keep the original identity: the default key is made from the time, which the replay changes.
                rec["event_id"] = f"{rec['event']}@{t.astimezone(UTC).isoformat()}"
            rec["external_id"] = drill_external_id(rep.run_id, orig_source, rec["external_id"])
        else:
            rec["device_id"] = drill_device_id(rep.run_id, rec["device_id"])

    def _retime(self, rec: dict, times: dict[str, datetime], main_field: str) -> datetime:
        """Map the record's times onto the replay's clock; returns the new main time."""
        new_main = self.map_time(times[main_field])
        for f, value in times.items():
            new = self.map_time(value)
            if f != main_field and new - new_main > DEADLINE_MARGIN:
                rec.pop(f)  # the worker would refuse it; it computes the deadline from the working calendar
                self.report.deadlines_dropped += 1
                continue
            rec[f] = new.astimezone(CITY_TZ).isoformat(timespec="microseconds")
        return new_main

    def _problems_when_published(self, rec: dict, kind: str, times: dict[str, datetime],
                                 new_main: datetime) -> list[str]:
        """Check it as the worker will see it: at the moment it is published, when its main time is "now"."""
        check = dict(rec)
        shift = datetime.now(UTC) - new_main
        for f in times:
            if f in check:
                check[f] = (self.map_time(times[f]) + shift).isoformat()
        try:
            (parse_case_event if kind == "case" else parse_sensor_reading)(check, self.catalog)
        except RecordError as exc:
            return exc.problems
        return []

    # ---- batches ---------------------------------------------------------------------------
    def add(self, kind: str, rec: dict, t: datetime) -> None:
        due = ((t - self.t0).total_seconds() * self.scale) if self.speed > 0 else 0.0
        self.sched = max(self.sched, due)
        if self.batch and (self.sched - self.batch_due > BATCH_WINDOW_S or len(self.batch) >= MAX_BATCH):
            self.flush()
        if not self.batch:
            self.batch_due = self.sched
            if self.speed > 0 and not self.dry_run:
                delay = self.mono0 + self.sched - time.monotonic()
                if delay > 0 and self.stop.wait(delay):
                    return  # stopped while waiting: this record was not due yet
        self.batch.append((kind, rec))
        self.batch_last_time = t if self.batch_last_time is None else max(self.batch_last_time, t)

    def flush(self) -> None:
        if not self.batch:
            return
        rep = self.report
        cases = [rec for kind, rec in self.batch if kind == "case"]
        readings = [rec for kind, rec in self.batch if kind == "sensor"]
        if not self.dry_run:
            if cases:
                self.producer.cases(cases)
            if readings:
                self.producer.sensors(readings)
            rep.published += len(cases) + len(readings)
            if self.speed > 0:
                rep.max_lag_s = max(rep.max_lag_s, time.monotonic() - (self.mono0 + self.batch_due))
        rep.cases += len(cases)
        rep.readings += len(readings)
        rep.batches += 1
        rep.last_time = self.batch_last_time if rep.last_time is None else max(rep.last_time, self.batch_last_time)
        self.batch = []
        self.batch_last_time = None
        mono = time.monotonic()
        if self.progress_s and mono - self.last_progress >= self.progress_s:
            self.last_progress = mono
            self.log_progress()

    def log_progress(self) -> None:
        rep = self.report
        lag = max(0.0, time.monotonic() - (self.mono0 + self.batch_due)) if self.speed > 0 else 0.0
        sim = rep.last_time.astimezone(CITY_TZ).strftime("%Y-%m-%d %H:%M:%S") if rep.last_time else "-"
        log.info("replay %s: %d published (%d case events, %d readings), %d dead-lettered; simulated time %s; "
                 "lag %.2f s", rep.run_id, rep.cases + rep.readings, rep.cases, rep.readings, rep.dead, sim, lag)

    def run(self, records: Iterable[Any]) -> ReplayReport:
        rep = self.report
        for i, item in enumerate(records, 1):
            if self.stop.is_set():
                break
            line = item if isinstance(item, Line) else Line(i, item)
            out = self.rewrite(line)
            if out is not None:
                self.add(*out)
        if self.stop.is_set():
            rep.stopped = True
        self.flush()
        rep.elapsed_s = time.monotonic() - self.mono0
        return rep


def _span(records: list[Any]) -> tuple[datetime | None, datetime | None]:
    """(first record's time, latest time) over the records' main times (occurred_at / ts)."""
    first = last = None
    for item in records:
        rec = item.record if isinstance(item, Line) else item
        if not isinstance(rec, dict):
            continue
        value = rec.get("occurred_at") or rec.get("ts")
        if value is None:
            continue
        try:
            t = parse_time(value)
        except (ValueError, TypeError):
            continue
        first = t if first is None else first
        last = t if last is None else max(last, t)
    return first, last


class DrillMark:
    """While a replay runs, ``P:live:drill`` says so (the wall shows 演练); renewed every ``RENEW_S`` with a TTL of
    ``TTL_S``, so a replay killed mid-run stops showing within ``TTL_S``. Deleted when the replay ends."""

    TTL_S = 30
    RENEW_S = 10

    def __init__(self, producer, run_id: str, source: str):
        self.producer, self.run_id, self.source = producer, run_id, source
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _key(self) -> str:
        return LiveKeys(self.producer.settings.stream_prefix).drill

    def _renew(self, value: bytes) -> None:
        while True:
            try:
                self.producer.r.set(self._key(), value, ex=self.TTL_S)
            except redis.RedisError as exc:
                log.warning("replay %s: cannot mark the drill as running: %s", self.run_id, exc)
            if self._stop.wait(self.RENEW_S):
                return

    def __enter__(self) -> DrillMark:
        if self.producer is not None:
            value = orjson.dumps({"run_id": self.run_id, "source": self.source, "since": datetime.now(UTC).isoformat()})
            self._thread = threading.Thread(target=self._renew, args=(value,), name="drill-mark", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(5)
        try:
            self.producer.r.delete(self._key())
        except redis.RedisError as exc:
            log.warning("replay %s: cannot clear the drill mark (it expires in %d s): %s", self.run_id, self.TTL_S, exc)


def replay_records(records: Iterable[Any], producer, speed: float, now: datetime | None = None,
                   stop_event: threading.Event | None = None, *, run_id: str | None = None, source: str = "drill",
                   catalog=None, dry_run: bool = False, progress_s: float = 5.0, label: str = "") -> ReplayReport:
    """Publish ``records`` (dicts, or :class:`Line` items from :func:`read_export`) as drills, re-timed.

    The first record happens at ``now`` (default: the wall clock) and the rest follow at their original
    spacing divided by ``speed`` (0: as fast as possible, times keep their original spacing and the period is
    placed so that it ends now). Records are
    published when they fall due, those due within 50 ms of each other together. Records are taken in the
    given order; one timed before its predecessor is published right after it. ``stop_event`` stops the
    replay after the current batch. ``catalog`` (``config.city.catalog_of(city)``) also checks references
    before publishing. ``dry_run`` checks and rewrites everything without publishing or waiting.
    """
    if producer is None and not dry_run:
        raise ValueError("a producer is needed unless dry_run")
    run_id = run_id or new_run_id(now)
    rp = _Replayer(producer, speed, now, stop_event or threading.Event(), run_id, source, catalog, dry_run,
                   progress_s, label)
    if speed == 0:
        # As fast as possible: keep the original spacing but place the period so that it ends now —
        # a period longer than a day would otherwise run into the future, which the worker refuses.
        records = list(records)
        first, last = _span(records)
        if first is not None:
            rp.now = rp.now - (last - first)
    log.info("replay %s: drill run%s: source rewritten to %r, external ids prefixed %r, device ids prefixed %r; "
             "the original cases are never touched; speed %s", run_id, " (dry run: nothing is published)" if dry_run
             else "", source, f"{run_id}-<source>-", f"{run_id}-", f"{speed:g}×" if speed else "as fast as possible")
    with DrillMark(None if dry_run else producer, run_id, source):
        rep = rp.run(records)
    if rep.deadlines_dropped:
        log.info("replay %s: %d deadlines more than 23 h ahead left to the SLA calendar (the worker refuses times "
                 "more than 24 h ahead)", run_id, rep.deadlines_dropped)
    span = (rep.last_time - rep.first_time).total_seconds() if rep.first_time and rep.last_time else 0.0
    log.info("replay %s: %s — %d case events, %d readings%s, %d dead-lettered, original span %.0f s, took %.1f s, "
             "max lag %.2f s", run_id, "stopped" if rep.stopped else "done", rep.cases, rep.readings,
             " checked" if dry_run else " published", rep.dead, span, rep.elapsed_s, rep.max_lag_s)
    return rep


# --------------------------------------------------------------------------------------- command line


def _speed(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not x >= 0 or x == float("inf"):
        raise argparse.ArgumentTypeError("speed must be >= 0 (0: as fast as possible)")
    return x


def _source(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:/#@+-]{0,31}", value):
        raise argparse.ArgumentTypeError(f"{value!r}: a source is 1–32 letters, digits and _.:/#@+- "
                                         "starting with a letter or digit")
    return value


def add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Play back a Gridwatch export (.jsonl or .jsonl.gz) at N× speed, re-timed so the first "
                          "record happens now. Replayed records are drills: their source becomes --source and their "
                          "ids get a per-run prefix, so they never touch the original cases. Ctrl-C stops cleanly.")
    parser.add_argument("file", help="the export to replay (written by `python -m ingest export`)")
    parser.add_argument("--speed", type=_speed, default=1.0,
                        help="original seconds per real second (default 1; 60: an hour a minute; 0: as fast as possible)")
    parser.add_argument("--source", type=_source, default="drill", help="source of the replayed records (default drill)")
    parser.add_argument("--loop", action="store_true", help="start again at the end (a new run id each pass) until stopped")
    parser.add_argument("--dry-run", action="store_true",
                        help="read, check and rewrite every record and print a summary; publish nothing")
    parser.add_argument("--progress", type=float, default=5.0, metavar="SECONDS",
                        help="seconds between progress lines (default 5; 0 for none)")
    parser.add_argument("--mapping", default=None, metavar="M.yaml",
                        help="FILE is a spreadsheet export (CSV/XLSX) read through this mapping")


def main_replay(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not getattr(args, "mapping", None):
        try:
            _open_in(path).close()  # a clear error before connecting to anything
        except ReplayError as exc:
            print(f"replay: {exc}", flush=True)
            return 2
    catalog = _catalog()
    producer = None
    if not args.dry_run:
        settings = get_settings()
        producer = Producer(get_redis(settings), settings, source=args.source)
    stop = threading.Event()
    with _stopped_by_signals(stop):
        return _passes(args, path, producer, catalog, stop)


def _catalog():
    """The city's catalog, to check references before publishing; None when the city does not load."""
    try:
        return catalog_of(get_city())
    except Exception as exc:  # noqa: BLE001 - the worker checks references anyway
        log.warning("replay: city not loaded (%s); references are checked by the worker only", exc)
        return None


@contextmanager
def _stopped_by_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` (the replay ends after the current batch) until the block ends."""

    def _stop(signum, _frame):
        log.info("replay: signal %s, stopping after the current batch", signum)
        stop.set()

    previous = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _passes(args: argparse.Namespace, path: Path, producer, catalog, stop: threading.Event) -> int:
    """Replay the file once, or with --loop until stopped; the command's exit status."""
    passes = 0
    total = 0
    try:
        while True:
            if getattr(args, "mapping", None):
                records: Iterable[Any] = spreadsheet.iter_records(path, args.mapping)
            else:
                records = read_export(path)
            rep = replay_records(records, producer, args.speed, stop_event=stop, source=args.source,
                                 catalog=catalog, dry_run=args.dry_run, progress_s=args.progress, label=str(path))
            passes += 1
            total += rep.cases + rep.readings
            if rep.cases + rep.readings == 0 and rep.dead == 0:
                print(f"replay: nothing to replay: {path} holds no records"
                      + (" (only an export header: the exported period had no cases)" if rep.headers else ""),
                      flush=True)
                return 1
            _print_pass(rep, args.speed, args.dry_run)
            if not args.loop or rep.stopped or stop.is_set() or args.dry_run:
                break
    except ReplayError as exc:
        print(f"replay: {exc}", flush=True)
        return 2
    if passes > 1:
        print(f"replay: {passes} passes, {total} records", flush=True)
    return 0


def _print_pass(rep: ReplayReport, speed: float, dry_run: bool) -> None:
    if dry_run:
        span = (rep.last_time - rep.first_time) if rep.first_time and rep.last_time else timedelta(0)
        real = span.total_seconds() / speed if speed else 0.0
        print(f"replay (dry run): {rep.cases} case events and {rep.readings} readings would be published "
              f"as source {rep.source!r}, ids prefixed {rep.run_id}-; {rep.dead} bad records; original span "
              f"{span}, about {real:.0f} s at this speed", flush=True)
    else:
        print(f"replay {rep.run_id}: {'stopped' if rep.stopped else 'done'}: {rep.published} published "
              f"({rep.cases} case events, {rep.readings} readings), {rep.dead} dead-lettered "
              f"(`python -m ingest dead`)", flush=True)
