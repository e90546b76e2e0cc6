"""The worker: reads the streams as one consumer of the group, applies batches, acknowledges.

For each batch: decode and validate every entry, work out what it changes (core/casefile.py, core/alarms.py),
write that to SQL in one transaction (store/writes.py), then move the live state in Redis, then XACK. What cannot
be applied goes to the dead-letter stream with the reason — the worker never crashes on input. A crash anywhere
before XACK leaves the entries pending; this or another worker reclaims them (XAUTOCLAIM) and applies them again,
which changes nothing twice: events are unique per case, and the live state moves by difference.
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
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DisconnectionError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLTimeoutError

from config.calendar import get_calendar
from config.city import catalog_of
from config.settings import Settings, get_settings
from core import alarms, assignments, casefile, lifecycle, ordering
from core.alarms import SensorBatch
from core.geography import usable_point
from core.lifecycle import Action, TransitionError
from core.livestate import LiveKeys, drill_prefix, encode_case_state
from core.records import CaseEvent as CaseRecord
from core.records import SensorReading, parse_json_entry
from ingest.heartbeat import Heartbeat
from ingest.rebuild import Watch
from store import writes
from store.consumer import Consumer, as_text, item_bytes
from store.live import LiveWriter
from store.services import get_engine, get_redis
from store.streams import StreamNames, consumer_name, dead_letter, ensure_groups, entry_source
from store.writes import FastWriter, Held

log = logging.getLogger(__name__)

MAX_CONSECUTIVE_ERRORS = 10

# Failures of the parts, not of an entry: the batch stays pending and is retried before anything newer is read.
# IntegrityError is one too when two writers race for the same row: the retry finds the other's row.
TRANSIENT = (OperationalError, InterfaceError, DisconnectionError, SQLTimeoutError, redis.RedisError, OSError)

CaseKey = tuple[str, str]  # (source, external id)


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


def _place(item: tuple[Any, CaseRecord]) -> tuple[int, int, int]:
    """An item's place in stream order: a held event's original entry, a fresh one's (entry id, index)."""
    key = item[0]
    if isinstance(key, Held):
        return ordering.entry_order(key.entry_id, key.position)
    if key is None:
        return ordering.entry_order(None)
    return ordering.entry_order(key[0], key[1])


class _CaseRun:
    """One ``Applier.apply_cases``: the cases read, the events applied, the events waiting for their predecessors."""

    def __init__(self, applier: Applier, result: BatchResult, now: datetime, cases: dict[CaseKey, dict[str, Any]],
                 seen: set[tuple[int, str]], origins: dict[Any, tuple[str, str, bytes | None]] | None,
                 pending_before: Callable[[str], str | None] | None):
        self.applier = applier
        self.result = result
        self.cases = cases
        self.seen = seen
        self.origins = origins
        self.pending_before = pending_before
        self.now = now
        self.now_db = applier.fast.time(self.now)
        self.report_grids: dict[int, str | None] = {}
        self.new_keys: list[CaseKey] = []
        self.modified: set[CaseKey] = set()  # existing cases that an applied event changed
        self.dirty: set[CaseKey] = set()  # every case the batch names: its live state is re-asserted
        self.events: list[tuple[CaseKey, tuple]] = []
        self.applied_keys: set[tuple[CaseKey, str]] = set()
        self.assigning: list[tuple[CaseKey, CaseRecord]] = []  # applied events that change assignment rows
        self.waiting: dict[CaseKey, list[tuple[Any, CaseRecord, TransitionError]]] = defaultdict(list)
        self.done_held: list[int] = []  # held rows applied, found applied already, or dead-lettered
        self.hold = timedelta(seconds=applier.settings.hold_seconds)
        self.oldest: dict[str, str | None] = {}

    def locate_reports(self, items: Sequence[tuple[Any, CaseRecord]]) -> None:
        reports = [ev for _, ev in items if ev.event is Action.REPORT]
        self.report_grids = {id(ev): g for ev, g in zip(reports, self.applier.locate_many(reports), strict=True)}

    def older_pending(self, key) -> bool:
        """Another consumer still holds an older entry of the stream this event came from."""
        if self.pending_before is None:
            return False
        if isinstance(key, Held):
            stream, entry = key.stream, key.entry_id
        elif self.origins is not None and key in self.origins:
            stream, entry = self.origins[key][0], key[0]
        else:
            return False
        if stream not in self.oldest:
            self.oldest[stream] = self.pending_before(stream)
        return ordering.older(self.oldest[stream], entry)

    def step(self, ev: CaseRecord) -> TransitionError | None:
        """Apply one event; None when it applied (or had been applied), else the lifecycle's refusal."""
        ck = (ev.source, ev.external_id)
        key = ev.key
        case = self.cases.get(ck)
        if case is not None and ((case["id"], key) in self.seen or (ck, key) in self.applied_keys):
            self.result.duplicates += 1
            self.dirty.add(ck)  # a crash may have come between SQL and Redis: re-assert the live state
            return None
        status = case["status"] if case is not None else None
        try:
            outcome = lifecycle.apply(status, ev.event)
        except TransitionError as exc:
            return exc
        if case is None:
            case = self.applier.new_case(ev, self.now, self.report_grids.get(id(ev)))
            self.cases[ck] = case
            self.new_keys.append(ck)
        elif case["id"] is not None:
            self.modified.add(ck)
        after = outcome.status.value
        due_before = case["due_at"]
        case.update(casefile.changes(case, ev, outcome.status, self.applier.locate))
        case["status"] = after
        case["updated_at"] = self.now
        self.dirty.add(ck)
        self.applied_keys.add((ck, key))
        to_db = self.applier.fast.time
        self.events.append((ck, (  # the columns of writes.EVENT_COLUMNS after case_id
            key, ev.event.value, ev.source, to_db(ev.occurred_at), self.now_db, status, after, ev.actor,
            orjson.dumps(ev.departments).decode() if ev.departments is not None else None, ev.note, ev.rating,
            to_db(casefile.deadline_set(ev, due_before, case["due_at"])))))
        self.result.applied += 1
        if ev.event.value in assignments.ACTIONS:
            self.assigning.append((ck, ev))
        return None

    def retry(self, ck: CaseKey) -> None:
        """The case moved: its waiting events, oldest first, until none applies."""
        line = self.waiting.get(ck)
        while line:
            for i, (key, ev, _exc) in enumerate(line):
                if self.step(ev) is None:
                    del line[i]
                    if isinstance(key, Held):
                        self.done_held.append(key.id)
                    break
            else:
                return

    def apply(self, items: Sequence[tuple[Any, CaseRecord]], dead: list, sweep: bool) -> None:
        """Every item in order; a refused one waits, or is dead-lettered (core/ordering.py)."""
        for key, ev in items:
            ck = (ev.source, ev.external_id)
            refused = self.step(ev)
            if refused is None:
                if isinstance(key, Held):
                    self.done_held.append(key.id)
                self.retry(ck)
                continue
            is_held = isinstance(key, Held)
            v = ordering.verdict(case_exists=ck in self.cases, older_pending=self.older_pending(key),
                                 earlier_waiting=bool(self.waiting.get(ck)),
                                 held_since=key.held_at if is_held else None, now=self.now, hold=self.hold)
            if v is ordering.Verdict.DEAD and (sweep or not is_held):
                note = (f" (held {int((self.now - key.held_at).total_seconds())} s for its predecessors)"
                        if is_held else "")
                dead.append((key, ev.model_dump(mode="json"),
                             f"lifecycle: {refused.reason} (case {ev.source}/{ev.external_id}){note}", ev.source))
                if is_held:
                    self.done_held.append(key.id)
            else:
                self.waiting[ck].append((key, ev, refused))

    def holding(self) -> list[dict[str, Any]]:
        """Rows of ``held_events`` for the fresh events still waiting (counted in ``result.held`` with the rest)."""
        out = []
        origins = self.origins
        for line in self.waiting.values():
            for key, ev, exc in line:
                self.result.held += 1
                if isinstance(key, Held):
                    continue
                stream, feed, entry_raw = (origins[key] if origins and key in origins
                                           else (self.applier.keys.prefix, ev.source, None))
                raw = item_bytes(entry_raw, key) or orjson.dumps(ev.model_dump(mode="json"))
                out.append({"source": ev.source, "external_id": ev.external_id, "event_key": ev.key,
                            "stream": stream, "entry_id": as_text(key[0]) if key else "0-0",
                            "position": key[1] if key else 0, "record": ev.model_dump_json(),
                            "raw": raw.decode("utf-8", "replace"), "feed": feed, "reason": exc.reason,
                            "held_at": self.now})
        return out


class Applier:
    """Applies validated records to SQL and the live state. Used by the worker and by tests directly."""

    def __init__(self, city, settings: Settings, engine: Engine, r: redis.Redis):
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

    def locate(self, record) -> str | None:
        return self.locate_many([record])[0]

    # ---- cases -------------------------------------------------------------------------------
    def new_case(self, ev: CaseRecord, now: datetime, grid: str | None) -> dict[str, Any]:
        return casefile.new_case(ev, self.city.categories[ev.category], self.calendar, district=self.district,
                                 grid=grid, now=now)

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
        held = writes.load_held(conn, keys)
        if held:
            items = sorted([*items, *held], key=_place)
        fast = writes.fast_for(conn, self.fast)
        cases = {(row["source"], row["external_id"]): row for row in fast.select_cases(conn, keys)}
        seen = writes.seen_events(conn, fast, [c["id"] for c in cases.values()], {ev.key for _, ev in items})
        run = _CaseRun(self, result, now, cases, seen, origins, pending_before)
        run.locate_reports(items)
        run.apply(items, dead, sweep)
        writes.save_held(conn, run.holding(), run.done_held)
        writes.save_cases(conn, fast, cases, run.new_keys, run.modified, run.events)
        if run.assigning:
            writes.move_assignments(conn, fast, cases, run.assigning, set(run.new_keys), self.whistle_limit)
        touched = {cases[ck]["id"]: cases[ck] for ck in run.dirty}
        result.cases_touched += len(touched)
        return touched

    def case_live_state(self, case: dict[str, Any]) -> str:
        return encode_case_state(case["grid_code"], case["grade"], case["status"], case["overdue"],
                                 case["warned"] and case["suspended_at"] is None)

    # ---- sensors -----------------------------------------------------------------------------
    def apply_sensors(self, readings: Sequence[tuple[Any, SensorReading]], result: BatchResult, dead: list) -> SensorBatch:
        """Work out what readings change: new devices, alarms opened and cleared, the last reading per device.

        Touches no SQL: most batches change nothing there, and ``writes.write_sensors`` does the rest when one does.
        """
        by_device, silent, drills = alarms.split(readings)
        registry = self.registry
        self._recall([d for d in by_device if d not in registry])
        active, offline = set(), set()  # few: only devices in alarm or silent now
        for keys in (self.keys, self.drill_keys) if drills else (self.keys,):
            active |= {k.decode() for k in self.r.hkeys(keys.alarms)}
            offline |= {k.decode() for k in self.r.hkeys(keys.offline)}
        firsts = [(d, rds[0]) for d, rds in by_device.items() if d not in registry]
        new_devices, registering = alarms.register(firsts, self.locate_many([f for _, f in firsts]), drills)
        batch = alarms.evaluate(readings, by_device, silent, alarms.Known(registry, registering, active, offline),
                                self.city.sensor_types, self.city.categories, new_devices=new_devices, drills=drills)
        for key, rd, reason in batch.refused:
            dead.append((key, orjson.dumps(rd.model_dump(mode="json")), reason, rd.source))
        result.readings += batch.readings
        result.alarms_opened += batch.alarms_opened
        result.alarms_cleared += batch.alarms_cleared
        result.devices_offline += batch.devices_offline
        return batch

    def _recall(self, missing: list[str]) -> None:
        """Devices registered by another worker or an earlier run: their (type, grid) from the live state."""
        if not missing:
            return
        for keys in (self.keys, self.drill_keys):
            for device, known in zip(missing, self.r.hmget(keys.devices, missing), strict=True):
                if known:
                    prev = orjson.loads(known)
                    self.registry[device] = (prev.get("t"), prev.get("g"))


@dataclass
class _Decoded:
    """A batch's entries, validated: the records to apply, the dead letters, what to acknowledge."""

    dead: list[tuple] = field(default_factory=list)  # (stream, entry id, index, raw, reason, source)
    cases: list[tuple[Any, CaseRecord]] = field(default_factory=list)
    sensors: list[tuple[Any, SensorReading]] = field(default_factory=list)
    acks: dict[str, list] = field(default_factory=lambda: defaultdict(list))
    feeds: dict[str, str] = field(default_factory=dict)  # source → when it was last heard from
    origins: dict[Any, tuple[str, str, bytes | None]] = field(default_factory=dict)  # case event → (stream, feed, the entry's bytes)


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
        self.settings = settings or get_settings()
        self.r = r or get_redis(self.settings)
        self.engine = engine or get_engine(self.settings)
        self.names = StreamNames.of(self.settings)
        self.applier = Applier(city, self.settings, self.engine, self.r)
        self.name = name or consumer_name(self.settings)
        self.consumer = Consumer(self.r, self.settings, self.names, self.name)
        self.stop = threading.Event()
        self.totals = BatchResult()
        self._last_claim = 0.0
        self._last_sweep = 0.0
        self._own_pending = True  # a previous life of this name may have left entries pending: they come first
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
        d = self._decode(batch)
        touched: dict[int, dict] = {}
        sensors: SensorBatch | None = None
        if d.sensors:
            sdead: list = []
            sensors = self.applier.apply_sensors(d.sensors, result, sdead)
            d.dead += [(self.names.sensors, *(k or (None, None)), raw, reason, src)
                       for k, raw, reason, src in sdead]  # k: (entry id, index in it); None for alarm-made cases
            d.cases = d.cases + sensors.alarm_cases
        if d.cases or (sensors is not None and sensors.needs_sql):
            touched = self._write(d, sensors, result)
        if sensors is not None:
            self.applier.registry.update(sensors.registering)  # only once the devices are committed
        pipe = self.r.pipeline(transaction=False)
        self._live_cases(pipe, touched)
        if sensors is not None:
            self._live_sensors(pipe, sensors)
        for stream, entry_id, index, raw, reason, source in d.dead:
            dead_letter(pipe, self.names, self.settings, raw if isinstance(raw, bytes | str) else orjson.dumps(raw),
                        reason, stream=stream, source=source, entry_id=entry_id, index=index)
        result.dead += len(d.dead)
        if d.feeds:
            pipe.hset(self.applier.keys.feeds, mapping=d.feeds)
            pipe.set(self.applier.keys.last_event_at, max(d.feeds.values()))
        for stream, ids in d.acks.items():
            if ids:
                pipe.xack(stream, self.settings.consumer_group, *ids)
        pipe.execute()

    def _decode(self, batch) -> _Decoded:
        """Validate every entry of the batch: the records to apply, and dead letters for what is not one."""
        catalog = self.applier.catalog
        d = _Decoded()
        for stream, entries in batch.items():
            is_cases = stream in self.names.case_streams
            model = CaseRecord if is_cases else SensorReading
            target = d.cases if is_cases else d.sensors
            for entry_id, fields in entries:
                d.acks[stream].append(entry_id)
                source = entry_source(fields)
                raw = fields.get(b"d")
                if raw is None:
                    d.dead.append((stream, entry_id, None, b"",
                                   "entry has no 'd' field (not published by a Gridwatch producer)", source))
                    continue
                records, rejects = parse_json_entry(raw, model, catalog)
                for index, item_raw, problems in rejects:
                    d.dead.append((stream, entry_id, index, item_raw, "; ".join(problems), source))
                for k, rec in enumerate(records):
                    key = (entry_id, k)
                    target.append((key, rec))
                    if is_cases:
                        d.origins[key] = (stream, source, raw)
                if records:
                    d.feeds[records[0].source] = datetime.now(UTC).isoformat()
        return d

    def _write(self, d: _Decoded, sensors: SensorBatch | None, result: BatchResult) -> dict[int, dict]:
        """The batch's SQL, in one transaction: devices and alarms, then cases. Returns the touched cases by id."""
        touched: dict[int, dict] = {}
        with self.engine.begin() as conn:
            if sensors is not None:
                writes.write_sensors(conn, sensors)
            if d.cases:
                cdead: list = []
                touched = self.applier.apply_cases(conn, d.cases, result, cdead, origins=d.origins,
                                                   pending_before=self.pending_before)
                for k, raw, reason, src in cdead:
                    stream, _feed, entry_raw = d.origins.get(k, (self.names.cases, src, None))
                    d.dead.append((stream, *(k or (None, None)), item_bytes(entry_raw, k) or raw, reason, src))
            if sensors is not None:
                writes.link_alarm_cases(conn, sensors, touched)
        return touched

    def _live_sensors(self, pipe, sensors: SensorBatch) -> None:
        """The devices' last readings and alarms: the city's, or a drill's own (a replay's devices count apart)."""
        ap = self.applier
        parts = [(ap.live, sensors.last, sensors.alarm_changes, sensors.offline_changes)]
        drills = sensors.drills
        if drills:  # a replay's devices: their live state apart (rare; the city's batches skip this)
            parts = [(live, {d: v for d, v in sensors.last.items() if (d in drills) is mine},
                      [c for c in sensors.alarm_changes if (c[0] in drills) is mine],
                      [c for c in sensors.offline_changes if (c[0] in drills) is mine])
                     for live, mine in ((ap.live, False), (ap.drill_live, True))]
        for live, readings, changes, silent in parts:
            if readings:
                pipe.hset(live.keys.devices, mapping={d: orjson.dumps(v) for d, v in readings.items()})
            if changes:
                live.set_alarms(changes, pipe=pipe)
            if silent:
                live.set_alarms(silent, pipe=pipe, offline=True)

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
        return self.consumer.pending_before(stream)

    def sweep_held(self) -> int:
        """Held events whose time is up: retried once more, dead-lettered when still illegal (core/ordering.py).

        The dead letters are written before the transaction that deletes their held rows commits: a crash in
        between writes a dead letter twice, never loses one.
        """
        cutoff = datetime.now(UTC) - timedelta(seconds=self.settings.hold_seconds)
        with self.engine.connect() as conn:
            due = writes.held_due(conn, cutoff)
        if not due:
            return 0
        result = BatchResult()
        dead: list = []
        with self.engine.begin() as conn:
            touched = self.applier.apply_cases(conn, [], result, dead, also=due,
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
    def _read(self, ids: str = ">", block: int | None = None, count: int | None = None, streams=None):
        return self.consumer.read(ids, block=block, count=count, streams=streams)

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
        n = self.consumer.claim_stale()
        if n:
            self._own_pending = True
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
