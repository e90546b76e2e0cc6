"""``python -m ingest demo``: the whole system in the foreground, for one machine.

Starts the embedded Redis (unless REDIS_URL is set), migrates the database, then runs the
worker, the scheduler (SLA sweep, device watch, Open311 polls), the simulator, the MQTT feed when
MQTT_URL is set, and the web app (gunicorn) as child processes; restarts a
child that dies; Ctrl-C (or SIGTERM) stops every child cleanly, then Redis (saving its data).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from config.settings import ROOT, get_settings

log = logging.getLogger("gridwatch.demo")


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen | None = None
    restarts: int = 0
    started: float = 0.0
    backoff: float = 1.0
    next_start: float = field(default=0.0)

    def start(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=env, start_new_session=True)
        self.started = time.monotonic()
        log.info("started %s (pid %s)", self.name, self.proc.pid)


def children(args, backfill_hours: float = 0) -> list[Child]:
    py = sys.executable
    settings = get_settings()
    sim = [py, "-m", "ingest", "simulate", "--rate", str(args.rate), "--speed", str(args.speed)]
    if backfill_hours:
        sim += ["--backfill", str(backfill_hours)]
    out = [
        Child("worker", [py, "-m", "ingest", "worker"]),
        Child("scheduler", [py, "-m", "ingest", "scheduler"]),
        Child("simulator", sim),
        Child("web", [py, "-m", "gunicorn", "app:server", "--bind", f"{settings.host}:{settings.port}",
                      "--workers", str(args.web_workers), "--threads", "4", "--timeout", "60",
                      "--access-logfile", "-" if args.access_log else "/dev/null"]),
    ]
    if settings.mqtt_url:
        out.append(Child("mqtt", [py, "-m", "ingest", "mqtt"]))
    if args.no_simulator:
        out = [c for c in out if c.name != "simulator"]
    return out


def _store_is_empty() -> bool:
    from sqlalchemy import func, select

    from config.services import get_engine
    from core.models import Case

    with get_engine().connect() as conn:
        return not conn.scalar(select(func.count()).select_from(select(Case.id).limit(1).subquery()))


def run(args) -> int:
    from config.services import migrate, redis_url

    settings = get_settings()
    url = redis_url(settings)  # starts the embedded server if REDIS_URL is unset
    log.info("Redis: %s", "embedded (" + url + ")" if not settings.redis_url else "REDIS_URL")
    log.info("database: %s", settings.sqlalchemy_url.split("@")[-1])
    migrate()
    backfill = 0.0
    if not args.no_simulator and args.backfill and _store_is_empty():
        backfill = args.backfill
        log.info("empty store: the simulator first publishes the last %g hours of history", backfill)
    env = {**os.environ, "REDIS_URL": url, "PYTHONUNBUFFERED": "1"}
    kids = children(args, backfill)
    for c in kids:
        c.start(env)
    log.info("Gridwatch is up: http://%s:%s  (health: /healthz; Ctrl-C stops everything)", settings.host, settings.port)
    accounts = subprocess.run([sys.executable, "-m", "dashboard.auth", "demo", "--base",
                               f"http://{settings.host}:{settings.port}"], env=env, capture_output=True, text=True)
    if accounts.returncode == 0:
        print(accounts.stdout, flush=True)
    else:
        log.error("the demo accounts could not be made: %s", accounts.stderr.strip()[-500:])

    stopping = False

    def stop(signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    while not stopping:
        time.sleep(0.5)
        now = time.monotonic()
        for c in kids:
            if c.proc is not None and c.proc.poll() is not None:
                log.warning("%s exited with %s; restarting in %.0f s", c.name, c.proc.returncode, c.backoff)
                c.next_start = now + c.backoff
                c.backoff = 1.0 if now - c.started > 60 else min(c.backoff * 2, 30)
                c.proc = None
            if c.proc is None and now >= c.next_start and not stopping:
                if "--backfill" in c.argv:
                    c.argv = c.argv[: c.argv.index("--backfill")]
                c.restarts += 1
                c.start(env)
    log.info("stopping…")
    for c in kids:
        if c.proc is not None and c.proc.poll() is None:
            c.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for c in kids:
        if c.proc is None:
            continue
        try:
            c.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in time; killing it", c.name)
            c.proc.kill()
    log.info("stopped")
    return 0
