"""The SLA clock end to end: sweep marks (overdue + 催办, 升级, 临期), 延期, 挂起/恢复, with a real Redis and SQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from ingest.scheduler import sla_sweep
from ingest.worker import Worker
from store.schema import Case, CaseEvent
from store.streams import Producer, read_dead
from tests import accounts

NOW = datetime.now(UTC).replace(microsecond=0)


def drain(w: Worker) -> None:
    while w.run_once(50):
        pass


def rec(city, ext, action, at, **extra):
    r = {"source": "t", "external_id": ext, "event": action, "event_id": f"{action}-{at.isoformat()}",
         "occurred_at": at.isoformat(), **extra}
    if action == "report":
        cat = next(c for c in city.categories.values() if not c.sensor_only).code
        r.update(category=cat, title=ext, grid_code=city.geography.areas("grid")[0].code)
    return r


def cases(engine) -> dict[str, dict]:
    with engine.connect() as conn:
        return {row.external_id: dict(row._mapping) for row in conn.execute(select(Case.__table__))}


def actions(engine, ext) -> list[str]:
    with engine.connect() as conn:
        return [a for (a,) in conn.execute(
            select(CaseEvent.action).join(Case, Case.id == CaseEvent.case_id).where(Case.external_id == ext)
            .order_by(CaseEvent.occurred_at, CaseEvent.id))]


def test_sweep_marks_overdue_reminds_escalates_and_warns_once(settings, r, engine, city):
    h = timedelta(hours=1)
    p = Producer(r, settings, source="t")
    p.cases([
        rec(city, "late", "report", NOW - 10 * h, due_at=(NOW - h).isoformat()),
        rec(city, "very-late", "report", NOW - 40 * h, due_at=(NOW - 30 * h).isoformat()),
        rec(city, "near", "report", NOW - 10 * h, due_at=(NOW + h).isoformat()),  # 1 of 11 hours left: ≤ 20%
        rec(city, "fine", "report", NOW - h, due_at=(NOW + 10 * h).isoformat()),
        rec(city, "held", "report", NOW - 10 * h, due_at=(NOW - h).isoformat()),
        rec(city, "held", "suspend", NOW - 5 * h, actor="张科长", note="等待产权人"),
    ])
    w = Worker(city, settings, engine, r, name="t")
    drain(w)
    first = sla_sweep(settings, now=NOW)
    drain(w)
    assert first == {"overdue": 2, "escalate": 0, "warning": 1}
    second = sla_sweep(settings, now=NOW)  # very-late is now marked overdue, 30 h past: escalate
    drain(w)
    assert second == {"overdue": 0, "escalate": 1, "warning": 0}
    assert sla_sweep(settings, now=NOW) == {"overdue": 0, "escalate": 0, "warning": 0}
    c = cases(engine)
    assert c["late"]["overdue"] and not c["late"]["escalated"]
    assert c["very-late"]["overdue"] and c["very-late"]["escalated"]
    assert c["near"]["warned"] and not c["near"]["overdue"]
    assert not c["fine"]["warned"] and not c["fine"]["overdue"]
    assert not c["held"]["overdue"]  # suspended: the clock stands still
    live = {k.decode(): int(v) for k, v in r.hgetall(f"{settings.stream_prefix}:live:area:{city.county_code}").items()}
    assert live["overdue"] == 2 and live["warning"] == 1  # late + very-late; near
    assert actions(engine, "late") == ["report", "overdue", "remind"]
    assert actions(engine, "very-late") == ["report", "overdue", "remind", "escalate"]
    assert read_dead(r, settings) == []


def test_extension_and_suspension_move_the_deadline(settings, r, engine, city):
    h = timedelta(hours=1)
    p = Producer(r, settings, source="t")
    w = Worker(city, settings, engine, r, name="t")
    due = NOW - h
    p.cases([rec(city, "ext", "report", NOW - 10 * h, due_at=due.isoformat()),
             rec(city, "sus", "report", NOW - 10 * h, due_at=(NOW + 3 * h).isoformat())])
    drain(w)
    sla_sweep(settings, now=NOW)
    drain(w)
    live_key = f"{settings.stream_prefix}:live:area:{city.county_code}"
    assert int(r.hget(live_key, "overdue")) == 1
    new_due = NOW + 5 * h
    p.cases([rec(city, "ext", "extend", NOW, due_at=new_due.isoformat(), actor="王主任", note="需协调供电局"),
             rec(city, "sus", "suspend", NOW - 8 * h), rec(city, "sus", "resume", NOW - 6 * h)])
    drain(w)
    c = cases(engine)
    assert c["ext"]["due_at"] == new_due and not c["ext"]["overdue"] and not c["ext"]["warned"]
    assert int(r.hget(live_key, "overdue")) == 0  # the live count follows the extension
    # Held for 2 hours (08:00 to 06:00 before now): the deadline moves 2 hours later.
    assert c["sus"]["due_at"] == NOW + 3 * h + 2 * h and c["sus"]["suspended_at"] is None
    with engine.connect() as conn:
        ext = conn.execute(select(CaseEvent.actor, CaseEvent.note).where(CaseEvent.action == "extend")).one()
    assert ext == ("王主任", "需协调供电局")  # who and why, on the timeline
    with engine.connect() as conn:  # and the deadlines each event set or moved
        dues = {(x, a): d for x, a, d in conn.execute(
            select(Case.external_id, CaseEvent.action, CaseEvent.due_at).join(Case, Case.id == CaseEvent.case_id))}
    assert dues[("ext", "report")] == due and dues[("ext", "extend")] == new_due
    assert dues[("sus", "suspend")] is None and dues[("sus", "resume")] == NOW + 5 * h


def test_clock_changes_on_a_closed_case_and_bad_checkins_are_refused(settings, r, engine, city):
    h = timedelta(hours=1)
    p = Producer(r, settings, source="t")
    p.cases([
        rec(city, "done", "report", NOW - 3 * h),
        rec(city, "done", "onsite", NOW - 2 * h),
        rec(city, "done", "extend", NOW - h, due_at=(NOW + h).isoformat()),
        rec(city, "open", "report", NOW - 3 * h),
        rec(city, "open", "extend", NOW - h),  # no new deadline given
        rec(city, "open", "checkin", NOW - h, departments=["cg", "sz"]),  # two departments in one check-in
    ])
    drain(Worker(city, settings, engine, r, name="t"))
    reasons = sorted(d["reason"] for d in read_dead(r, settings))
    assert len(reasons) == 3
    assert any("cannot extend a case that is resolved" in x for x in reasons)
    assert any("due_at: required for extend" in x for x in reasons)
    assert any("checkin names exactly one department" in x for x in reasons)


def test_case_page_shows_each_summoned_departments_report(settings, r, engine, city):
    import orjson


    m = timedelta(minutes=1)
    t0 = NOW - 120 * m
    p = Producer(r, settings, source="t")
    p.cases([
        rec(city, "w", "report", t0), rec(city, "w", "register", t0 + m),
        rec(city, "w", "whistle", t0 + 2 * m, departments=["cg", "zj", "ga"]),
        rec(city, "w", "checkin", t0 + 10 * m, departments=["cg"]),
        rec(city, "w", "checkin", t0 + 50 * m, departments=["zj"]),
    ])
    drain(Worker(city, settings, engine, r, name="t"))
    client = accounts.client(settings)
    case_id = cases(engine)["w"]["id"]
    body = orjson.loads(client.get(f"/api/v1/cases/{case_id}").data)
    got = {w["department"]: w["status"] for w in body["whistle_reports"]}
    # Limit 30 min from t0+2: cg at +8 min on time, zj at +48 late, ga never (and 118 min have passed): missing.
    assert settings.whistle_report_minutes == 30
    assert got == {"cg": "on_time", "zj": "late", "ga": "missing"}
