"""The worker's SQL writes (and the reads it makes to write): cases, timeline, held events, assignments, alarms.

The two hot statements (timeline insert, case update) and the case lookups go through plain DB-API executemany
(``FastWriter``); the rest through SQLAlchemy Core.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import bindparam, delete, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from core import assignments
from core.alarms import SensorBatch
from core.records import CaseEvent as CaseRecord
from store.schema import Case, CaseAssignment, CaseEvent, Device, HeldEvent, SensorAlarm, UTCDateTime, to_db_time

CaseKey = tuple[str, str]  # (source, external id)

# What a later event may change in a case row (an update's columns).
CASE_MUTABLE = (
    "category", "grade", "lon", "lat", "street_code", "community_code", "grid_code", "located", "status",
    "departments", "onsite", "overdue", "rating", "flags", "due_at", "accept_due_at", "suspended_at", "warned",
    "escalated", "due_provisional", "accepted_at", "resolved_at", "closed_at", "dispatched_at", "evaluated_at",
    "supervised_at", "supervise_note", "supervise_due_at", "updated_at",
)


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
CASE_COLUMNS = tuple(c for c in _CASE_ALL if c != "id")  # an insert's
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

EVENT_COLUMNS = ("case_id", "event_key", "action", "source", "occurred_at", "received_at", "status_before",
                 "status_after", "actor", "departments", "note", "rating", "due_at")


def insert_ignoring(conn: Connection, table):
    """The dialect's INSERT, for ``.on_conflict_do_nothing``."""
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def fast_for(conn: Connection, fast: FastWriter) -> FastWriter:
    """``fast`` when it speaks ``conn``'s dialect, else one that does."""
    return fast if conn.dialect.name == fast.dialect else FastWriter(conn.dialect.name)


def seen_events(conn: Connection, fast: FastWriter, case_ids: Sequence[int], keys: set[str]) -> set[tuple[int, str]]:
    """The (case id, event key) pairs stored already among these cases and keys."""
    seen: set[tuple[int, str]] = set()
    for sql, params in fast.event_lookups(case_ids):
        seen.update((r[0], r[1]) for r in conn.exec_driver_sql(sql, params) if r[1] in keys)
    return seen


def save_cases(conn: Connection, fast: FastWriter, cases: dict[CaseKey, dict[str, Any]], new: Sequence[CaseKey],
               modified: set[CaseKey], events: Sequence[tuple[CaseKey, tuple]]) -> None:
    """Insert the new cases (their ids set in ``cases``), update the modified ones, insert the timeline rows.

    ``events``: (case key, the values of ``EVENT_COLUMNS`` after case_id, already database values).
    """
    if new:
        for case_id, source, external_id in fast.insert_returning(
            conn, Case.__table__, CASE_COLUMNS, [tuple(cases[ck][c] for c in CASE_COLUMNS) for ck in new],
            ("id", "source", "external_id"),
        ):
            cases[(source, external_id)]["id"] = case_id
    if modified:
        fast.update_by_id(conn, Case.__table__, CASE_MUTABLE,
                          [(*(cases[ck][k] for k in CASE_MUTABLE), cases[ck]["id"]) for ck in modified])
    if events:
        fast.insert(conn, CaseEvent.__table__, EVENT_COLUMNS, [(cases[ck]["id"], *row) for ck, row in events],
                    converted=True)


def move_assignments(conn: Connection, fast: FastWriter, cases: dict[CaseKey, dict[str, Any]],
                     assigning: Sequence[tuple[CaseKey, CaseRecord]], new_keys: set[CaseKey],
                     whistle_limit: timedelta) -> None:
    """Move the departments' assignment rows by the applied events (core/assignments.py), and write what changed."""
    existing = sorted({cases[ck]["id"] for ck, _ in assigning if ck not in new_keys})
    rows: dict[int, list[dict[str, Any]]] = defaultdict(list)
    before: dict[int, tuple] = {}
    for a in fast.select_assignments(conn, existing) if existing else ():
        rows[a["case_id"]].append(a)
        before[a["id"]] = tuple(a[c] for c in assignments.MUTABLE)
    for ck, ev in assigning:
        case = cases[ck]
        assignments.apply(rows[case["id"]], ev.event.value, ev.occurred_at, case_id=case["id"],
                          departments=ev.departments, accept_due=case["accept_due_at"], due=case["due_at"],
                          grid=case["grid_code"], rating=ev.rating, whistle_limit=whistle_limit)
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


# ---- held events --------------------------------------------------------------------------------

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


def load_held(conn: Connection, keys: Sequence[CaseKey]) -> list[tuple[Held, CaseRecord]]:
    """The held events of these cases, as (Held, record) items."""
    out = []
    t = HeldEvent.__table__
    for i in range(0, len(keys), _CHUNK):
        chunk = keys[i : i + _CHUNK]
        rows = conn.execute(select(t.c.id, t.c.stream, t.c.entry_id, t.c.position, t.c.feed, t.c.raw, t.c.held_at,
                                   t.c.record).where(tuple_(t.c.source, t.c.external_id).in_(chunk))).all()
        for row in rows:
            out.append((Held(row.id, row.stream, row.entry_id, row.position, row.feed, row.raw, row.held_at),
                        CaseRecord.model_validate_json(row.record)))
    return out


def save_held(conn: Connection, holding: Sequence[dict[str, Any]], done: Sequence[int]) -> None:
    """Hold new events (rows of ``held_events``; one held already stays as it is) and delete the ``done`` rows."""
    if holding:
        conn.execute(insert_ignoring(conn, HeldEvent.__table__).on_conflict_do_nothing(
            index_elements=["source", "external_id", "event_key"]), holding)
    for i in range(0, len(done), _CHUNK):
        conn.execute(delete(HeldEvent).where(HeldEvent.id.in_(done[i : i + _CHUNK])))


def held_due(conn: Connection, cutoff: datetime, limit: int = 200) -> list[CaseKey]:
    """Cases with events held since ``cutoff`` or longer (at most ``limit``)."""
    t = HeldEvent.__table__
    rows = conn.execute(select(t.c.source, t.c.external_id).where(t.c.held_at <= cutoff).distinct().limit(limit))
    return [tuple(x) for x in rows.all()]


# ---- sensors ---------------------------------------------------------------------------------------

def write_sensors(conn: Connection, batch: SensorBatch) -> None:
    """The SQL part of a sensor batch: register devices, open and clear alarms."""
    if batch.new_devices:
        conn.execute(insert_ignoring(conn, Device.__table__).on_conflict_do_nothing(index_elements=["id"]),
                     batch.new_devices)
    opened = batch.opened + batch.offline_opened
    if opened:
        conn.execute(insert_ignoring(conn, SensorAlarm.__table__).on_conflict_do_nothing(
            index_elements=["device_id", "opened_at"]), opened)
    for device, ts, kind in batch.cleared:
        conn.execute(
            update(SensorAlarm)
            .where(SensorAlarm.device_id == device, SensorAlarm.kind == kind, SensorAlarm.cleared_at.is_(None),
                   SensorAlarm.opened_at <= ts)
            .values(cleared_at=ts)
        )


def link_alarm_cases(conn: Connection, batch: SensorBatch, touched: dict[int, dict]) -> None:
    """Point each newly opened alarm at the case it opened (``touched``: the batch's cases by id)."""
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
