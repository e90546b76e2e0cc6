"""``python -m ingest demo``: the whole system in the foreground, for one machine.

Starts the embedded Redis (unless REDIS_URL is set), migrates the database, then runs the
worker, the scheduler (SLA sweep, device watch, Open311 polls), the simulator, the MQTT feed when
MQTT_URL is set, and the web app (gunicorn) as child processes; restarts a
child that dies, and the embedded Redis when it dies (on the same address, from its append-only file); Ctrl-C (or SIGTERM) stops every child cleanly, then Redis (saving its data).

Feed tokens need no set-up either: without FEED_TOKENS the demo uses ``VAR_DIR/feed-tokens.json``, written once
with a random token for each of :data:`DEMO_SOURCES` (mode 0600), gives them to its children as FEED_TOKENS and
prints them at start, so HTTP pushes and MQTT devices can be pointed at it at once. The simulator publishes to
the streams directly and needs none.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select

from config.settings import ROOT, Settings, feed_tokens, get_settings
from store.schema import Case
from store.services import ServiceError, get_engine, migrate, redis_url, restart_embedded_redis_if_dead

log = logging.getLogger("gridwatch.demo")

TOKENS_FILE = "feed-tokens.json"
# The sources the demo makes tokens for: HTTP push without X-Gridwatch-Source, the README's curl example, MQTT.
DEMO_SOURCES = ("push", "citizen", "mqtt")


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
        Child("router", [py, "-m", "ingest", "router"]),
        Child("notify", [py, "-m", "ingest", "notify"]),
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


def demo_tokens(settings: Settings) -> tuple[dict[str, str], Path | None]:
    """The demo's feed tokens and the file they are kept in: FEED_TOKENS when set (no file), else
    VAR_DIR/feed-tokens.json, written with random tokens (mode 0600) the first time. ValueError names the file
    and the fix when it cannot be used."""
    if settings.feed_tokens:
        return {source: settings.feed_token(source) for source in settings.feed_tokens}, None
    path = Path(settings.var_dir) / TOKENS_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tokens = {source: secrets.token_urlsafe(32) for source in DEMO_SOURCES}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(tokens, f, indent=2)
            f.write("\n")
        log.info("feed tokens: made new ones for %s in %s", ", ".join(DEMO_SOURCES), path)
        return tokens, path
    try:
        tokens = feed_tokens(path.read_text(encoding="utf-8"), name=str(path))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{exc} — fix it, or delete {path} to have new tokens made") from None
    return {source: str(token) for source, token in tokens.items()}, path


def _print_tokens(tokens: dict[str, str], path: Path | None, settings: Settings) -> None:
    """The demo's tokens on the terminal (printed, never logged), with how to use them."""
    if path is None:
        print(f"feed tokens: FEED_TOKENS (sources: {', '.join(sorted(tokens))})", flush=True)
        return
    width = max(map(len, tokens))
    lines = [f"feed tokens (from {path}; FEED_TOKENS overrides them):"]
    lines += [f"  {source:<{width}}  {token}" for source, token in sorted(tokens.items())]
    if "citizen" in tokens:
        lines.append(f"  push: curl -X POST http://{settings.host}:{settings.port}/api/v1/ingest/cases "
                     "-H 'Content-Type: application/json' -H 'X-Gridwatch-Source: citizen' "
                     "-H 'Authorization: Bearer <the citizen token>' -d '[...]'")
    if "mqtt" in tokens:
        lines.append('  MQTT devices: put the mqtt token in each reading, {"token": "<the mqtt token>", "value": ...}')
    print("\n".join(lines), flush=True)


def _store_is_empty() -> bool:
    with get_engine().connect() as conn:
        return not conn.scalar(select(func.count()).select_from(select(Case.id).limit(1).subquery()))


def run(args) -> int:
    """Start Redis (embedded unless REDIS_URL), the schema and every child; keep them up until Ctrl-C or SIGTERM."""
    settings = get_settings()
    try:
        tokens, tokens_file = demo_tokens(settings)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    url = redis_url(settings)  # starts the embedded server if REDIS_URL is unset
    log.info("Redis: %s", "embedded (" + url + ")" if not settings.redis_url else "REDIS_URL")
    log.info("database: %s", settings.sqlalchemy_url.split("@")[-1])
    migrate()
    backfill = 0.0
    if not args.no_simulator and args.backfill and _store_is_empty():
        backfill = args.backfill
        log.info("empty store: the simulator first publishes the last %g hours of history", backfill)
    env = {**os.environ, "REDIS_URL": url, "PYTHONUNBUFFERED": "1", "FEED_TOKENS": json.dumps(tokens)}
    _print_tokens(tokens, tokens_file, settings)
    kids = children(args, backfill)
    for c in kids:
        c.start(env)
    log.info("Gridwatch is up: http://%s:%s  (health: /healthz; Ctrl-C stops everything)", settings.host, settings.port)
    _demo_accounts(settings, env)
    _watch(settings, kids, env)
    _stop(kids)
    return 0


def _demo_accounts(settings: Settings, env: dict[str, str]) -> None:
    accounts = subprocess.run([sys.executable, "-m", "dashboard.auth", "demo", "--base",
                               f"http://{settings.host}:{settings.port}"], env=env, capture_output=True, text=True)
    if accounts.returncode == 0:
        print(accounts.stdout, flush=True)
    else:
        log.error("the demo accounts could not be made: %s", accounts.stderr.strip()[-500:])


def _watch(settings: Settings, kids: list[Child], env: dict[str, str]) -> None:
    """Until a stop signal: restart the embedded Redis and any child that exited, each with its own backoff."""
    stopping = False

    def stop(signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    redis_backoff, redis_next = 1.0, 0.0
    while not stopping:
        time.sleep(0.5)
        now = time.monotonic()
        if not settings.redis_url and now >= redis_next:
            try:
                if restart_embedded_redis_if_dead(settings.var_dir):
                    redis_backoff = 1.0
            except ServiceError as exc:
                log.error("%s; trying again in %.0f s", exc, redis_backoff)
                redis_next = now + redis_backoff
                redis_backoff = min(redis_backoff * 2, 30)
        for c in kids:
            if not stopping:
                _keep_up(c, now, env)


def _keep_up(c: Child, now: float, env: dict[str, str]) -> None:
    """Note a child that exited and start it again once its backoff has passed (never with --backfill again)."""
    if c.proc is not None and c.proc.poll() is not None:
        log.warning("%s exited with %s; restarting in %.0f s", c.name, c.proc.returncode, c.backoff)
        c.next_start = now + c.backoff
        c.backoff = 1.0 if now - c.started > 60 else min(c.backoff * 2, 30)
        c.proc = None
    if c.proc is None and now >= c.next_start:
        if "--backfill" in c.argv:
            c.argv = c.argv[: c.argv.index("--backfill")]
        c.restarts += 1
        c.start(env)


def _stop(kids: list[Child]) -> None:
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
