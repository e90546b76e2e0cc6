"""Dispatching benchmark: how soon the router (智能分拨) dispatches a case, and how soon a person's action is applied.

    python -m bench.dispatch [--cases 200] [--actions 100] [--quick]

- Auto-dispatch: citizen cases without departments are published one by one while a worker and the router run (as
  the demo runs them: the router every 0.5 s). For each: the seconds from its report being applied to its
  dispatch being applied (target p95 ≤ 5 s), against the same run's baseline: from publishing the report to the
  report being applied (the stream and the worker alone).
- Actions: POST /api/v1/cases/<id>/actions as a logged-in dispatcher (note, remind, supervise in turn), timed from
  the request to the answer that the worker applied it, against a GET /api/v1/cases/<id> of the same cases.

Uses REDIS_URL / DATABASE_URL when set; otherwise an embedded Redis and a SQLite file in a temporary folder.
Not a test: it asserts nothing and prints figures.
"""

from __future__ import annotations

import argparse
import re
import threading
import time
from datetime import UTC, datetime

import orjson
from sqlalchemy import select

from bench.common import bench_env, line, pct
from store.schema import Case, CaseEvent

PASSWORD = "bench password 1234"


def _spans(label: str, values: list[float], unit: str = "ms", scale: float = 1000.0) -> None:
    line(label, f"p50 {pct(values, 0.5) * scale:8.1f} {unit}   p95 {pct(values, 0.95) * scale:8.1f} {unit}   "
                f"({len(values)})")


def _running(env, stop: threading.Event):
    from ingest.router import Router
    from ingest.worker import Worker
    from store.streams import ensure_groups

    ensure_groups(env.r, env.settings)
    worker = Worker(env.city, env.settings, env.engine, env.r, name="bench")
    router = Router(env.city, env.settings)

    def work():
        while not stop.is_set():
            worker.run_once(20)
        router.stop()

    threads = [threading.Thread(target=work, daemon=True), threading.Thread(target=router.run, daemon=True)]
    for t in threads:
        t.start()
    return router, threads


def _report(env, ext: str, i: int) -> dict:
    grid = env.city.geography.areas("grid")[i % 50]
    return {"source": "citizen", "external_id": ext, "event": "report", "occurred_at": datetime.now(UTC).isoformat(),
            "category": "0101", "title": f"群众上报 {ext}", "grid_code": grid.code}


def _wait(engine, ext: str, key: str | None, deadline: float):
    """(report applied at, the event ``key`` applied at) once both are stored (None for what never came)."""
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            rows = dict(conn.execute(select(CaseEvent.event_key, CaseEvent.received_at)
                                     .join(Case, Case.id == CaseEvent.case_id)
                                     .where(Case.source == "citizen", Case.external_id == ext)).all())
        rep = next((v for k, v in rows.items() if k.startswith("report@")), None)
        if rep is not None and (key is None or key in rows):
            return rep, rows.get(key) if key else None
        time.sleep(0.01)
    return None, None


def auto_dispatch(env, n: int) -> None:
    from store.streams import Producer

    stop = threading.Event()
    _, threads = _running(env, stop)
    producer = Producer(env.r, env.settings, source="bench")
    routed, applied = [], []
    tag = f"{time.time_ns() % 10**9:09d}"
    for i in range(n):
        ext = f"B{tag}-{i}"
        published = datetime.now(UTC)
        producer.cases([_report(env, ext, i)])
        rep, dis = _wait(env.engine, ext, "auto:dispatch", time.monotonic() + 30)
        if rep is None or dis is None:
            print(f"  case {ext}: not dispatched within 30 s", flush=True)
            continue
        applied.append((rep - published).total_seconds())
        routed.append((dis - rep).total_seconds())
    stop.set()
    for t in threads:
        t.join(5)
    print("auto-dispatch (智能分拨), worker and router running (router every 0.5 s):")
    _spans("report applied → dispatch applied", routed)
    _spans("baseline: report published → report applied", applied)


def _login(app, env):
    from dashboard import auth

    name = f"bench-dispatcher-{time.time_ns() % 10**6}"
    auth.create_user(env.engine, env.city, name, PASSWORD, "dispatcher", env.city.geography.district.code)
    c = app.server.test_client()
    page = c.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    c.post("/login", data={"username": name, "password": PASSWORD, "csrf": token, "next": "/"})
    c.environ_base["HTTP_X_CSRFTOKEN"] = c.get_cookie("_csrf_token").value
    return c


def actions(env, n: int) -> None:
    from app import create_app
    from store.streams import Producer

    stop = threading.Event()
    _, threads = _running(env, stop)
    app = create_app(env.settings)
    c = _login(app, env)
    producer = Producer(env.r, env.settings, source="bench")
    ids = []
    tag = f"A{time.time_ns() % 10**9:09d}"
    for i in range(min(n, 20)):
        producer.cases([{**_report(env, f"{tag}-{i}", i), "source": "citizen", "onsite": True}])  # not routed
        rep, _ = _wait(env.engine, f"{tag}-{i}", None, time.monotonic() + 30)
    with env.engine.connect() as conn:
        ids = conn.execute(select(Case.id).where(Case.external_id.like(f"{tag}-%"))).scalars().all()
    bodies = ({"action": "note", "note": "已联系"}, {"action": "remind", "note": "请加快"},
              {"action": "supervise", "note": "限期办结"})
    acted, read, not_applied = [], [], 0
    for i in range(n):
        cid = ids[i % len(ids)]
        body = {**bodies[i % 3], "request_id": f"bench-{tag}-{i}"}
        t0 = time.perf_counter()
        resp = c.post(f"/api/v1/cases/{cid}/actions", data=orjson.dumps(body), content_type="application/json")
        acted.append(time.perf_counter() - t0)
        not_applied += resp.status_code != 200
        t0 = time.perf_counter()
        c.get(f"/api/v1/cases/{cid}")
        read.append(time.perf_counter() - t0)
    stop.set()
    for t in threads:
        t.join(5)
    print("actions (在线督办) by the API, as a dispatcher, worker running:")
    _spans("action request → answer: applied", acted)
    _spans("baseline: GET the same case", read)
    if not_applied:
        line("answered before the worker applied them (202)", f"{not_applied}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.dispatch", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=200, help="citizen cases for the auto-dispatch (default 200)")
    ap.add_argument("--actions", type=int, default=100, help="actions by the API (default 100)")
    ap.add_argument("--quick", action="store_true", help="small sizes (10 cases, 15 actions): a smoke run")
    args = ap.parse_args(argv)
    if args.quick:
        args.cases, args.actions = 10, 15
    env = bench_env("dispatch")
    try:
        auto_dispatch(env, args.cases)
        actions(env, args.actions)
    finally:
        env.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
