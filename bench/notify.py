"""Notifications benchmark: from a trigger in the store to the message at a local webhook, with a same-run baseline.

    python -m bench.notify [--rounds 200] [--batch 200] [--quick]

- One trigger a pass: an overdue event is committed, then one delivery pass (find since the cursor, queue, send
  through Apprise) runs; the figure is the time from the commit to the webhook's receipt, p50 / p95 / max. The job
  polls (``--interval``, default 10 s), so in production half an interval comes on top on average.
- A batch: ``--batch`` triggers committed at once, delivered by one pass; per message.
- The baseline: a bare POST of the same JSON body to the same receiver (requests, as Apprise sends it).

Uses REDIS_URL / DATABASE_URL when set; otherwise an embedded Redis and a SQLite file in a temporary folder.
Not a test: it asserts nothing and prints figures.
"""

from __future__ import annotations

import argparse
import os
import secrets
import time
from datetime import UTC, datetime, timedelta

import requests
from sqlalchemy import insert, select

from bench.common import bench_env, line, pct
from config.notify import NotifyConfig
from core import notify as rules
from ingest.notify import Notifier
from ingest.worker import Worker
from store.schema import Case, CaseEvent
from store.streams import Producer, ensure_groups
from tests.receivers import Webhook


def _case(env) -> int:
    ensure_groups(env.r, env.settings)
    grid = env.city.geography.areas("grid")[0]
    cat = next(c for c in env.city.categories.values() if not c.sensor_only)
    Producer(env.r, env.settings, source="bench").cases([{
        "source": "bench", "external_id": "n1", "event": "report", "occurred_at": datetime.now(UTC).isoformat(),
        "category": cat.code, "title": "基准案件", "grid_code": grid.code, "departments": ["cg"]}])
    w = Worker(env.city, env.settings, env.engine, env.r, name="bench")
    while w.run_once(50):
        pass
    with env.engine.connect() as conn:
        return conn.scalar(select(Case.id).where(Case.external_id == "n1"))


def _overdue(env, cid: int, keys: list[str]) -> None:
    now = datetime.now(UTC)
    with env.engine.begin() as conn:
        conn.execute(insert(CaseEvent), [{"case_id": cid, "event_key": k, "action": "overdue", "source": "bench",
                                          "occurred_at": now, "received_at": now, "status_after": "reported",
                                          "actor": "system"} for k in keys])


def _baseline(hook: Webhook, rounds: int) -> list[float]:
    url = f"http://127.0.0.1:{hook.port}{hook.path}"
    body = {"version": "1.0", "title": "【超期】基准", "message": "基准消息", "attachments": [], "type": "info"}
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        requests.post(url, json=body, timeout=5)
        out.append(hook.arrived[-1] - t0)
    return out


def _ms(values: list[float]) -> str:
    return (f"p50 {pct(values, 0.5) * 1000:8.2f} ms   p95 {pct(values, 0.95) * 1000:8.2f} ms   "
            f"max {max(values) * 1000:8.2f} ms   ({len(values)} messages)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.notify", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=200, help="single-trigger passes timed (default 200)")
    ap.add_argument("--batch", type=int, default=200, help="triggers delivered by one pass (default 200)")
    ap.add_argument("--quick", action="store_true", help="small sizes: a check that the benchmark runs")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.batch = 10, 20
    env = bench_env("notify")
    hook = Webhook(secrets.token_urlsafe(16)).start()
    try:
        print(f"Gridwatch notifications benchmark — {os.cpu_count()} cores, {env.engine.dialect.name}, "
              f"Redis {env.redis_label}", flush=True)
        cid = _case(env)
        channel = rules.Channel("bench", f"json://127.0.0.1:{hook.port}{hook.path}", rate_per_minute=1_000_000)
        cfg = NotifyConfig((channel,), (rules.Rule("bench", rules.Reason.OVERDUE, ("bench",)),), "http://bench")
        n = Notifier(env.settings, env.city, env.engine, env.r, cfg)
        n.run_once()  # the cursors start here
        base = _baseline(hook, args.rounds)
        single = []
        for i in range(args.rounds):
            _overdue(env, cid, [f"overdue@{i}"])
            t0 = time.perf_counter()
            n.run_once()
            single.append(hook.arrived[-1] - t0)
        _overdue(env, cid, [f"batch@{i}" for i in range(args.batch)])
        t0 = time.perf_counter()
        n.run_once(datetime.now(UTC) + timedelta(seconds=1))
        batch = time.perf_counter() - t0
        n.close()
        line("baseline: bare POST to the same webhook", _ms(base))
        line("trigger committed → message at the webhook", _ms(single))
        line(f"a batch of {args.batch} triggers in one pass", f"{batch * 1000 / args.batch:8.2f} ms a message   "
                                                             f"({batch:.2f} s in all)")
        line("ratio p95 (trigger → webhook / bare POST)", f"{pct(single, 0.95) / pct(base, 0.95):8.1f}×")
    finally:
        hook.stop()
        env.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
