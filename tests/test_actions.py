"""在线督办 by the API: POST /api/v1/cases/<id>/actions as each role, with a real worker applying what is published.

An action must change a case exactly as the same event from a feed does: two cases get the same steps, one by the
API, one by a feed, and end alike (status, departments, deadlines, supervision, assignment rows, timeline). Refused
requests say why and change nothing: neither the stream nor the store.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from sqlalchemy import select

from core.records import CITY_TZ
from store.schema import AuditEntry, Case, CaseAssignment, CaseEvent
from store.streams import Producer, StreamNames
from tests import accounts
from tests.events import report
from tests.pushed import worker_running

STREET = "440311001"
OTHER_STREET = "440311004"


@pytest.fixture
def running(city, settings, engine, r):
    """A worker applying the streams while the test runs."""
    with worker_running(city, settings, engine, r, name="actions") as w:
        yield w


def grid_in(city, street):
    return next(g for g in city.geography.areas("grid") if g.code.startswith(street))


def new_case(city, settings, r, engine, ext, street=STREET, source="feed", **extra) -> int:
    Producer(r, settings, source="test").cases([report(city, ext, grid=grid_in(city, street), source=source,
                                                       when=datetime.now(UTC) - timedelta(minutes=30), **extra)])
    return wait_case(engine, source, ext)


def wait_case(engine, source, ext) -> int:
    import time  # noqa: PLC0415 - a deadline for the wait, not a timing under test

    end = time.monotonic() + 20
    while time.monotonic() < end:
        with engine.connect() as conn:
            found = conn.execute(select(Case.id).where(Case.source == source, Case.external_id == ext)).scalar()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"case {source}/{ext} never stored")


def act(client, case_id, **body):
    resp = client.post(f"/api/v1/cases/{case_id}/actions", data=orjson.dumps(body),
                       content_type="application/json")
    return resp.status_code, orjson.loads(resp.data)


def state(engine, case_id) -> dict:
    """What a user sees of a case, without ids and the times of arrival."""
    with engine.connect() as conn:
        case = dict(conn.execute(select(Case.__table__).where(Case.id == case_id)).one()._mapping)
        events = conn.execute(select(CaseEvent.action, CaseEvent.status_before, CaseEvent.status_after,
                                     CaseEvent.departments, CaseEvent.note, CaseEvent.due_at)
                              .where(CaseEvent.case_id == case_id).order_by(CaseEvent.id)).all()
        rows = conn.execute(select(CaseAssignment.department, CaseAssignment.role, CaseAssignment.assigned_at,
                                   CaseAssignment.due_at, CaseAssignment.ended_at.is_(None),
                                   CaseAssignment.checked_in_at.is_(None))
                            .where(CaseAssignment.case_id == case_id).order_by(CaseAssignment.id)).all()
    keep = ("status", "departments", "due_at", "accept_due_at", "overdue", "suspended_at", "supervised_at",
            "supervise_note", "supervise_due_at", "dispatched_at", "resolved_at", "closed_at")
    return {"case": {k: case[k] for k in keep}, "timeline": [tuple(e) for e in events],
            # a whistle's 报到 deadline counts from its own time: compared as the span, not the instant
            "assignments": [(d, role, due - at if role == "whistle" else due, *rest)
                            for d, role, at, due, *rest in rows]}


def near(x, y) -> bool:
    """Equal, or two times (or spans) within 5 s of each other."""
    if isinstance(x, datetime | timedelta) and isinstance(y, datetime | timedelta):
        return abs(x - y) < timedelta(seconds=5)
    return x == y


def counts(engine, r, settings):
    with engine.connect() as conn:
        n = conn.execute(select(CaseEvent.id)).all()
    return len(n), r.xlen(StreamNames.of(settings).cases)


def test_every_action_changes_the_case_as_the_same_event_from_a_feed(city, settings, r, engine, running, app):
    """The whole handling of a case by the API, step by step; the same steps fed to a twin; both end alike."""
    c = accounts.client(app=app, role="dispatcher")
    api_case = new_case(city, settings, r, engine, "api-1")
    fed_case = new_case(city, settings, r, engine, "fed-1")
    due = (datetime.now(CITY_TZ) + timedelta(days=3)).replace(microsecond=0)
    steps = [
        {"action": "register"},
        {"action": "dispatch", "departments": ["cg"]},
        {"action": "transfer", "departments": ["zj"]},
        {"action": "whistle", "departments": ["ga", "xiaofang"]},
        {"action": "supervise", "note": "请于明日前办结并反馈", "due_at": due.isoformat()},
        {"action": "remind", "note": "请加快办理"},
        {"action": "extend", "due_at": (due + timedelta(days=2)).isoformat()},
        {"action": "suspend", "note": "等待业主配合"},
        {"action": "resume"},
        {"action": "return", "note": "非本单位职责"},
        {"action": "dispatch", "departments": ["cg"]},
        {"action": "note", "note": "已电话联系报事人"},
    ]
    for n, step in enumerate(steps):
        status, body = act(c, api_case, **step)
        assert status == 200 and body["applied"], (step, body)
        at = datetime.now(UTC)
        ev = {"source": "feed", "external_id": "fed-1", "event": step["action"], "event_id": f"s{n}",
              "occurred_at": at.isoformat(), **{k: v for k, v in step.items() if k != "action"}}
        Producer(r, settings, source="test").cases([ev])
    wait_case(engine, "feed", "fed-1")
    import time  # noqa: PLC0415 - a deadline for the wait, not a timing under test

    end = time.monotonic() + 20
    while len(state(engine, fed_case)["timeline"]) < len(steps) + 1 and time.monotonic() < end:
        time.sleep(0.05)
    a, b = state(engine, api_case), state(engine, fed_case)
    assert [t[:5] for t in a["timeline"]] == [t[:5] for t in b["timeline"]]
    # the twins' steps happen moments apart, so what counts from a step's time (a suspension's length moves the
    # deadlines) may differ by that much
    assert len(a["assignments"]) == len(b["assignments"])
    for x, y in zip(a["assignments"], b["assignments"], strict=True):
        assert (x[:2], x[3:]) == (y[:2], y[3:]) and near(x[2], y[2]), (x, y)
    for k in ("status", "departments", "supervise_note", "supervise_due_at", "due_at", "accept_due_at"):
        assert near(a["case"][k], b["case"][k]), k
    assert a["case"]["status"] == "dispatched" and a["case"]["departments"] == ["cg"]
    assert {(d, span) for d, role, span, *_ in a["assignments"] if role == "whistle"} == {
        ("ga", timedelta(minutes=30)), ("xiaofang", timedelta(minutes=30))}  # the 30-minute 报到 clock
    assert a["case"]["supervise_note"] == "请于明日前办结并反馈" and a["case"]["supervise_due_at"] == due
    with engine.connect() as conn:
        actors = conn.execute(select(CaseEvent.actor).where(CaseEvent.case_id == api_case, CaseEvent.action != "report")
                              ).scalars().all()
        audited = conn.execute(select(AuditEntry.target).where(AuditEntry.action == "case_action",
                                                              AuditEntry.ok.is_(True))).scalars().all()
    assert all(a.endswith("(dispatcher)") for a in actors) and len(actors) == len(steps)
    assert audited.count(str(api_case)) == len(steps)


def test_close_and_reopen_and_a_closed_case_refuses_what_it_cannot_take(city, settings, r, engine, running, app):
    c = accounts.client(app=app, role="admin")
    cid = new_case(city, settings, r, engine, "cl-1")
    Producer(r, settings, source="test").cases([
        {"source": "feed", "external_id": "cl-1", "event": e, "event_id": e, "occurred_at": datetime.now(UTC).isoformat(),
         **({"departments": ["cg"]} if e == "dispatch" else {})} for e in ("register", "dispatch", "accept", "resolve")])
    import time  # noqa: PLC0415 - a deadline for the wait, not a timing under test

    end = time.monotonic() + 20
    while state(engine, cid)["case"]["status"] != "resolved" and time.monotonic() < end:
        time.sleep(0.05)
    assert act(c, cid, action="close")[0] == 200
    before = counts(engine, r, settings)
    status, body = act(c, cid, action="supervise", note="督办")
    assert status == 409 and "closed" in body["error"] and body["parameter"] == "action"
    assert body["error_zh"] == "案件当前为「核查结案」，已停止计时，不能督办"
    status, body = act(c, cid, action="extend", due_at=(datetime.now(CITY_TZ) + timedelta(days=1)).isoformat())
    assert status == 409 and "closed" in body["error"]
    assert counts(engine, r, settings) == before
    assert act(c, cid, action="reopen", note="回访不满意")[:1] == (200,)
    assert state(engine, cid)["case"]["status"] == "registered"


@pytest.mark.parametrize(("body", "status", "field", "words"), [
    ({"action": "fly"}, 400, "action", "unknown action"),
    ({}, 400, "action", "required"),
    ({"action": "accept"}, 400, "action", "not a person's"),
    ({"action": "dispatch"}, 400, "departments", "required"),
    ({"action": "dispatch", "departments": ["nope"]}, 400, "departments", "unknown department"),
    ({"action": "dispatch", "departments": "cg"}, 400, "departments", "list"),
    ({"action": "supervise"}, 400, "note", "批示"),
    ({"action": "extend"}, 400, "due_at", "required"),
    ({"action": "extend", "due_at": "2020-01-01T00:00:00+08:00"}, 400, "due_at", "not in the future"),
    ({"action": "extend", "due_at": "2030-01-01T00:00:00"}, 400, "due_at", "offset"),
    ({"action": "extend", "due_at": "tomorrow"}, 400, "due_at", "ISO 8601"),
    ({"action": "remind", "due_at": "2030-01-01T00:00:00+08:00"}, 400, "due_at", "takes no deadline"),
    ({"action": "note", "note": "x" * 2001}, 400, "note", "limit of 2000"),
    ({"action": "note", "note": "ok", "evil": 1}, 400, "evil", "unknown field"),
    ({"action": "note", "note": "ok", "request_id": "x"}, 400, "request_id", "8–64"),
    ({"action": "close"}, 409, "action", "allowed from"),  # the lifecycle's own reason: a reported case
    (["note"], 400, None, "JSON object"),
])
def test_bad_requests_are_refused_with_the_reason_and_change_nothing(city, settings, r, engine, running, app,
                                                                      body, status, field, words):
    c = accounts.client(app=app, role="dispatcher")
    cid = new_case(city, settings, r, engine, f"bad-{uuid.uuid4().hex[:6]}")
    before = counts(engine, r, settings)
    resp = c.post(f"/api/v1/cases/{cid}/actions", data=orjson.dumps(body), content_type="application/json")
    answer = orjson.loads(resp.data)
    assert resp.status_code == status and words in answer["error"], answer
    assert answer.get("parameter") == field
    assert re.search(r"[\u4e00-\u9fff]", answer["error_zh"]), answer  # the screens' reason, in Chinese
    assert counts(engine, r, settings) == before


def test_broken_and_huge_bodies_and_unknown_cases(city, settings, r, engine, running, app):
    c = accounts.client(app=app, role="dispatcher")
    cid = new_case(city, settings, r, engine, "huge-1")
    before = counts(engine, r, settings)
    resp = c.post(f"/api/v1/cases/{cid}/actions", data=b"{not json", content_type="application/json")
    assert resp.status_code == 400 and "not valid JSON" in orjson.loads(resp.data)["error"]
    resp = c.post(f"/api/v1/cases/{cid}/actions", data=b'{"action": "note", "note": "' + b"x" * 20000 + b'"}',
                  content_type="application/json")
    assert resp.status_code == 413
    assert act(c, 987654321, action="note", note="x")[0] == 404
    assert c.post("/api/v1/cases/abc/actions", data=b"{}", content_type="application/json").status_code == 400
    assert counts(engine, r, settings) == before


def test_a_replayed_request_is_applied_once(city, settings, r, engine, running, app):
    c = accounts.client(app=app, role="dispatcher")
    cid = new_case(city, settings, r, engine, "rep-1")
    rid = uuid.uuid4().hex
    first = act(c, cid, action="remind", note="请尽快", request_id=rid)
    again = act(c, cid, action="remind", note="请尽快", request_id=rid)
    assert first[0] == 200 and again == (200, {**first[1], "replayed": True})
    same_body = [act(c, cid, action="note", note="同一内容") for _ in range(3)]  # no request id: the body is the key
    assert [s for s, _ in same_body] == [200, 200, 200] and same_body[2][1]["replayed"]
    timeline = [t[0] for t in state(engine, cid)["timeline"]]
    assert timeline.count("remind") == 1 and timeline.count("note") == 1


def test_who_may_do_what(city, settings, r, engine, running, app):
    cid = new_case(city, settings, r, engine, "who-1")
    other = new_case(city, settings, r, engine, "who-2", street=OTHER_STREET)
    leader = accounts.client(app=app, role="leader", area=STREET)
    status, body = act(leader, cid, action="register")
    assert status == 403 and "may not register" in body["error"] and "supervise" in body["error"]
    assert body["error_zh"] == "您的角色无权立案"
    assert act(leader, cid, action="supervise", note="限期整改")[0] == 200
    assert act(leader, cid, action="remind", note="请加快")[0] == 200
    assert act(leader, other, action="supervise", note="越权")[0] == 404  # another street's case: as if absent
    assert state(engine, other)["case"]["supervised_at"] is None
    no_csrf = accounts.client(app=app, role="dispatcher")
    no_csrf.environ_base.pop("HTTP_X_CSRFTOKEN")
    assert act(no_csrf, cid, action="register")[0] == 403
    assert state(engine, cid)["case"]["status"] == "reported"
    anonymous = app.server.test_client()
    assert act(anonymous, cid, action="register")[0] in (401, 403)
    assert state(engine, cid)["case"]["status"] == "reported"


def test_the_routing_rules_are_served(app):
    c = accounts.client(app=app, role="leader")
    body = orjson.loads(c.get("/api/v1/routing").data)
    import yaml  # noqa: PLC0415 - the file, read independently

    from tests.test_dispatching import ROOT  # noqa: PLC0415
    names = [r["name"] for r in yaml.safe_load((ROOT / "config/routing.yaml").read_text("utf-8"))["rules"]]
    assert [r["name"] for r in body["rules"]] == names
    assert body["auto_sources"] == ["citizen", "sensor"]
    assert any(r["manual"] for r in body["rules"])


def test_the_screen_never_acts(city, settings, r, engine, running, app):
    from dashboard import auth

    cid = new_case(city, settings, r, engine, "scr-1")
    screen = app.server.test_client()
    assert screen.get(f"/s/{auth.create_screen_link(engine, city, 'hall')}").status_code == 303
    screen.environ_base["HTTP_X_CSRFTOKEN"] = screen.get_cookie("_csrf_token").value
    before = counts(engine, r, settings)
    for body in ({"action": "register"}, {"action": "note", "note": "x"}, {"action": "supervise", "note": "x"}):
        assert act(screen, cid, **body)[0] == 403
    assert counts(engine, r, settings) == before
