"""The worker: reads the streams as one consumer of the group, applies batches, acknowledges.

For each batch: decode and validate every entry, apply the valid ones to SQL in one
transaction (cases, timeline, devices, alarms), then move the live state in Redis, then XACK.
What cannot be applied goes to the dead-letter stream with the reason — the worker never
crashes on input. A crash anywhere before XACK leaves the entries pending; this or another
worker reclaims them (XAUTOCLAIM) and applies them again, which changes nothing twice:
events are unique per case, and the live state moves by difference.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import redis
from sqlalchemy import bindparam, delete, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DisconnectionError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLTimeoutError

from config.city import catalog_of
from config.settings import Settings, get_settings
from core import assignments, lifecycle, ordering
from core.geography import usable_point
from core.lifecycle import Action, Status, TransitionError
from core.livestate import LiveKeys, drill_prefix, encode_case_state
from core.records import CaseEvent as CaseRecord
from core.records import SensorReading, parse_json_entry
from ingest.heartbeat import Heartbeat
from store.live import LiveWriter
from store.schema import Case, CaseAssignment, CaseEvent, Device, HeldEvent, SensorAlarm, UTCDateTime, to_db_time
from store.streams import StreamNames, consumer_name, dead_letter, ensure_groups, entry_source

log = logging.getLogger(__name__)

MAX_CONSECUTIVE_ERRORS = 10

# Failures of the parts, not of an entry: the batch stays pending and is retried before anything newer is read.
# IntegrityError is one too when two writers race for the same row: the retry finds the other's row.
TRANSIENT = (OperationalError, InterfaceError, DisconnectionError, SQLTimeoutError, redis.RedisError, OSError)


@dataclass
class BatchResult:
    applied: int = 0
    duplicates: int = 0
    dead: int = 0
    held: int = 0  # events waiting for their case or predecessors (core/ordering.py) after this batch
    cases_touched: int = 0
    readings: int = 0
    alarms_opened: int = 0
    alarms_cleared: int = 0
    devices_offline: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, other: BatchResult) -> None:
        """Add another batch's counts to these."""
        for f in dataclasses.fields(self):
            mine = getattr(self, f.name)
            if isinstance(mine, int):
                setattr(self, f.name, mine + getattr(other, f.name))


_MUTABLE = (
    "category", "grade", "lon", "lat", "street_code", "community_code", "grid_code", "located", "status",
    "departments", "onsite", "overdue", "rating", "flags", "due_at", "accept_due_at", "suspended_at", "warned",
    "escalated", "due_provisional", "accepted_at", "resolved_at", "closed_at", "dispatched_at", "evaluated_at",
    "updated_at",
)


@dataclass
class SensorBatch:
    last: dict[str, dict]  # device → last reading (live state)
    alarm_changes: list[tuple[str, str | None, dict | None]]  # (device, grid, alarm or None when cleared)
    alarm_cases: list[tuple[Any, CaseRecord]]  # a report per opened alarm, in the order of ``opened``
    new_devices: list[dict]
    opened: list[dict]
    cleared: list[tuple[str, datetime, str]]  # (device, when, alarm kind)
    registering: dict[str, tuple[str, str | None]]
    offline_changes: list[tuple[str, str | None, dict | None]]  # like alarm_changes, for silent devices
    offline_opened: list[dict]
    drills: set[str] = field(default_factory=set)  # a replay's devices: their live state is kept apart

    @property
    def needs_sql(self) -> bool:
        return bool(self.new_devices or self.opened or self.cleared or self.offline_opened)


class FastWriter:
    """Plain DB-API executemany for the worker's two hot statements (timeline insert, case update).

    SQLAlchemy's generic per-row parameter processing costs more than the database work itself at
    10,000 events/s; here each value is converted once, by the same column types' own rules
    (``to_db_time`` — the rule ``UTCDateTime`` applies — for times, JSON text for lists). Everything else goes through SQLAlchemy.
    """

    def __init__(self, dialect_name: str):
        self.dialect = dialect_name
        self.mark = "?" if dialect_name == "sqlite" else "%s"

    def _value(self, value):
        t = type(value)
        if t is datetime:
            return to_db_time(value, self.dialect)
        if t is list or t is dict:
            return orjson.dumps(value).decode()
        return value

    def time(self, value: datetime | None):
        return to_db_time(value, self.dialect)

    def insert(self, conn: Connection, table, columns: Sequence[str], rows: Sequence[Sequence[Any]],
               converted: bool = False) -> None:
        """INSERT many rows; ``converted`` rows already hold database values (see ``time``)."""
        if not rows:
            return
        sql = (f"INSERT INTO {table.name} ({', '.join(columns)}) "
               f"VALUES ({', '.join([self.mark] * len(columns))})")
        if not converted:
            v = self._value
            rows = [tuple(v(x) for x in row) for row in rows]
        conn.exec_driver_sql(sql, rows)

    def select_cases(self, conn: Connection, keys: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
        """Whole case rows for (source, external id) keys, as Python values.

        One ``source = ? AND external_id IN (...)`` per source and chunk: a search of the unique index on
        SQLite and PostgreSQL alike, where a row-value ``IN (VALUES ...)`` scans the whole index on SQLite.
        """
        out = []
        names = _CASE_ALL
        sqlite_ = self.dialect == "sqlite"
        by_source: dict[str, list[str]] = defaultdict(list)
        for source, external_id in keys:
            by_source[source].append(external_id)
        for sql, params in self.case_lookups(by_source):
            for row in conn.exec_driver_sql(sql, params):
                case = dict(zip(names, row, strict=True))
                if sqlite_:
                    _from_sqlite(case, _CASE_TIMES, _CASE_BOOLS)
                    case["departments"] = orjson.loads(case["departments"]) if case["departments"] else []
                    case["flags"] = orjson.loads(case["flags"]) if case["flags"] else None
                else:
                    case["departments"] = case["departments"] or []
                out.append(case)
        return out

    def case_lookups(self, by_source: dict[str, Sequence[str]]) -> list[tuple[str, tuple]]:
        """The statements ``select_cases`` issues, with their parameters, for external ids grouped by source."""
        out = []
        m = self.mark
        for source, ids in by_source.items():
            for i in range(0, len(ids), _CHUNK):
                chunk = ids[i : i + _CHUNK]
                out.append((f"SELECT {', '.join(_CASE_ALL)} FROM cases WHERE source = {m} AND external_id IN "
                            f"({', '.join([m] * len(chunk))})", (source, *chunk)))
        return out

    def event_lookups(self, case_ids: Sequence[int]) -> list[tuple[str, tuple]]:
        """Statements for the (case id, event key) pairs of these cases: a search of the unique index per case.

        By case id alone: ``AND event_key IN (...)`` as well would search every (case, key) pair of the batch,
        as many as cases × distinct keys; a case holds a few events, all read from the index alone.
        """
        m = self.mark
        return [(f"SELECT case_id, event_key FROM case_events WHERE case_id IN ({', '.join([m] * len(chunk))})",
                 tuple(chunk)) for chunk in (case_ids[i : i + _CHUNK] for i in range(0, len(case_ids), _CHUNK))]

    def insert_returning(self, conn: Connection, table, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                         returning: Sequence[str]) -> list[tuple]:
        """INSERT rows with ``RETURNING`` (SQLite ≥ 3.35, PostgreSQL): the returned columns of every new row, in
        no particular order. PostgreSQL: psycopg's pipelined executemany; SQLite: multi-row statements."""
        out: list[tuple] = []
        if not rows:
            return out
        v = self._value
        one = f"({', '.join([self.mark] * len(columns))})"
        head = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES "
        tail = f" RETURNING {', '.join(returning)}"
        if self.dialect == "postgresql":
            cur = conn.connection.driver_connection.cursor()  # the transaction's own connection
            cur.executemany(head + one + tail, [tuple(v(x) for x in row) for row in rows], returning=True)
            while True:
                out.extend(cur.fetchall())
                if not cur.nextset():
                    return out
        per = max(1, 16_000 // len(columns))  # well under SQLite's limit of bound parameters
        for i in range(0, len(rows), per):
            chunk = rows[i : i + per]
            out.extend(tuple(r) for r in conn.exec_driver_sql(head + ", ".join([one] * len(chunk)) + tail,
                                                              tuple(v(x) for row in chunk for x in row)))
        return out

    def select_assignments(self, conn: Connection, case_ids: Sequence[int]) -> list[dict[str, Any]]:
        """The assignment rows of these cases (oldest first), as Python values."""
        out = []
        names = _ASSIGN_ALL
        sqlite_ = self.dialect == "sqlite"
        for i in range(0, len(case_ids), 400):
            chunk = case_ids[i : i + 400]
            sql = (f"SELECT {', '.join(names)} FROM case_assignments WHERE case_id IN "
                   f"({', '.join([self.mark] * len(chunk))}) ORDER BY id")
            for row in conn.exec_driver_sql(sql, tuple(chunk)):
                a = dict(zip(names, row, strict=True))
                if sqlite_:
                    _from_sqlite(a, _ASSIGN_TIMES, _ASSIGN_BOOLS)
                out.append(a)
        return out

    def update_by_id(self, conn: Connection, table, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """rows: values for ``columns`` followed by the id."""
        if not rows:
            return
        sets = ", ".join(f"{c} = {self.mark}" for c in columns)
        v = self._value
        conn.exec_driver_sql(f"UPDATE {table.name} SET {sets} WHERE id = {self.mark}",
                             [tuple(v(x) for x in row) for row in rows])


_CHUNK = 400  # keys per lookup statement
_CASE_ALL = tuple(c.name for c in Case.__table__.columns)
_CASE_COLUMNS = tuple(c for c in _CASE_ALL if c != "id")
_CASE_TIMES = tuple(c.name for c in Case.__table__.columns if isinstance(c.type, UTCDateTime))
_CASE_BOOLS = tuple(c.name for c in Case.__table__.columns if c.type.python_type is bool)
_ASSIGN_ALL = ("id", *assignments.COLUMNS)
_ASSIGN_TIMES = tuple(c.name for c in CaseAssignment.__table__.columns if isinstance(c.type, UTCDateTime))
_ASSIGN_BOOLS = tuple(c.name for c in CaseAssignment.__table__.columns if c.type.python_type is bool and c.name in _ASSIGN_ALL)


def _from_sqlite(row: dict[str, Any], times: Sequence[str], bools: Sequence[str]) -> None:
    """SQLite's fixed-width UTC text times and 0/1 booleans as Python values, in place (NULL stays None)."""
    for c in times:
        v = row[c]
        if v is not None:
            row[c] = datetime.fromisoformat(v).replace(tzinfo=UTC)
    for c in bools:
        v = row[c]
        if v is not None:
            row[c] = bool(v)
_EVENT_COLUMNS = ("case_id", "event_key", "action", "source", "occurred_at", "received_at", "status_before",
                  "status_after", "actor", "departments", "note", "rating", "due_at")


def _ts(reading: SensorReading) -> datetime:
    return reading.ts


def _item(entry_raw: bytes | None, key) -> bytes | None:
    """The bytes a feed sent for one record of an entry (the entry itself when it held one record)."""
    if entry_raw is None or key is None:
        return None
    if entry_raw.lstrip()[:1] != b"[":
        return entry_raw
    try:
        return orjson.dumps(orjson.loads(entry_raw)[key[1]])
    except (orjson.JSONDecodeError, IndexError, TypeError):
        return None


@dataclass(frozen=True)
class Held:
    """Where a held event (store.schema.HeldEvent) came from: its row, stream entry and the feed's bytes."""

    id: int
    stream: str
    entry_id: str
    position: int
    feed: str
    raw: str
    held_at: datetime


def _place(item: tuple[Any, CaseRecord]) -> tuple[int, int, int]:
    """An item's place in stream order: a held event's original entry, a fresh one's (entry id, index)."""
    key = item[0]
    if isinstance(key, Held):
        return ordering.entry_order(key.entry_id, key.position)
    if key is None:
        return ordering.entry_order(None)
    return ordering.entry_order(key[0], key[1])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _insert(conn: Connection, table):
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


class Applier:
    """Applies validated records to SQL and the live state. Used by the worker and by tests directly."""

    def __init__(self, city, settings: Settings, engine: Engine, r: redis.Redis):
        from config.calendar import get_calendar

        self.city = city
        self.settings = settings
        self.engine = engine
        self.r = r
        self.catalog = catalog_of(city)
        self.calendar = get_calendar(settings.holidays_file)
        self.district = city.county_code
        self.keys = LiveKeys(settings.stream_prefix)
        self.live = LiveWriter(r, settings.stream_prefix, self.district)
        # A drill's cases, alarms and devices have a live state of their own: every live figure stays the city's.
        self.drill_keys = LiveKeys(drill_prefix(settings.stream_prefix))
        self.drill_live = LiveWriter(r, drill_prefix(settings.stream_prefix), self.district)
        self.fast = FastWriter(engine.dialect.name)
        self.whistle_limit = timedelta(minutes=settings.whistle_report_minutes)
        self.registry: dict[str, tuple[str, str | None]] = {}  # device → (type, grid); set once, at registration

    # ---- locations -------------------------------------------------------------------------
    def locate_many(self, records) -> list[str | None]:
        """Grid codes for many records at once (given grid code first, then point-in-polygon)."""
        out: list[str | None] = [None] * len(records)
        todo = []
        for i, rec in enumerate(records):
            if rec.grid_code:
                out[i] = rec.grid_code
            elif rec.lon is not None and rec.lat is not None and usable_point(rec.lon, rec.lat):
                todo.append(i)
        if todo:
            found = self.city.geography.locate_many([records[i].lon for i in todo], [records[i].lat for i in todo])
            for i, grid in zip(todo, found, strict=True):
                out[i] = grid
        return out

    # ---- cases -------------------------------------------------------------------------------
    def _new_case(self, ev: CaseRecord, now: datetime, grid: str | None) -> dict[str, Any]:
        cat = self.city.categories[ev.category]
        provisional = False
        accept_due = ev.accept_due_at
        due = ev.due_at
        if accept_due is None and cat.accept_limit is not None:
            d = self.calendar.add(ev.occurred_at, cat.accept_limit)
            accept_due, provisional = d.due, provisional or d.provisional
        if due is None and cat.complete_limit is not None:
            d = self.calendar.add(ev.occurred_at, cat.complete_limit)
            due, provisional = d.due, provisional or d.provisional
        return {
            "id": None,
            "source": ev.source,
            "external_id": ev.external_id,
            "category": ev.category,
            "grade": ev.grade or cat.default_grade,
            "title": ev.title,
            "description": ev.description,
            "address": ev.address,
            "reporter_name": ev.reporter_name,
            "reporter_phone": ev.reporter_phone,
            "lon": ev.lon,
            "lat": ev.lat,
            "district_code": self.district,
            "street_code": grid[:9] if grid else None,
            "community_code": grid[:12] if grid else None,
            "grid_code": grid,
            "located": grid is not None,
            "status": None,
            "departments": list(ev.departments or []),
            "onsite": bool(ev.onsite),
            "overdue": False,
            "due_provisional": provisional,
            "suspended_at": None,
            "warned": False,
            "escalated": False,
            "rating": None,
            "flags": sorted(set(ev.flags)) if ev.flags else None,
            "drill": bool(ev.drill),
            "reported_at": ev.occurred_at,
            "accept_due_at": accept_due,
            "due_at": due,
            "accepted_at": None,
            "resolved_at": None,
            "closed_at": None,
            "dispatched_at": None,
            "evaluated_at": None,
            "updated_at": now,
            "created_at": now,
        }

    def _change(self, case: dict[str, Any], ev: CaseRecord, target: Status) -> None:
        """Fields an event changes besides the status."""
        a = ev.event
        if a in (Action.DISPATCH, Action.WHISTLE):  # the first dispatch: the earliest, whatever the arrival order
            first = case.get("dispatched_at")
            case["dispatched_at"] = ev.occurred_at if first is None else min(first, ev.occurred_at)
        elif a is Action.EVALUATE:
            first = case.get("evaluated_at")
            case["evaluated_at"] = ev.occurred_at if first is None else min(first, ev.occurred_at)
        if a is Action.DISPATCH:
            case["departments"] = list(dict.fromkeys(ev.departments or []))
        elif a is Action.WHISTLE:
            case["departments"] = list(dict.fromkeys([*case["departments"], *(ev.departments or [])]))
        elif a is Action.RETURN:
            case["departments"] = []
        elif a is Action.ACCEPT:
            case["accepted_at"] = ev.occurred_at
        elif a in (Action.RESOLVE, Action.ONSITE):
            case["resolved_at"] = ev.occurred_at
            case["onsite"] = case["onsite"] or a is Action.ONSITE
        elif a is Action.CLOSE:
            case["closed_at"] = ev.occurred_at
        elif a is Action.EVALUATE:
            case["rating"] = ev.rating
        elif a is Action.REOPEN:
            case["resolved_at"] = case["closed_at"] = None
            case["rating"] = None
        elif a is Action.OVERDUE:
            case["overdue"] = target in lifecycle.OPEN_STATUSES
        elif a is Action.WARNING:
            case["warned"] = True
        elif a is Action.ESCALATE:
            case["escalated"] = True
        elif a is Action.EXTEND:  # an approved new deadline: the clock's marks start over
            case.update(due_at=ev.due_at, due_provisional=False, overdue=ev.due_at <= ev.occurred_at, warned=False,
                        escalated=False)
        elif a is Action.SUSPEND:
            if case["suspended_at"] is None:
                case["suspended_at"] = ev.occurred_at
        elif a is Action.RESUME:
            stopped = case["suspended_at"]
            if stopped is not None:  # the deadlines move by the time the clock stood still
                held = max(ev.occurred_at - stopped, timedelta(0))
                for f in ("due_at", "accept_due_at"):
                    if case[f] is not None:
                        case[f] = case[f] + held
                case["suspended_at"] = None
                case["overdue"] = case["due_at"] is not None and case["due_at"] <= ev.occurred_at
        if a is not Action.REPORT and ev.flags:
            case["flags"] = sorted(set(case.get("flags") or []) | set(ev.flags))
        if a is not Action.REPORT:
            # Corrections any event may carry: regrading, reclassifying, relocating, a source's new deadline.
            if ev.grade is not None:
                case["grade"] = ev.grade
            if ev.category is not None:
                case["category"] = ev.category
            if ev.due_at is not None and a is not Action.EXTEND:
                case["due_at"] = ev.due_at
            if ev.lon is not None or ev.grid_code is not None:
                grid = self.locate_many([ev])[0]
                case.update(lon=ev.lon, lat=ev.lat, grid_code=grid, street_code=grid and grid[:9],
                            community_code=grid and grid[:12], located=grid is not None)
        if (case["due_at"] is not None and target in lifecycle.OPEN_STATUSES and case["suspended_at"] is None
                and case["due_at"] <= ev.occurred_at):
            case["overdue"] = True

    def apply_cases(
        self, conn: Connection, items: Sequence[tuple[Any, CaseRecord]], result: BatchResult, dead: list, *,
        origins: dict[Any, tuple[str, str, bytes | None]] | None = None,
        pending_before: Callable[[str], str | None] | None = None,
        also: Sequence[tuple[str, str]] = (), sweep: bool = False,
    ) -> dict[int, dict[str, Any]]:
        """Apply case events (in stream order) inside ``conn``'s transaction. Returns touched cases by id.

        Events held earlier for the cases named (and for ``also``) are retried with them, in stream order. An event
        the lifecycle refuses waits as a held event or is dead-lettered, by core/ordering.py: ``origins`` (fresh
        item key → stream, feed, the entry's raw bytes) says where a fresh event came from, ``pending_before(stream)``
        gives the oldest entry another consumer still holds there. Held events are dead-lettered only by the
        ``sweep``, which writes those dead letters before it commits; a batch only holds or applies them.
        """
        now = datetime.now(UTC)
        keys = list({(ev.source, ev.external_id) for _, ev in items} | set(also))
        held = self._load_held(conn, keys)
        if held:
            items = sorted([*items, *held], key=_place)
        cases: dict[tuple[str, str], dict[str, Any]] = {}
        fast = self.fast if conn.dialect.name == self.fast.dialect else FastWriter(conn.dialect.name)
        for row in fast.select_cases(conn, keys):
            cases[(row["source"], row["external_id"])] = row
        seen: set[tuple[int, str]] = set()
        ids = [c["id"] for c in cases.values()]
        event_keys = {ev.key for _, ev in items}
        for sql, params in fast.event_lookups(ids):
            seen.update((r[0], r[1]) for r in conn.exec_driver_sql(sql, params) if r[1] in event_keys)

        now_db = self.fast.time(now)
        to_db = self.fast.time
        reports = [ev for _, ev in items if ev.event is Action.REPORT]
        report_grids = {id(ev): g for ev, g in zip(reports, self.locate_many(reports), strict=True)}
        new_keys: list[tuple[str, str]] = []
        modified: set[tuple[str, str]] = set()  # existing cases that an applied event changed
        dirty: set[tuple[str, str]] = set()  # every case the batch names: its live state is re-asserted
        events: list[tuple[tuple[str, str], tuple]] = []
        applied_keys: set[tuple[tuple[str, str], str]] = set()
        assigning: list[tuple[tuple[str, str], CaseRecord]] = []  # applied events that change assignment rows
        waiting: dict[tuple[str, str], list[tuple[Any, CaseRecord, TransitionError]]] = defaultdict(list)
        done_held: list[int] = []  # held rows applied, found applied already, or dead-lettered
        hold = timedelta(seconds=self.settings.hold_seconds)
        oldest: dict[str, str | None] = {}

        def older_pending(key) -> bool:
            if pending_before is None:
                return False
            if isinstance(key, Held):
                stream, entry = key.stream, key.entry_id
            elif origins is not None and key in origins:
                stream, entry = origins[key][0], key[0]
            else:
                return False
            if stream not in oldest:
                oldest[stream] = pending_before(stream)
            return ordering.older(oldest[stream], entry)

        def step(ev: CaseRecord) -> TransitionError | None:
            """Apply one event; None when it applied (or had been applied), else the lifecycle's refusal."""
            ck = (ev.source, ev.external_id)
            key = ev.key
            case = cases.get(ck)
            if case is not None and ((case["id"], key) in seen or (ck, key) in applied_keys):
                result.duplicates += 1
                dirty.add(ck)  # a crash may have come between SQL and Redis: re-assert the live state
                return None
            status = case["status"] if case is not None else None
            try:
                outcome = lifecycle.apply(status, ev.event)
            except TransitionError as exc:
                return exc
            if case is None:
                case = self._new_case(ev, now, report_grids.get(id(ev)))
                cases[ck] = case
                new_keys.append(ck)
            elif case["id"] is not None:
                modified.add(ck)
            after = outcome.status.value
            due_before = case["due_at"]
            self._change(case, ev, outcome.status)
            # the deadline this event set or moved (report: the first; extend, resume, a correction: the new one)
            due_set = case["due_at"] if ev.event is Action.REPORT or case["due_at"] != due_before else None
            case["status"] = after
            case["updated_at"] = now
            dirty.add(ck)
            applied_keys.add((ck, key))
            # the columns of _EVENT_COLUMNS after case_id
            events.append((ck, (key, ev.event.value, ev.source, to_db(ev.occurred_at), now_db, status, after, ev.actor,
                                orjson.dumps(ev.departments).decode() if ev.departments is not None else None, ev.note,
                                ev.rating, to_db(due_set))))
            result.applied += 1
            if ev.event.value in assignments.ACTIONS:
                assigning.append((ck, ev))
            return None

        def retry(ck: tuple[str, str]) -> None:
            """The case moved: its waiting events, oldest first, until none applies."""
            line = waiting.get(ck)
            while line:
                for i, (key, ev, _exc) in enumerate(line):
                    if step(ev) is None:
                        del line[i]
                        if isinstance(key, Held):
                            done_held.append(key.id)
                        break
                else:
                    return

        for key, ev in items:
            ck = (ev.source, ev.external_id)
            refused = step(ev)
            if refused is None:
                if isinstance(key, Held):
                    done_held.append(key.id)
                retry(ck)
                continue
            is_held = isinstance(key, Held)
            v = ordering.verdict(case_exists=ck in cases, older_pending=older_pending(key),
                                 earlier_waiting=bool(waiting.get(ck)), held_since=key.held_at if is_held else None,
                                 now=now, hold=hold)
            if v is ordering.Verdict.DEAD and (sweep or not is_held):
                note = f" (held {int((now - key.held_at).total_seconds())} s for its predecessors)" if is_held else ""
                dead.append((key, ev.model_dump(mode="json"),
                             f"lifecycle: {refused.reason} (case {ev.source}/{ev.external_id}){note}", ev.source))
                if is_held:
                    done_held.append(key.id)
            else:
                waiting[ck].append((key, ev, refused))

        holding = []
        for line in waiting.values():
            for key, ev, exc in line:
                result.held += 1
                if isinstance(key, Held):
                    continue
                stream, feed, entry_raw = origins[key] if origins and key in origins else (self.keys.prefix, ev.source, None)
                raw = _item(entry_raw, key) or orjson.dumps(ev.model_dump(mode="json"))
                holding.append({"source": ev.source, "external_id": ev.external_id, "event_key": ev.key,
                                "stream": stream, "entry_id": _text(key[0]) if key else "0-0",
                                "position": key[1] if key else 0, "record": ev.model_dump_json(),
                                "raw": raw.decode("utf-8", "replace"), "feed": feed, "reason": exc.reason,
                                "held_at": now})
        if holding:
            conn.execute(_insert(conn, HeldEvent.__table__).on_conflict_do_nothing(
                index_elements=["source", "external_id", "event_key"]), holding)
        if done_held:
            for i in range(0, len(done_held), 400):
                conn.execute(delete(HeldEvent).where(HeldEvent.id.in_(done_held[i : i + 400])))

        if new_keys:
            for case_id, source, external_id in fast.insert_returning(
                conn, Case.__table__, _CASE_COLUMNS, [tuple(cases[ck][c] for c in _CASE_COLUMNS) for ck in new_keys],
                ("id", "source", "external_id"),
            ):
                cases[(source, external_id)]["id"] = case_id
        if modified:
            fast.update_by_id(conn, Case.__table__, _MUTABLE,
                              [(*(cases[ck][k] for k in _MUTABLE), cases[ck]["id"]) for ck in modified])
        if events:
            fast.insert(conn, CaseEvent.__table__, _EVENT_COLUMNS,
                        [(cases[ck]["id"], *row) for ck, row in events], converted=True)
        if assigning:
            self._assign(conn, fast, cases, assigning, set(new_keys))
        touched = {cases[ck]["id"]: cases[ck] for ck in dirty}
        result.cases_touched += len(touched)
        return touched

    def _load_held(self, conn: Connection, keys: Sequence[tuple[str, str]]) -> list[tuple[Held, CaseRecord]]:
        """The held events of these cases, as (Held, record) items."""
        out = []
        t = HeldEvent.__table__
        for i in range(0, len(keys), 400):
            chunk = keys[i : i + 400]
            rows = conn.execute(select(t.c.id, t.c.stream, t.c.entry_id, t.c.position, t.c.feed, t.c.raw, t.c.held_at,
                                       t.c.record).where(tuple_(t.c.source, t.c.external_id).in_(chunk))).all()
            for row in rows:
                out.append((Held(row.id, row.stream, row.entry_id, row.position, row.feed, row.raw, row.held_at),
                            CaseRecord.model_validate_json(row.record)))
        return out

    def _assign(self, conn: Connection, fast: FastWriter, cases: dict[tuple[str, str], dict[str, Any]],
                assigning: list[tuple[tuple[str, str], CaseRecord]], new_keys: set[tuple[str, str]]) -> None:
        """Move the departments' assignment rows (core/assignments.py) by the batch's applied events."""
        existing = sorted({cases[ck]["id"] for ck, _ in assigning if ck not in new_keys})
        rows: dict[int, list[dict[str, Any]]] = defaultdict(list)
        before: dict[int, tuple] = {}
        for a in fast.select_assignments(conn, existing) if existing else ():
            rows[a["case_id"]].append(a)
            before[a["id"]] = tuple(a[c] for c in assignments.MUTABLE)
        limit = self.whistle_limit
        for ck, ev in assigning:
            case = cases[ck]
            assignments.apply(rows[case["id"]], ev.event.value, ev.occurred_at, case_id=case["id"],
                              departments=ev.departments, accept_due=case["accept_due_at"], due=case["due_at"],
                              grid=case["grid_code"], rating=ev.rating, whistle_limit=limit)
        added, changed = [], []
        drill = {c["id"]: bool(c["drill"]) for c in cases.values()}
        for case_id, case_rows in rows.items():
            for a in case_rows:
                if a["id"] is None:
                    added.append((*(a[c] for c in assignments.COLUMNS), drill[case_id]))
                elif tuple(a[c] for c in assignments.MUTABLE) != before[a["id"]]:
                    changed.append((*(a[c] for c in assignments.MUTABLE), a["id"]))
        fast.insert(conn, CaseAssignment.__table__, (*assignments.COLUMNS, "drill"), added)
        fast.update_by_id(conn, CaseAssignment.__table__, assignments.MUTABLE, changed)

    def case_live_state(self, case: dict[str, Any]) -> str:
        return encode_case_state(case["grid_code"], case["grade"], case["status"], case["overdue"],
                                 case["warned"] and case["suspended_at"] is None)

    # ---- sensors -----------------------------------------------------------------------------
    def apply_sensors(self, readings: Sequence[tuple[Any, SensorReading]], result: BatchResult, dead: list) -> SensorBatch:
        """Work out what readings change: new devices, alarms opened and cleared, the last reading per device.

        Touches no SQL: most batches change nothing there, and ``write_sensors`` does the rest when one does.
        """
        by_device: dict[str, list[SensorReading]] = defaultdict(list)
        silent: dict[str, SensorReading] = {}  # "offline" records from the device watch
        for _, rd in readings:
            if rd.kind == "offline":
                silent[rd.device_id] = rd
            else:
                by_device[rd.device_id].append(rd)
        registry = self.registry
        missing = [d for d in by_device if d not in registry]
        drills = {d for d, rds in by_device.items() if rds[0].drill} | {d for d, rd in silent.items() if rd.drill}
        if missing:  # registered by another worker or an earlier run?
            for keys in (self.keys, self.drill_keys):
                for device, known in zip(missing, self.r.hmget(keys.devices, missing), strict=True):
                    if known:
                        prev = orjson.loads(known)
                        registry[device] = (prev.get("t"), prev.get("g"))
        active, offline = set(), set()  # few: only devices in alarm or silent now
        for keys in (self.keys, self.drill_keys) if drills else (self.keys,):
            active |= {k.decode() for k in self.r.hkeys(keys.alarms)}
            offline |= {k.decode() for k in self.r.hkeys(keys.offline)}
        offline_changes: list[tuple[str, str | None, dict | None]] = []
        offline_opened: list[dict] = []
        last: dict[str, dict] = {}
        new_devices = []
        alarm_changes: list[tuple[str, str | None, dict | None]] = []
        alarm_cases: list[tuple[Any, CaseRecord]] = []
        opened_rows, cleared = [], []
        firsts = [(d, rds[0]) for d, rds in by_device.items() if d not in registry]
        registering: dict[str, tuple[str, str | None]] = {}
        if firsts:
            grids = self.locate_many([f for _, f in firsts])
            for (device, first), grid in zip(firsts, grids, strict=True):
                new_devices.append({"id": device, "type": first.type, "source": first.source, "lon": first.lon,
                                    "lat": first.lat, "grid_code": grid, "first_seen": first.ts,
                                    "drill": device in drills})
                registering[device] = (first.type, grid)
        for device, rds in by_device.items():
            if len(rds) > 1:
                rds.sort(key=_ts)
            dtype, grid = registry.get(device) or registering[device]
            if any(x.type != dtype for x in rds):
                for key, rd in readings:
                    if rd.device_id == device and rd.type != dtype:
                        dead.append((key, orjson.dumps(rd.model_dump(mode="json")),
                                     f"type: device {device} is registered as {dtype!r}, not {rd.type!r}", rd.source))
                rds = [x for x in rds if x.type == dtype]
                if not rds:
                    continue
            stype = self.city.sensor_types[dtype]
            in_alarm = device in active
            result.readings += len(rds)
            if device in offline:  # heard from again
                offline_changes.append((device, grid, None))
                cleared.append((device, rds[0].ts, "offline"))
            for rd in rds:
                if not in_alarm and rd.value >= stype.threshold:
                    in_alarm = True
                    alarm = {"type": rd.type, "since": rd.ts.isoformat(), "value": rd.value, "device": device}
                    alarm_changes.append((device, grid, alarm))
                    opened_rows.append({"device_id": device, "type": rd.type, "kind": "threshold", "grid_code": grid,
                                        "opened_at": rd.ts, "peak_value": rd.value, "cleared_at": None})
                    cat = self.city.categories[stype.category]
                    alarm_cases.append((None, CaseRecord(
                        source="sensor", external_id=f"{device}@{rd.ts.strftime('%Y%m%dT%H%M%S')}", event=Action.REPORT,
                        occurred_at=rd.ts, category=stype.category, grade=stype.grade,
                        title=f"{cat.name} · {device}", grid_code=grid, lon=rd.lon, lat=rd.lat,
                        note=f"{stype.name} {rd.value:g}{stype.unit} ≥ {stype.threshold:g}", drill=rd.drill)))
                    result.alarms_opened += 1
                elif in_alarm and rd.value < stype.clear_below:
                    in_alarm = False
                    alarm_changes.append((device, grid, None))
                    cleared.append((device, rd.ts, "threshold"))
                    result.alarms_cleared += 1
            rd = rds[-1]
            last[device] = {"t": dtype, "v": rd.value, "ts": rd.ts, "g": grid, "a": int(in_alarm), "b": rd.battery}
        for device, rd in silent.items():
            known = registry.get(device) or registering.get(device)
            if known is None or device in offline or device in by_device:
                continue  # unknown device, already offline, or it has just spoken
            grid = known[1]
            offline_changes.append((device, grid, {"type": known[0], "since": rd.ts.isoformat(), "device": device,
                                                   "silent_s": rd.value}))
            offline_opened.append({"device_id": device, "type": known[0], "kind": "offline", "grid_code": grid,
                                   "opened_at": rd.ts, "peak_value": rd.value or 0.0, "cleared_at": None})
            result.devices_offline += 1
        return SensorBatch(last, alarm_changes, alarm_cases, new_devices, opened_rows, cleared, registering,
                           offline_changes, offline_opened, drills)

    def write_sensors(self, conn: Connection, batch: SensorBatch) -> None:
        """The SQL part of a sensor batch: register devices, open and clear alarms."""
        if batch.new_devices:
            conn.execute(_insert(conn, Device.__table__).on_conflict_do_nothing(index_elements=["id"]), batch.new_devices)
        opened = batch.opened + batch.offline_opened
        if opened:
            conn.execute(
                _insert(conn, SensorAlarm.__table__).on_conflict_do_nothing(index_elements=["device_id", "opened_at"]),
                opened,
            )
        for device, ts, kind in batch.cleared:
            conn.execute(
                update(SensorAlarm)
                .where(SensorAlarm.device_id == device, SensorAlarm.kind == kind, SensorAlarm.cleared_at.is_(None),
                       SensorAlarm.opened_at <= ts)
                .values(cleared_at=ts)
            )

    def link_alarm_cases(self, conn: Connection, batch: SensorBatch, touched: dict[int, dict]) -> None:
        """Point each newly opened alarm at the case it opened."""
        if not batch.alarm_cases:
            return
        ids = {(c["source"], c["external_id"]): cid for cid, c in touched.items()}
        rows = []
        for (_, ev), alarm in zip(batch.alarm_cases, batch.opened, strict=True):
            cid = ids.get((ev.source, ev.external_id))
            if cid is not None:
                rows.append({"cid": cid, "dev": alarm["device_id"], "at": alarm["opened_at"]})
        if rows:
            t = SensorAlarm.__table__
            conn.execute(
                update(t).where(t.c.device_id == bindparam("dev"), t.c.opened_at == bindparam("at"))
                .values(case_id=bindparam("cid")),
                rows,
            )


def tune_gc() -> None:
    """Garbage-collector settings for a worker process.

    A batch allocates tens of thousands of short-lived objects (records, rows, dicts) and no cycles
    worth chasing; with the default thresholds the collector walks the whole heap — the city's
    geometry included — many times per batch. Freeze what exists after start-up and collect the
    young generation less often: about a third off the time per event, same memory in steady state.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


class Worker:
    """One consumer of the group. ``run()`` loops until ``stop`` is set or too many errors in a row."""

    def __init__(self, city, settings: Settings | None = None, engine: Engine | None = None,
                 r: redis.Redis | None = None, name: str | None = None):
        from store.services import get_engine, get_redis

        self.settings = settings or get_settings()
        self.r = r or get_redis(self.settings)
        self.engine = engine or get_engine(self.settings)
        self.names = StreamNames.of(self.settings)
        self.applier = Applier(city, self.settings, self.engine, self.r)
        self.name = name or consumer_name(self.settings)
        self.stop = threading.Event()
        self.totals = BatchResult()
        self._last_claim = 0.0
        self._last_sweep = 0.0
        self._own_pending = True  # a previous life of this name may have left entries pending: they come first
        from ingest.rebuild import Watch

        self.watch = Watch(self.engine, self.r, self.settings.stream_prefix, city.county_code)
        self.watch._last = time.monotonic()  # run() checks at start; run_once every CHECK_EVERY_S after
        ensure_groups(self.r, self.settings)

    # ---- one batch ---------------------------------------------------------------------------
    def process(self, batch: dict[str, list[tuple[bytes, dict[bytes, bytes]]]]) -> BatchResult:
        """Apply entries read from the streams ({stream name: [(id, fields)]}) and acknowledge them."""
        result = BatchResult()
        try:
            self._process(batch, result)
        except TRANSIENT:
            raise  # infrastructure: leave pending, retry the same entries before reading past them
        except Exception as exc:
            if sum(len(v) for v in batch.values()) <= 1:
                # One entry that breaks the batch is poison: dead-letter it rather than loop on it.
                for stream, entries in batch.items():
                    for entry_id, fields in entries:
                        log.exception("entry %s on %s could not be applied", entry_id, stream)
                        self._dead_and_ack(stream, entry_id, fields.get(b"d", b""), f"apply failed: {type(exc).__name__}: {exc}",
                                           entry_source(fields))
                        result.dead += 1
                return result
            log.warning("batch failed (%s: %s); applying its entries one by one", type(exc).__name__, exc)
            for stream, entries in batch.items():
                for entry in entries:
                    result.add(self.process({stream: [entry]}))
        return result

    def _dead_and_ack(self, stream: str, entry_id, raw, reason: str, source: str) -> None:
        pipe = self.r.pipeline(transaction=False)
        dead_letter(pipe, self.names, self.settings, raw, reason, stream=stream, source=source, entry_id=entry_id)
        pipe.xack(stream, self.settings.consumer_group, entry_id)
        pipe.execute()

    def _process(self, batch, result: BatchResult) -> None:
        catalog = self.applier.catalog
        dead: list[tuple] = []  # (stream, entry id, index, raw, reason, source)
        case_items: list[tuple[Any, CaseRecord]] = []
        sensor_items: list[tuple[Any, SensorReading]] = []
        acks: dict[str, list] = defaultdict(list)
        feeds: dict[str, str] = {}
        origins: dict[Any, tuple[str, str, bytes | None]] = {}  # case event → (stream, feed, the entry's bytes)
        for stream, entries in batch.items():
            is_cases = stream in self.names.case_streams
            model = CaseRecord if is_cases else SensorReading
            target = case_items if is_cases else sensor_items
            for entry_id, fields in entries:
                acks[stream].append(entry_id)
                source = entry_source(fields)
                raw = fields.get(b"d")
                if raw is None:
                    dead.append((stream, entry_id, None, b"", "entry has no 'd' field (not published by a Gridwatch producer)", source))
                    continue
                records, rejects = parse_json_entry(raw, model, catalog)
                for index, item_raw, problems in rejects:
                    dead.append((stream, entry_id, index, item_raw, "; ".join(problems), source))
                for k, rec in enumerate(records):
                    key = (entry_id, k)
                    target.append((key, rec))
                    if is_cases:
                        origins[key] = (stream, source, raw)
                if records:
                    feeds[records[0].source] = datetime.now(UTC).isoformat()
        last_readings: dict[str, dict] = {}
        alarm_changes: list = []
        touched: dict[int, dict] = {}
        sensors: SensorBatch | None = None
        if sensor_items:
            sdead: list = []
            sensors = self.applier.apply_sensors(sensor_items, result, sdead)
            dead += [(self.names.sensors, *(k or (None, None)), raw, reason, src)
                     for k, raw, reason, src in sdead]  # k: (entry id, index in it); None for alarm-made cases
            case_items = case_items + sensors.alarm_cases
            last_readings, alarm_changes = sensors.last, sensors.alarm_changes
        if case_items or (sensors is not None and sensors.needs_sql):
            with self.engine.begin() as conn:
                if sensors is not None:
                    self.applier.write_sensors(conn, sensors)
                if case_items:
                    cdead: list = []
                    touched = self.applier.apply_cases(conn, case_items, result, cdead, origins=origins,
                                                       pending_before=self.pending_before)
                    for k, raw, reason, src in cdead:
                        stream, _feed, entry_raw = origins.get(k, (self.names.cases, src, None))
                        dead.append((stream, *(k or (None, None)), _item(entry_raw, k) or raw, reason, src))
                if sensors is not None:
                    self.applier.link_alarm_cases(conn, sensors, touched)
        if sensors is not None:
            self.applier.registry.update(sensors.registering)  # only once the devices are committed
        pipe = self.r.pipeline(transaction=False)
        self._live_cases(pipe, touched)
        drills = sensors.drills if sensors is not None else set()
        offline_changes = sensors.offline_changes if sensors is not None else []
        ap = self.applier
        parts = [(ap.live, last_readings, alarm_changes, offline_changes)]
        if drills:  # a replay's devices: their live state apart (rare; the city's batches skip this)
            parts = [(live, {d: v for d, v in last_readings.items() if (d in drills) is mine},
                      [c for c in alarm_changes if (c[0] in drills) is mine],
                      [c for c in offline_changes if (c[0] in drills) is mine])
                     for live, mine in ((ap.live, False), (ap.drill_live, True))]
        for live, readings, alarms, silent in parts:
            if readings:
                pipe.hset(live.keys.devices, mapping={d: orjson.dumps(v) for d, v in readings.items()})
            if alarms:
                live.set_alarms(alarms, pipe=pipe)
            if silent:
                live.set_alarms(silent, pipe=pipe, offline=True)
        for stream, entry_id, index, raw, reason, source in dead:
            dead_letter(pipe, self.names, self.settings, raw if isinstance(raw, bytes | str) else orjson.dumps(raw),
                        reason, stream=stream, source=source, entry_id=entry_id, index=index)
        result.dead += len(dead)
        if feeds:
            pipe.hset(self.applier.keys.feeds, mapping=feeds)
            pipe.set(self.applier.keys.last_event_at, max(feeds.values()))
        for stream, ids in acks.items():
            if ids:
                pipe.xack(stream, self.settings.consumer_group, *ids)
        pipe.execute()

    def _live_cases(self, pipe, touched: dict[int, dict]) -> None:
        """The touched cases' live state: the city's counters, or a drill's own (a replay's cases count apart)."""
        if not touched:
            return
        parts = [(self.applier.live, touched)]
        if any(c.get("drill") for c in touched.values()):
            parts = [(self.applier.live, {i: c for i, c in touched.items() if not c.get("drill")}),
                     (self.applier.drill_live, {i: c for i, c in touched.items() if c.get("drill")})]
        for live, cases in parts:
            if cases:
                live.set_case_states(((cid, self.applier.case_live_state(c)) for cid, c in cases.items()), pipe=pipe)
                live.note_reports(cases.values(), pipe=pipe)

    # ---- order after faults --------------------------------------------------------------------
    def pending_before(self, stream: str) -> str | None:
        """The oldest entry of ``stream`` that another consumer of the group holds unacknowledged (None: none)."""
        group = self.settings.consumer_group
        summary = self.r.xpending(stream, group)
        oldest = None
        for c in summary.get("consumers") or ():
            name = _text(c["name"])
            if name == self.name or not int(c["pending"]):
                continue
            first = self.r.xpending_range(stream, group, min="-", max="+", count=1, consumername=name)
            if first:
                eid = _text(first[0]["message_id"])
                if oldest is None or ordering.older(eid, oldest):
                    oldest = eid
        return oldest

    def sweep_held(self) -> int:
        """Held events whose time is up: retried once more, dead-lettered when still illegal (core/ordering.py).

        The dead letters are written before the transaction that deletes their held rows commits: a crash in
        between writes a dead letter twice, never loses one.
        """
        cutoff = datetime.now(UTC) - timedelta(seconds=self.settings.hold_seconds)
        t = HeldEvent.__table__
        with self.engine.connect() as conn:
            due = conn.execute(select(t.c.source, t.c.external_id).where(t.c.held_at <= cutoff).distinct()
                               .limit(200)).all()
        if not due:
            return 0
        result = BatchResult()
        dead: list = []
        with self.engine.begin() as conn:
            touched = self.applier.apply_cases(conn, [], result, dead, also=[tuple(x) for x in due],
                                               pending_before=self.pending_before, sweep=True)
            if dead:
                pipe = self.r.pipeline(transaction=False)
                for key, _rec, reason, _src in dead:
                    dead_letter(pipe, self.names, self.settings, key.raw, reason, stream=key.stream, source=key.feed,
                                entry_id=key.entry_id, index=key.position)
                pipe.execute()
        pipe = self.r.pipeline(transaction=False)
        self._live_cases(pipe, touched)
        pipe.execute()
        result.dead += len(dead)
        if result.applied or dead:
            log.info("held events: %d applied late, %d dead-lettered after waiting %g s, %d still waiting",
                     result.applied, len(dead), self.settings.hold_seconds, result.held)
        self._account(result)
        return result.applied + len(dead)

    # ---- the loop ----------------------------------------------------------------------------
    @property
    def _all_streams(self) -> tuple[str, ...]:
        return (*self.names.live, self.names.bulk)

    def _read(self, ids: str = ">", block: int | None = None, count: int | None = None, streams=None):
        streams = {s: ids for s in (streams or self._all_streams)}
        resp = self.r.xreadgroup(self.settings.consumer_group, self.name, streams,
                                 count=count or self.settings.worker_batch, block=block)
        out = {}
        for stream, entries in resp or []:
            stream = _text(stream)
            gone = [eid for eid, f in entries if f is None]
            if gone:  # trimmed by MAXLEN while pending: nothing left to apply; say so where an operator looks
                log.error("%d pending entries of %s were trimmed before they were applied (raise STREAM_MAXLEN)",
                          len(gone), stream)
                pipe = self.r.pipeline(transaction=False)
                for eid in gone:
                    dead_letter(pipe, self.names, self.settings, b"", "entry trimmed from the stream before it was "
                                "applied (STREAM_MAXLEN too small for the backlog)", stream=stream, source="unknown",
                                entry_id=eid)
                pipe.xack(stream, self.settings.consumer_group, *gone)
                pipe.execute()
            entries = [(eid, f) for eid, f in entries if f is not None]
            if entries:
                out[stream] = entries
        return out

    def drain_own_pending(self) -> int:
        """Entries this consumer read but never acknowledged (a failed batch, or a previous life of the same name)."""
        n = 0
        while not self.stop.is_set():
            batch = self._read("0", count=self.settings.worker_batch)
            if not batch:
                self._own_pending = False
                break
            self._account(self.process(batch))
            n += sum(len(v) for v in batch.values())
        return n

    def claim_stale(self) -> int:
        """Take over what other consumers left pending longer than claim_idle_ms (a consumer that died).

        The entries move to this consumer's own pending list and are applied next, before any new entry; events
        of their cases that came meanwhile wait for them as held events (core/ordering.py).
        """
        n = 0
        for stream in self._all_streams:
            start = "0-0"
            while True:
                resp = self.r.xautoclaim(stream, self.settings.consumer_group, self.name,
                                         min_idle_time=self.settings.claim_idle_ms, start_id=start,
                                         count=max(self.settings.worker_batch, 100))
                start, ids = resp[0], resp[1]  # (the entries come along: they are read again from our own list)
                if ids:
                    log.info("took over %d entries another consumer left pending on %s", len(ids), stream)
                    n += len(ids)
                    self._own_pending = True
                if start in (b"0-0", "0-0"):
                    break
        return n

    def _account(self, res: BatchResult) -> None:
        self.totals.add(res)

    def run_once(self, block_ms: int | None = None) -> int:
        """One step: a dead consumer's entries, else this consumer's own pending ones, else new ones.

        Entries that failed stay pending and are retried, in order, before anything new is read.
        """
        try:
            return self._run_once(block_ms)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                self._own_pending = True
                raise
            log.warning("the consumer group is missing (%s); creating it again, from the start of each stream "
                        "(what was applied already changes nothing)", exc)
            ensure_groups(self.r, self.settings)
            self._own_pending = True
            return 1  # not idle: go on at once
        except BaseException:
            self._own_pending = True  # whatever was read may be pending now
            raise

    def _run_once(self, block_ms: int | None) -> int:
        now = time.monotonic()
        if now - self._last_claim > self.settings.claim_idle_ms / 2000:
            self._last_claim = now
            self.claim_stale()
        if self._own_pending:
            batch = self._read("0", count=self.settings.worker_batch)
            if batch:
                self._account(self.process(batch))
                return sum(len(v) for v in batch.values())
            self._own_pending = False
        self.watch.check()  # between two batches: the live state missing or behind is rebuilt from SQL
        if now - self._last_sweep > min(self.settings.hold_seconds / 4, 15):
            self._last_sweep = now
            swept = self.sweep_held()
            if swept:
                return swept
        # Live streams first; then a bounded slice of the bulk stream, so an import of a million rows
        # drains at full speed when the city is quiet and never holds live events back by more than a slice.
        live = self._read(">", streams=self.names.live)
        bulk = self._read(">", count=self.settings.bulk_batch, streams=(self.names.bulk,))
        if not live and not bulk:
            live = self._read(">", block=self.settings.worker_block_ms if block_ms is None else block_ms,
                              count=self.settings.bulk_batch)
        n = 0
        for batch in (live, bulk):
            if batch:
                self._account(self.process(batch))
                n += sum(len(v) for v in batch.values())
        return n

    def run(self) -> None:
        tune_gc()
        log.info("worker %s started (group %s, batch %d)", self.name, self.settings.consumer_group, self.settings.worker_batch)
        beat = Heartbeat(self.r, self.applier.keys, self.name).start()
        errors = 0
        last_report = time.monotonic()
        checked = False
        while not self.stop.is_set():
            try:
                if not checked:
                    self.watch.check(force=True)  # at start: a live state lost with Redis is rebuilt first
                    checked = True
                beat.ok(self.run_once())
                errors = 0
            except (*TRANSIENT, IntegrityError) as exc:
                beat.failed(exc)
                errors += 1
                log.warning("worker error %d/%d (the entries stay pending and are retried first): %s",
                            errors, MAX_CONSECUTIVE_ERRORS, exc)
                if errors >= MAX_CONSECUTIVE_ERRORS:
                    log.error("too many errors in a row; exiting so the supervisor restarts the worker")
                    beat.stop()
                    raise
                self.stop.wait(min(0.2 * 2 ** errors, 10))
            if time.monotonic() - last_report > 60:
                last_report = time.monotonic()
                t = self.totals
                log.info("applied %d events, %d readings, %d duplicates, %d dead letters, %d alarms opened",
                         t.applied, t.readings, t.duplicates, t.dead, t.alarms_opened)
        beat.stop()
        log.info("worker %s stopped", self.name)

    def install_signal_handlers(self) -> None:
        def handler(signum, _frame):
            log.info("signal %s: finishing the current batch", signum)
            self.stop.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
