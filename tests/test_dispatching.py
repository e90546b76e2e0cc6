"""智能分拨 at work: the router registers and dispatches the cases that arrive without departments, by the rules in
config/routing.yaml, through the case stream and the worker; what no rule routes waits for a dispatcher (待分拨).

Expected departments are read from the rules file itself (and departments.yaml for a street's unit), not from the
routing code.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from config.routing import load_routing_config, tables_of
from core.routing import rule_of
from ingest.router import Router
from store.schema import Case, CaseEvent
from store.streams import Producer
from tests.events import report
from tests.pushed import drain, worker_running

ROOT = Path(__file__).resolve().parent.parent
RULES = {r["name"]: r for r in yaml.safe_load((ROOT / "config/routing.yaml").read_text("utf-8"))["rules"]}
UNITS = {d["street"]: d["code"] for d in yaml.safe_load((ROOT / "config/city/departments.yaml").read_text("utf-8"))
         ["departments"] if d.get("street")}


def publish(settings, r, *records) -> None:
    Producer(r, settings, source="test").cases(list(records))


def case_of(engine, source: str, ext: str):
    with engine.connect() as conn:
        case = conn.execute(select(Case.__table__).where(Case.source == source, Case.external_id == ext)).one()
        events = conn.execute(select(CaseEvent.event_key, CaseEvent.action, CaseEvent.actor, CaseEvent.departments,
                                     CaseEvent.note).where(CaseEvent.case_id == case.id)
                              .order_by(CaseEvent.id)).all()
    return case, events


def env_of(settings) -> dict[str, str]:
    """The environment of a command that opens this test's store."""
    env = {"PATH": "/usr/bin:/bin", "VAR_DIR": str(settings.var_dir), "REDIS_URL": settings.redis_url or ""}
    if settings.database_url:
        env["DATABASE_URL"] = settings.database_url
    return env


def grid_in_street(city, street: str):
    return next(g for g in city.geography.areas("grid") if g.code.startswith(street))


def category(city, code: str):
    return city.categories[code]


def test_a_citizen_case_is_registered_and_dispatched_by_the_first_rule_that_fits(city, settings, r, engine):
    grid = grid_in_street(city, "440311003")
    publish(settings, r, report(city, "c1", grid=grid, cat=category(city, "0101"), source="citizen"))
    drain(city, settings, engine, r)
    counts = Router(city, settings).route_once()
    assert counts == {"routed": 1, "unrouted": 0, "waiting": 0, "with_dispatcher": 0}
    drain(city, settings, engine, r)
    case, events = case_of(engine, "citizen", "c1")
    assert RULES["市容街面-街道执法队"]["lead"] == ["@street"]
    assert case.status == "dispatched" and case.departments == [UNITS["440311003"]]
    assert [(k, a, who) for k, a, who, _, _ in events][1:] == [("auto:register", "register", "gridwatch"),
                                                                ("auto:dispatch", "dispatch", "gridwatch")]
    assert rule_of(events[2].note) == "市容街面-街道执法队"


def test_a_sensor_alarm_case_summons_the_rule_s_departments(city, settings, r, engine):
    rule = RULES["电梯困人-应急联动"]
    grid = city.geography.areas("grid")[3]
    publish(settings, r, report(city, "lift-1", grid=grid, cat=category(city, "1305"), source="sensor"))
    drain(city, settings, engine, r)
    Router(city, settings).route_once()
    drain(city, settings, engine, r)
    case, events = case_of(engine, "sensor", "lift-1")
    assert case.departments == rule["lead"] + rule["summon"]  # the whistle adds the summoned to the leads
    whistle = next(e for e in events if e.action == "whistle")
    assert whistle.departments == rule["summon"] and whistle.event_key == "auto:whistle"


def test_a_case_no_rule_routes_waits_for_a_dispatcher_and_says_why_once(city, settings, r, engine):
    assert RULES["矛盾纠纷-人工研判"].get("manual") is True
    grid = city.geography.areas("grid")[7]
    dispute = next(c for c in city.categories.values() if c.code.startswith("08") and not c.sensor_only)
    publish(settings, r, report(city, "d1", grid=grid, cat=dispute, source="citizen"))
    drain(city, settings, engine, r)
    first = Router(city, settings)
    assert first.route_once()["unrouted"] == 1
    assert first.route_once() == {"routed": 0, "unrouted": 0, "waiting": 1, "with_dispatcher": 0}  # not again
    assert Router(city, settings).route_once()["unrouted"] == 1  # a second router, before the worker: again
    drain(city, settings, engine, r)
    assert Router(city, settings).route_once() == {"routed": 0, "unrouted": 0, "waiting": 0, "with_dispatcher": 1}
    case, events = case_of(engine, "citizen", "d1")
    assert case.status == "reported" and case.departments == []
    notes = [e for e in events if e.event_key == "auto:unrouted"]
    assert len(notes) == 1 and "待分拨" in notes[0].note and "矛盾纠纷-人工研判" in notes[0].note


def test_cases_that_carry_their_own_routing_are_left_alone(city, settings, r, engine):
    grid = city.geography.areas("grid")[2]
    cat = category(city, "0101")
    publish(settings, r,
            report(city, "h1", grid=grid, cat=cat, source="hotline12345"),  # not a source Gridwatch routes
            report(city, "o1", grid=grid, cat=cat, source="citizen", onsite=True),  # the grid worker's, on the spot
            report(city, "p1", grid=grid, cat=cat, source="citizen", departments=["cg"]))  # came with a department
    drain(city, settings, engine, r)
    assert Router(city, settings).route_once() == {"routed": 0, "unrouted": 0, "waiting": 0, "with_dispatcher": 0}


def test_two_routers_and_a_restart_dispatch_each_case_once(city, settings, r, engine):
    grids = city.geography.areas("grid")
    cat = category(city, "0101")
    publish(settings, r, *(report(city, f"m{i}", grid=grids[i], cat=cat, source="citizen") for i in range(30)))
    drain(city, settings, engine, r)
    one, two = Router(city, settings), Router(city, settings)
    one.route_once()
    two.route_once()
    drain(city, settings, engine, r)
    Router(city, settings).route_once()  # nothing waits any more
    drain(city, settings, engine, r)
    with engine.connect() as conn:
        rows = conn.execute(select(CaseEvent.event_key).join(Case, Case.id == CaseEvent.case_id)
                            .where(Case.source == "citizen")).scalars().all()
        statuses = conn.execute(select(Case.status).where(Case.source == "citizen")).scalars().all()
    assert rows.count("auto:dispatch") == 30 and rows.count("auto:register") == 30
    assert statuses == ["dispatched"] * 30


def test_cases_are_dispatched_while_the_router_and_worker_run(city, settings, r, engine):
    router = Router(city, settings)
    t = threading.Thread(target=router.run, args=(0.1,), daemon=True)
    with worker_running(city, settings, engine, r):
        t.start()
        grid = city.geography.areas("grid")[11]
        publish(settings, r, report(city, "live-1", grid=grid, cat=category(city, "0101"), source="citizen"))
        import time  # noqa: PLC0415 - a deadline for the wait, not a timing under test

        end = time.monotonic() + 20
        while time.monotonic() < end:
            with engine.connect() as conn:
                status = conn.execute(select(Case.status).where(Case.external_id == "live-1")).scalar()
            if status == "dispatched":
                break
            time.sleep(0.1)
        router.stop()
        t.join(5)
    assert status == "dispatched"


@pytest.mark.parametrize("how", ["case", "file"])
def test_the_dry_run_names_the_rule(city, settings, r, engine, tmp_path, how):
    grid = grid_in_street(city, "440311002")
    rec = report(city, "x1", grid=grid, cat=category(city, "0101"), source="citizen")
    if how == "case":
        publish(settings, r, rec)
        drain(city, settings, engine, r)
        case, _ = case_of(engine, "citizen", "x1")
        args = ["--case", str(case.id)]
    else:
        path = tmp_path / "one.json"
        path.write_text(json.dumps(rec), "utf-8")
        args = ["--explain", str(path)]
    out = subprocess.run([sys.executable, "-m", "ingest", "route", *args], capture_output=True, text=True,
                         cwd=ROOT, env=env_of(settings), timeout=120)
    assert out.returncode == 0, out.stderr
    assert "rule '市容街面-街道执法队'" in out.stdout and UNITS["440311002"] in out.stdout


def test_a_case_id_that_is_not_there_is_a_clear_error(settings):
    env = env_of(settings)
    out = subprocess.run([sys.executable, "-m", "ingest", "route", "--case", "987654321"], capture_output=True,
                         text=True, cwd=ROOT, env=env, timeout=120)
    assert out.returncode == 2 and "no such case" in out.stderr
    out = subprocess.run([sys.executable, "-m", "ingest", "route", "--case", "abc"], capture_output=True,
                         text=True, cwd=ROOT, env=env, timeout=120)
    assert out.returncode == 2 and "positive whole number" in out.stderr


def _simulated(city, settings, start):
    from ingest.feeds.simulator import Simulator

    sim = Simulator(city, seed=3, rate=2.0, sensors=False,
                    routing=(load_routing_config(city, settings.routing_file), tables_of(city)))
    events = []
    for n in range(1, 721):  # two simulated hours
        cases, _ = sim.step(start + timedelta(seconds=10 * n), timedelta(seconds=10))
        events += cases
    onsite = {e["external_id"] for e in events if e["event"] == "report" and e.get("onsite")}  # the grid worker's
    return sim, events, [e for e in events if e["source"] == "citizen" and e["external_id"] not in onsite]


def test_the_simulator_leaves_the_routed_sources_to_the_router(city, settings):
    sim, events, citizen = _simulated(city, settings, datetime.now(UTC))
    assert sim.illegal == 0 and len({e["external_id"] for e in citizen}) > 20
    assert not [e for e in citizen if e["event"] == "register"]  # the router's to do
    seen: dict[str, list[str]] = {}
    for e in citizen:  # a dispatcher dispatches again only after a 退回 or a 重新办理
        if e["event"] == "dispatch":
            assert {"return", "reopen"} & set(seen.get(e["external_id"], [])), e
        seen.setdefault(e["external_id"], []).append(e["event"])
    assert any(e["event"] in ("register", "dispatch") for e in events if e["source"] == "hotline12345")


def test_a_backfill_carries_what_the_router_did_back_then(city, settings):
    """History published at once cannot wait for the router: the simulator sends the router's own events (the same
    fixed ids, so a router that also gets there changes nothing)."""
    sim, _events, citizen = _simulated(city, settings, datetime.now(UTC) - timedelta(hours=3))
    assert sim.illegal == 0
    auto = [e for e in citizen if e.get("event_id", "").startswith("auto:")]
    assert auto and all(e["actor"] == "gridwatch" for e in auto)
    assert {e["event_id"] for e in auto} <= {"auto:register", "auto:dispatch", "auto:whistle"}
    assert all(rule_of(e["note"]) in RULES or rule_of(e["note"]) == "default" for e in auto if e["event"] != "register")


def test_a_killed_router_leaves_nothing_undispatched_or_doubled(city, settings, r, engine):
    """SIGKILL the router process once its first dispatches are applied, with 300 cases waiting; a new one
    publishes again what it finds still waiting: each case registered and dispatched exactly once."""
    import os
    import signal
    import time

    grids = city.geography.areas("grid")
    cat = category(city, "0101")
    publish(settings, r, *(report(city, f"k{i}", grid=grids[i % len(grids)], cat=cat, source="citizen")
                           for i in range(300)))
    drain(city, settings, engine, r)

    def dispatched() -> int:
        with engine.connect() as conn:
            return len(conn.execute(select(Case.id).where(Case.source == "citizen", Case.status == "dispatched")
                                    ).all())

    env = {**os.environ, **env_of(settings), "STREAM_PREFIX": settings.stream_prefix}
    with worker_running(city, settings, engine, r):
        first = subprocess.Popen([sys.executable, "-m", "ingest", "router", "--interval", "0.2"], cwd=ROOT, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + 60
        while dispatched() == 0 and time.monotonic() < end:
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        at_kill = dispatched()
        second = subprocess.Popen([sys.executable, "-m", "ingest", "router", "--interval", "0.2"], cwd=ROOT, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            end = time.monotonic() + 60
            while dispatched() < 300 and time.monotonic() < end:
                time.sleep(0.1)
        finally:
            second.terminate()
            second.wait(10)
    assert at_kill > 0 and dispatched() == 300
    with engine.connect() as conn:
        keys = conn.execute(select(CaseEvent.event_key).join(Case, Case.id == CaseEvent.case_id)
                            .where(Case.source == "citizen", CaseEvent.event_key.like("auto:%"))).scalars().all()
    assert sorted(set(keys)) == ["auto:dispatch", "auto:register"] and len(keys) == 600
