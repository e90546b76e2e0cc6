"""Simulator feed: a believable live city of cases and sensor readings, published to the streams.

``rate`` (``--rate``) is new cases per simulated second, district-wide, at the weekday peak (10:00 Asia/Shanghai);
the day follows :data:`PROFILE` (24-hour average ≈ 0.48 × rate), non-working days run at 0.8 × that. A few moving
hotspots (a grid at several times its rate for 1–6 hours, then next door) move cases, they add none. A case's plan
is drawn whole when it is reported (simulator_plans.py) and each event is checked with :func:`core.lifecycle.apply`
when emitted. Deterministic for a seed and a sequence of :meth:`Simulator.step` calls (no global random state).
"""

from __future__ import annotations

import argparse
import heapq
import logging
import random
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from config.city import get_city
from config.routing import load_routing_config, tables_of
from config.settings import get_settings
from core import lifecycle
from core import routing as routing_rules
from core.lifecycle import OPEN_STATUSES, Status, TransitionError
from core.records import CITY_TZ
from core.sla import WorkingCalendar
from ingest.feeds import simulator_plans, simulator_sensors
from ingest.feeds.simulator_texts import (
    DESC_PREFIX,
    GIVEN,
    PHONE_PREFIXES,
    POIS,
    ROADS,
    SURNAMES,
    TEXTS,
)
from store.services import get_redis
from store.streams import Producer

log = logging.getLogger(__name__)

# Relative rate of new cases by local hour (linear in between); 1.0 is the peak that ``rate`` names.
PROFILE: tuple[float, ...] = (
    0.10, 0.07, 0.05, 0.05, 0.05, 0.08, 0.18, 0.40, 0.70, 0.92, 1.00, 0.95,  # 00–11
    0.72, 0.62, 0.78, 0.92, 0.96, 0.85, 0.62, 0.48, 0.40, 0.32, 0.22, 0.14,  # 12–23
)
OFF_DAY_FACTOR = 0.8
P_ONSITE = 0.85  # share of new cases that are minor and handled on the spot (≈ 90 % of those resolved on a given day)
N_HOTSPOTS = 4

# Sources and their shares. Dispatched cases come from everywhere; on-the-spot ones mostly from people on patrol
# (a grid worker also handles minor 随手拍 / 12345 reports in their grid on the spot).
DISPATCH_SOURCES = (("hotline12345", 0.40), ("citizen", 0.22), ("citymgmt", 0.23), ("patrol", 0.15))
ONSITE_SOURCES = (("patrol", 0.78), ("citymgmt", 0.10), ("citizen", 0.08), ("hotline12345", 0.04))
HISTORY = timedelta(minutes=1)  # a case reported longer ago than this is history: a backfill's
ID_PREFIX = {"hotline12345": "RX", "citizen": "SSP", "citymgmt": "SZCG", "patrol": "WG"}
KIND_WEIGHT = {"村宅小区": 1.3, "企业园区": 0.9, "商贸": 1.5, "公共设施": 0.7, "山湖林田水": 0.35}



def profile(at: datetime) -> float:
    """The diurnal factor (0..1] at ``at`` (Asia/Shanghai wall clock), linear between the hours."""
    local = at.astimezone(CITY_TZ)
    h = local.hour + local.minute / 60 + local.second / 3600
    i = int(h) % 24
    frac = h - int(h)
    return PROFILE[i] * (1 - frac) + PROFILE[(i + 1) % 24] * frac


def _iso(t: datetime) -> str:
    return t.astimezone(CITY_TZ).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- state


@dataclass
class Hotspot:
    grid: str
    category: str
    multiplier: float
    focus: tuple[float, float]
    since: datetime
    until: datetime


@dataclass
class SimCase:
    source: str
    external_id: str
    grid: str
    plan: list[tuple[datetime, str, dict[str, Any]]]
    status: Status | None = None
    emitted: int = 0
    routed: bool = False  # the router registers and dispatches it after its report (智能分拨)


@dataclass
class Stats:
    reports: int = 0
    events: int = 0
    readings: int = 0
    alarms: int = 0
    by_source: Counter = field(default_factory=Counter)


class Simulator:
    """Cases and sensor readings for slices of simulated time. See the module docstring.

    ``rate``: new cases per simulated second, district-wide, at the weekday peak (see :data:`PROFILE`).
    ``start``: the simulated time the first step starts from (default: the first step's slice start;
    :meth:`run` uses the wall clock). External ids carry it, so restarts never reuse an id.
    """

    def __init__(self, city, seed: int = 0, rate: float = 2.0, start: datetime | None = None, *,
                 sensors: bool = True, devices_per_grid: int = 5, hotspots: int = N_HOTSPOTS,
                 routing: tuple[routing_rules.Config, routing_rules.Tables] | None = None):
        if rate < 0:
            raise ValueError("rate must be >= 0")
        self.city = city
        self.seed = seed
        self.rate = float(rate)
        self.start = start.astimezone(UTC) if start is not None else None
        self.sensors_enabled = sensors
        self.n_hotspots = hotspots
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed)
        self.calendar = WorkingCalendar()
        self.routing = routing  # given: cases of its sources are left to the router (智能分拨), as a real feed's are
        geo = city.geography
        self.geo = geo
        self.grids = geo.areas("grid")
        self.grid_by_code = {g.code: g for g in self.grids}
        # Per-grid details that do not depend on the seed: roads, a grid worker, a base weight.
        self._roads: dict[str, tuple[str, ...]] = {}
        self._worker: dict[str, str] = {}
        weights = []
        for g in self.grids:
            reg = random.Random(f"grid:{g.code}")
            self._roads[g.code] = tuple(reg.sample(ROADS, 3))
            self._worker[g.code] = reg.choice(SURNAMES) + reg.choice(GIVEN)
            weights.append(KIND_WEIGHT.get(g.kind or "", 1.0) * reg.lognormvariate(0, 0.3))
        self.grid_weights = weights
        # Category weights per kind (sensor-only categories have weight 0).
        self._cats_all: dict[str, tuple[list[str], list[float]]] = {}
        self._cats_onsite: dict[str, tuple[list[str], list[float]]] = {}
        for kind in {g.kind for g in self.grids}:
            pairs = [(c.code, c.weight(kind)) for c in city.categories.values() if c.weight(kind) > 0]
            self._cats_all[kind] = ([c for c, _ in pairs], [w for _, w in pairs])
            on = [(c, w) for c, w in pairs if city.categories[c].onsite]
            self._cats_onsite[kind] = ([c for c, _ in on], [w for _, w in on]) if on else self._cats_all[kind]
        self._neighbours = self._find_neighbours()
        self.devices: list[simulator_sensors.Device] = (
            simulator_sensors.build_devices(self.grids, city.sensor_types, devices_per_grid, self._point_in) if sensors else [])
        self._dev_heap: list[tuple[datetime, int]] = []
        # Running state.
        self.clock: datetime | None = None
        self.run_tag: str | None = None
        self.hotspots: list[Hotspot] = []
        self.hotspot_log: list[Hotspot] = []
        self.cases: dict[str, SimCase] = {}
        self._heap: list[tuple[datetime, int, int, str]] = []
        self._case_no = 0
        self._push_no = 0
        self.stats = Stats()
        self.illegal = 0  # events dropped because lifecycle refused them (a bug if ever > 0)

    # ----------------------------------------------------------------- geography helpers

    def _find_neighbours(self) -> dict[str, list[str]]:
        from shapely.strtree import STRtree

        geoms = [self.geo.geometry(g.code) for g in self.grids]
        tree = STRtree(geoms)
        out: dict[str, list[str]] = {}
        for i, g in enumerate(self.grids):
            hits = tree.query(geoms[i].buffer(1e-7), predicate="intersects")
            out[g.code] = sorted(self.grids[int(j)].code for j in hits if int(j) != i)
        return out

    def _point_in(self, code: str, rng: random.Random, near: tuple[float, float] | None = None,
                  sigma: float = 0.0008) -> tuple[float, float]:
        """A random point inside grid ``code`` (rounded to 6 decimals), near ``near`` if given."""
        if near is not None:
            for _ in range(30):
                lon = round(rng.gauss(near[0], sigma), 6)
                lat = round(rng.gauss(near[1], sigma), 6)
                if self.geo.locate(lon, lat) == code:
                    return lon, lat
        x0, y0, x1, y1 = self.geo.geometry(code).bounds
        for _ in range(200):
            lon = round(rng.uniform(x0, x1), 6)
            lat = round(rng.uniform(y0, y1), 6)
            if self.geo.locate(lon, lat) == code:
                return lon, lat
        return self.grid_by_code[code].centroid

    def _community_stem(self, code: str) -> str:
        name = self.geo.area(code[:12]).name
        return name[:-2] if name.endswith("社区") else name

    # ----------------------------------------------------------------- sensors

    def _sensor_step(self, t0: datetime, now: datetime) -> list[dict[str, Any]]:
        out, alarms = simulator_sensors.readings(self.devices, self._dev_heap, self.rng, self.city.sensor_types, t0,
                                                 now, self.start or t0)
        self.stats.alarms += alarms
        self.stats.readings += len(out)
        return out

    @property
    def active_alarms(self) -> int:
        now = self.clock
        return sum(1 for d in self.devices if d.alarm_until is not None and (now is None or d.alarm_until > now))

    @property
    def silent_devices(self) -> int:
        now = self.clock
        return sum(1 for d in self.devices if d.silent_until is not None and (now is None or d.silent_until > now))

    # ----------------------------------------------------------------- hotspots

    def _new_hotspot(self, at: datetime, grid: str | None = None, category: str | None = None) -> Hotspot:
        rng = self.rng
        taken = {h.grid for h in self.hotspots}
        if grid is None:
            codes = [g.code for g in self.grids if g.code not in taken]
            ws = [w for g, w in zip(self.grids, self.grid_weights, strict=True) if g.code not in taken]
            grid = rng.choices(codes, weights=ws)[0]
        kind = self.grid_by_code[grid].kind
        if category is None or self.city.categories[category].weight(kind) <= 0:
            codes, ws = self._cats_all[kind]
            category = rng.choices(codes, weights=ws)[0]
        hours = min(6.0, max(1.0, rng.expovariate(1 / 3)))
        h = Hotspot(grid=grid, category=category, multiplier=rng.uniform(5, 8),
                    focus=self._point_in(grid, rng), since=at, until=at + timedelta(hours=hours))
        self.hotspot_log.append(h)
        if len(self.hotspot_log) > 1000:
            del self.hotspot_log[:100]
        return h

    def _move_hotspots(self, now: datetime) -> None:
        if not self.hotspots and self.n_hotspots:
            for _ in range(min(self.n_hotspots, len(self.grids))):
                self.hotspots.append(self._new_hotspot(now))
            return
        for i, h in enumerate(self.hotspots):
            if now < h.until:
                continue
            taken = {x.grid for x in self.hotspots}
            near = [c for c in self._neighbours.get(h.grid, []) if c not in taken]
            if near and self.rng.random() < 0.7:  # drift next door, the same trouble spreading
                self.hotspots[i] = self._new_hotspot(h.until, self.rng.choice(near), h.category)
            else:
                self.hotspots[i] = self._new_hotspot(h.until)

    # ----------------------------------------------------------------- cases

    def _make_case(self, t0: datetime, grid: str, hotspot: Hotspot | None) -> SimCase:
        rng = self.rng
        onsite, category, source, near = self._draw_kind(self.grid_by_code[grid].kind, hotspot)
        cat = self.city.categories[category]
        self._case_no += 1
        ext = f"{ID_PREFIX.get(source, 'SIM')}-{self.run_tag}-{self._case_no:06d}"
        report = self._report(grid, cat, source, near)
        worker = self._worker[grid]
        routed = None
        if onsite:
            report["onsite"] = True
            plan = simulator_plans.onsite_plan(rng, t0, report, cat, worker)
        else:
            routed = self._routed(source, cat, grid, report["grade"], t0)
            plan = [(t0, "report", report)] if routed is not None and not routed.routed else \
                simulator_plans.DispatchPlan(rng, self.calendar, self.city.departments, t0, report, cat, grid, source,
                                             routed.lead[0] if routed else None).drawn()
        by_router = bool(routed and routed.routed)
        if by_router and t0 < datetime.now(UTC) - HISTORY:  # the past (a backfill): what the router did back then
            plan = sorted([*plan, *((t0 + timedelta(seconds=2), ev["event"], {k: v for k, v in ev.items() if k not in (
                "source", "external_id", "event", "occurred_at")}) for ev in routing_rules.auto_events(
                source, ext, routed, t0))], key=lambda step: step[0])
            by_router = False
        return SimCase(source=source, external_id=ext, grid=grid, plan=plan, routed=by_router)

    def _routed(self, source: str, cat, grid: str, grade: int, t0: datetime) -> routing_rules.Routing | None:
        """What the router will do with a case of ``source`` (None: nothing, the simulator dispatches it itself; not
        routed: it waits for a dispatcher, and the simulator sends nothing after the report)."""
        if self.routing is None or source not in self.routing[0].sources:
            return None
        office = self.calendar.working_time_between(t0, t0 + timedelta(seconds=1)) > timedelta(0)
        return routing_rules.route(self.routing[0].rules, routing_rules.Facts(
            cat.code, grid, self.grid_by_code[grid].kind, source, grade, office), self.routing[1])

    def _draw_kind(self, kind: str | None, hotspot: Hotspot | None) -> tuple[bool, str, str, tuple | None]:
        """(on the spot?, category, source, a point to be near): a hotspot's trouble now and then, else by weight."""
        rng = self.rng
        onsite = rng.random() < P_ONSITE
        category = source = near = None
        if hotspot is not None and rng.random() < 0.6:
            cat = self.city.categories[hotspot.category]
            if not onsite or cat.onsite:
                category, near = hotspot.category, hotspot.focus
                if not onsite and rng.random() < 0.7:
                    source = rng.choice(("hotline12345", "citizen"))  # repeat complaints
        if category is None:
            codes, ws = (self._cats_onsite if onsite else self._cats_all)[kind]
            category = rng.choices(codes, weights=ws)[0]
        onsite = onsite and self.city.categories[category].onsite
        if source is None:
            pool = ONSITE_SOURCES if onsite else DISPATCH_SOURCES
            source = rng.choices([s for s, _ in pool], weights=[w for _, w in pool])[0]
        return onsite, category, source, near

    def _report(self, grid: str, cat, source: str, near: tuple | None) -> dict[str, Any]:
        """The report event's fields: where, how grave, the words, and who reported it."""
        rng = self.rng
        lon, lat = self._point_in(grid, rng, near=near)
        grade = cat.default_grade
        if grade < 4 and rng.random() < 0.05:
            grade += 1
        title, desc, address = self._wording(grid, cat, source)
        report: dict[str, Any] = {"category": cat.code, "grade": grade, "title": title, "description": desc,
                                  "address": address, "lon": lon, "lat": lat}
        worker = self._worker[grid]
        if source in ("hotline12345", "citizen"):
            report["reporter_name"] = rng.choice(SURNAMES) + rng.choice(("先生", "女士"))
            report["reporter_phone"] = rng.choice(PHONE_PREFIXES) + "".join(str(rng.randrange(10)) for _ in range(8))
        else:
            report["grid_code"] = grid
            report["reporter_name"] = worker if source == "patrol" else "采集员" + rng.choice(SURNAMES) + rng.choice(GIVEN)
            report["actor"] = f"网格员{worker}" if source == "patrol" else "数字城管采集员"
        return report

    def _wording(self, grid: str, cat, source: str) -> tuple[str, str, str]:
        """(title, description, address) of a report in the grid, in the words of its source."""
        rng = self.rng
        road = rng.choice(self._roads[grid])
        stem = self._community_stem(grid)
        community = self.geo.area(grid[:12]).name
        street = self.geo.area(grid[:9]).name
        num = rng.randint(1, 300)
        if rng.random() < 0.5:
            place = f"{community}{road}"
        else:
            pois = POIS.get(self.grid_by_code[grid].kind, ("{x}",))
            place = community + rng.choice(pois).format(x=stem, n=rng.randint(1, 40))
        suffix, descs = TEXTS.get(cat.code, (cat.name, ("{p}发现" + cat.name + "问题，请尽快处理。",)))
        if not suffix.startswith("附近") and place.endswith("路") and rng.random() < 0.5:
            place += "附近"
        desc = DESC_PREFIX.get(source, "") + rng.choice(descs).format(p=place, r=road)
        return f"{place}{suffix}", desc, f"深圳市光明区{street}{community}{road}{num}号"

    def _push(self, case: SimCase) -> None:
        if case.emitted < len(case.plan):
            self._push_no += 1
            heapq.heappush(self._heap, (case.plan[case.emitted][0], self._push_no, 0, case.external_id))
        else:
            self.cases.pop(case.external_id, None)

    def _arrivals(self, t0: datetime, now: datetime) -> None:
        seconds = (now - t0).total_seconds()
        if seconds <= 0 or self.rate <= 0:
            return
        mid = t0 + (now - t0) / 2
        factor = profile(mid)
        if not self.calendar.is_workday(mid.astimezone(CITY_TZ).date()):
            factor *= OFF_DAY_FACTOR
        n = int(self.np_rng.poisson(self.rate * factor * seconds))
        if n == 0:
            return
        hot = {h.grid: h for h in self.hotspots}
        total_base = sum(self.grid_weights)
        # Hotspots take their multiple of the base share; the total stays rate × profile.
        ws = [w * (hot[g.code].multiplier if g.code in hot else 1.0) / total_base
              for g, w in zip(self.grids, self.grid_weights, strict=True)]
        codes = [g.code for g in self.grids]
        times = sorted(t0 + timedelta(seconds=self.rng.uniform(0, seconds)) for _ in range(n))
        for t in times:
            t = t.replace(microsecond=0)
            grid = self.rng.choices(codes, weights=ws)[0]
            case = self._make_case(t, grid, hot.get(grid))
            self.cases[case.external_id] = case
            self.stats.reports += 1
            self.stats.by_source[case.source] += 1
            self._push(case)

    def _emit(self, now: datetime) -> list[dict[str, Any]]:
        out = []
        while self._heap and self._heap[0][0] <= now:
            _, _, _, ext = heapq.heappop(self._heap)
            case = self.cases.get(ext)
            if case is None:
                continue
            t, action, fields = case.plan[case.emitted]
            case.emitted += 1
            try:
                case.status = lifecycle.apply(case.status, action).status
                if case.routed and action == "report":
                    case.status = Status.DISPATCHED  # what the router's register and dispatch will make it
            except TransitionError as exc:  # never publish what the rule refuses
                log.error("simulator bug: case %s: %s — dropping the rest of its plan", ext, exc.reason)
                self.illegal += 1
                self.cases.pop(ext, None)
                continue
            ev = {"source": case.source, "external_id": ext, "event": action,
                  "event_id": f"{action}-{case.emitted}", "occurred_at": _iso(t)}
            ev.update(fields)
            out.append(ev)
            self._push(case)
        self.stats.events += len(out)
        return out

    @property
    def open_cases(self) -> int:
        return sum(1 for c in self.cases.values() if c.status in OPEN_STATUSES)

    # ----------------------------------------------------------------- the step

    def step(self, sim_now: datetime, dt: timedelta) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Case events and sensor readings for the simulated slice (sim_now - dt, sim_now].

        Every record is timed at or before ``sim_now``; events of one case come in time order.
        """
        if sim_now.tzinfo is None:
            raise ValueError("sim_now must be timezone-aware")
        now = sim_now.astimezone(UTC)
        t0 = now - dt
        if self.clock is not None and t0 < self.clock:
            t0 = self.clock  # never simulate a slice twice
        if self.start is None:
            self.start = t0
        if self.run_tag is None:
            self.run_tag = f"{self.start.astimezone(CITY_TZ):%y%m%d%H%M%S}S{self.seed}"
        self._move_hotspots(t0)
        self._arrivals(t0, now)
        cases = self._emit(now)
        readings = self._sensor_step(t0, now) if self.sensors_enabled else []
        self.clock = now
        return cases, readings

    # ----------------------------------------------------------------- publishing

    def backfill(self, producer, hours: float, until: datetime | None = None, slice_s: float = 10.0,
                 chunk: int = 5000) -> tuple[int, int]:
        """Publish ``hours`` of simulated history ending at ``until`` (default now) as fast as possible.

        Records carry their simulated (past) times. Returns (case events, readings) published.
        """
        until = (until or datetime.now(UTC)).astimezone(UTC)
        now = self.clock or until - timedelta(hours=hours)
        if self.start is None:
            self.start = now
        self.clock = now
        dt = timedelta(seconds=slice_s)
        buf_c: list[dict] = []
        buf_r: list[dict] = []
        n_c = n_r = 0
        next_report = now + timedelta(hours=1)
        started = time.monotonic()
        while now < until:
            now = min(now + dt, until)
            c, r = self.step(now, dt)
            buf_c += c
            buf_r += r
            if len(buf_c) + len(buf_r) >= chunk:
                n_c, n_r = n_c + len(buf_c), n_r + len(buf_r)
                _publish(producer, buf_c, buf_r)
                buf_c, buf_r = [], []
            if now >= next_report or now >= until:
                next_report += timedelta(hours=1)
                print(f"backfill: simulated up to {now.astimezone(CITY_TZ):%m-%d %H:%M} — {n_c + len(buf_c)} case events, "
                      f"{n_r + len(buf_r)} readings, {self.open_cases} open cases "
                      f"({time.monotonic() - started:.1f} s)", flush=True)
        n_c, n_r = n_c + len(buf_c), n_r + len(buf_r)
        _publish(producer, buf_c, buf_r)
        return n_c, n_r

    def run(self, producer, speed: float = 1.0, tick: float = 1.0, duration: float | None = None,
            stop_event: threading.Event | None = None) -> Stats:
        """Run in real time: each tick advances simulated time by ``tick * speed`` seconds and publishes
        what :meth:`step` returns. Stops after ``duration`` real seconds or when ``stop_event`` is set."""
        if tick <= 0 or speed <= 0:
            raise ValueError("tick and speed must be > 0")
        stop = stop_event or threading.Event()
        sim_now = self.clock or self.start or datetime.now(UTC).replace(microsecond=0)
        if self.clock is None:
            self.clock = sim_now
        dt = timedelta(seconds=tick * speed)
        began = last_log = next_tick = time.monotonic()
        totals = Stats()
        window = [0, 0, 0]  # reports, events, readings since the last summary
        warned_ahead = False
        failures = 0
        while not stop.is_set():
            if duration is not None and time.monotonic() - began >= duration:
                break
            sim_now = sim_now + dt
            reports_before = self.stats.reports
            cases, readings = self.step(sim_now, dt)
            try:
                _publish(producer, cases, readings)
                failures = 0
            except Exception as exc:  # noqa: BLE001 - Redis down: report, keep going, give up after a while
                failures += 1
                log.warning("simulator: publish failed (%s), %d records lost", exc, len(cases) + len(readings))
                if failures >= 10:
                    raise
            new = self.stats.reports - reports_before
            totals.reports += new
            totals.events += len(cases)
            totals.readings += len(readings)
            window[0] += new
            window[1] += len(cases)
            window[2] += len(readings)
            mono = time.monotonic()
            if mono - last_log >= 60:
                log.info("simulator: sim %s | last %.0f s: %d new cases, %d case events, %d readings | "
                         "open cases %d, active alarms %d, silent devices %d",
                         sim_now.astimezone(CITY_TZ).strftime("%m-%d %H:%M:%S"), mono - last_log, *window,
                         self.open_cases, self.active_alarms, self.silent_devices)
                window = [0, 0, 0]
                last_log = mono
            if not warned_ahead and sim_now - datetime.now(UTC) > timedelta(hours=20):
                log.warning("simulator: simulated time is 20 h ahead of the clock; records more than 24 h "
                            "in the future are rejected — lower --speed")
                warned_ahead = True
            next_tick += tick
            delay = next_tick - time.monotonic()
            if delay > 0:
                stop.wait(delay)
            elif delay < -5 * tick:
                next_tick = time.monotonic()  # fell behind: carry on rather than bursting to catch up
        log.info("simulator: stopped after %.0f s: %d new cases, %d case events, %d readings",
                 time.monotonic() - began, totals.reports, totals.events, totals.readings)
        return totals


def _publish(producer, cases: list[dict], readings: list[dict]) -> None:
    if cases:
        producer.cases(cases)
    if readings:
        producer.sensors(readings)


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=float, default=2.0,
                        help="new cases per simulated second, district-wide, at the weekday peak (10:00); the rest of "
                             "the day follows a diurnal profile (default 2: ~100 cases/min in the daytime)")
    parser.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many real seconds (default: run until stopped)")
    parser.add_argument("--tick", type=float, default=1.0, help="real seconds between publishes (default 1)")
    parser.add_argument("--backfill", type=float, default=0.0, metavar="HOURS",
                        help="first publish the previous HOURS of simulated history at once (default 0)")
    parser.add_argument("--no-sensors", action="store_true", help="publish cases only")
    parser.add_argument("--devices-per-grid", type=int, default=5, help="sensor devices per grid, about (default 5)")


def main(args: argparse.Namespace) -> int:
    settings = get_settings()
    producer = Producer(get_redis(settings), settings, source="simulator")
    city = get_city()
    routing = (load_routing_config(city, settings.routing_file), tables_of(city))
    sim = Simulator(city, seed=args.seed, rate=args.rate, sensors=not args.no_sensors,
                    devices_per_grid=args.devices_per_grid, routing=routing)
    stop = threading.Event()

    def _stop(signum, frame):  # noqa: ARG001
        log.info("simulator: signal %s, stopping", signum)
        stop.set()

    previous = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        log.info("simulator: rate %.2f cases/s at peak, speed %.1f×, %d grids, %d devices",
                 sim.rate, args.speed, len(sim.grids), len(sim.devices))
        if args.backfill and args.backfill > 0:
            now = datetime.now(UTC).replace(microsecond=0)
            n_c, n_r = sim.backfill(producer, args.backfill, until=now)
            print(f"backfill: done, {n_c} case events and {n_r} readings for the last {args.backfill:g} h", flush=True)
        if not stop.is_set():
            sim.run(producer, speed=args.speed, tick=args.tick, duration=args.duration, stop_event=stop)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return 0
