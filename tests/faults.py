"""The fault suite's parts: the whole system as `make demo` runs it, a client that pushes known case sequences and
keeps a log of what was accepted, faults done to real processes, and the count that compares the log with SQL.

- :class:`System` runs ``python -m ingest demo --no-simulator`` in its own VAR_DIR on a free port (its own embedded
  Redis, SQLite or a given DATABASE_URL) and finds its processes by that VAR_DIR in their environment.
- :class:`Load` pushes, over HTTP with the push token, a few thousand case events a minute: each case walks
  report → register → dispatch → accept → resolve → close, one event per request, the next only once the last was
  accepted (a source in order). Whatever is not answered "accepted" is sent again, as a real source would.
- :func:`count` compares the client's log with SQL: accepted, stored, lost, doubled, wrong status, dead letters.
- :class:`PostgresServer` is a PostgreSQL of the test's own (initdb/pg_ctl on a free port), stopped and started at
  will; the machine's server is never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
import requests
from sqlalchemy import create_engine, text

from config.settings import ROOT

SEQUENCE = ("report", "register", "dispatch", "accept", "resolve", "close")
STATUS_AFTER = {"report": "reported", "register": "registered", "dispatch": "dispatched", "accept": "accepted",
                "resolve": "resolved", "close": "closed"}
SOURCE = "faultload"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    out = {}
    for item in raw.split(b"\0"):
        k, _, v = item.partition(b"=")
        if k:
            out[k.decode(errors="replace")] = v.decode(errors="replace")
    return out


def _cmdline(pid: int) -> list[str]:
    try:
        return [x.decode(errors="replace") for x in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if x]
    except OSError:
        return []


def _ppid(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return -1
    return int(stat.rsplit(")", 1)[1].split()[1])


class System:
    """The whole system as `make demo` runs it (no simulator), in ``root``."""

    def __init__(self, root: Path, env: dict[str, str] | None = None):
        self.root = root
        self.var = root / "var"
        self.port = free_port()
        self.token = secrets.token_urlsafe(24)
        self.env = {**os.environ, "VAR_DIR": str(self.var), "PORT": str(self.port), "HOST": "127.0.0.1",
                    "FEED_TOKENS": json.dumps({SOURCE: self.token}), "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "INFO",
                    **(env or {})}
        for k in ("REDIS_URL", "DATABASE_URL", "STREAM_PREFIX"):
            if k not in (env or {}):
                self.env.pop(k, None)
        self.log = root / "system.log"
        self.proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> None:
        self.var.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "ingest", "demo", "--no-simulator", "--backfill", "0"],
                                         cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the system exited with {self.proc.returncode}:\n{self.tail()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.base + "/healthz", timeout=2).status_code < 600 and self.pids("worker"):
                    return
            time.sleep(0.3)
        raise RuntimeError(f"the system did not come up in {timeout} s:\n{self.tail()}")

    def tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def processes(self) -> list[int]:
        """Every process of this system (they all carry its VAR_DIR)."""
        mine = str(self.var)
        out = []
        for p in Path("/proc").iterdir():
            if p.name.isdigit() and int(p.name) != os.getpid() and _environ(int(p.name)).get("VAR_DIR") == mine:
                out.append(int(p.name))
        return out

    def pids(self, part: str) -> list[int]:
        """The processes of one part: worker, scheduler, web (the gunicorn master), web-worker, redis."""
        if part == "redis":  # its process title overwrites its environment: its pid file says which it is
            try:
                pid = int((self.var / "redis" / "redis.pid").read_text())
            except (OSError, ValueError):
                return []
            return [pid] if "redis-server" in " ".join(_cmdline(pid)) else []
        sup = self.proc.pid if self.proc else -1
        out = []
        for pid in self.processes():
            cmd = " ".join(_cmdline(pid))
            gunicorn = "gunicorn" in cmd
            if {"worker": f"-m ingest {part}" in cmd, "scheduler": f"-m ingest {part}" in cmd,
                    "web": gunicorn and _ppid(pid) == sup, "web-worker": gunicorn and _ppid(pid) != sup}.get(part):
                out.append(pid)
        return out

    def wait_for(self, part: str, other_than: set[int] = frozenset(), timeout: float = 60) -> int:
        """Wait until a process of ``part`` runs that is none of ``other_than``; its pid."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            new = [p for p in self.pids(part) if p not in other_than]
            if new:
                return new[0]
            time.sleep(0.2)
        raise AssertionError(f"no new {part} process within {timeout} s:\n{self.tail()}")

    def redis(self) -> redis.Redis:
        url = self.env.get("REDIS_URL") or (self.var / "redis.url").read_text().strip()
        return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)

    def database_url(self) -> str:
        return self.env.get("DATABASE_URL") or f"sqlite:///{self.var / 'gridwatch.db'}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for pid in [*self.processes(), *self.pids("redis")]:  # whatever is left (a test may have killed the supervisor's view of it)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


@dataclass
class Load:
    """Pushes case sequences at about ``rate`` events a second from ``threads`` clients until stopped."""

    base: str
    token: str
    city: object
    rate: float = 50.0
    threads: int = 6
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    accepted: dict[tuple[str, str], float] = field(default_factory=dict)  # (external id, event id) → when
    last: dict[str, str] = field(default_factory=dict)  # external id → its last accepted action
    refused: dict[int, int] = field(default_factory=dict)  # HTTP status (0: no answer) → how many times
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)
    _next: float = 0.0

    def start(self) -> None:
        self._next = time.monotonic()
        for i in range(self.threads):
            t = threading.Thread(target=self._client, args=(i,), daemon=True)
            t.start()
            self._workers.append(t)

    def stop(self, grace: float = 60) -> None:
        """Stop starting cases; each client finishes the event it is sending (until accepted, at most ``grace``)."""
        self._stop.set()
        for t in self._workers:
            t.join(grace)

    def _pace(self) -> None:
        with self._lock:
            self._next = max(self._next + 1 / self.rate, time.monotonic() - 1)
            wait = self._next - time.monotonic()
        if wait > 0:
            time.sleep(wait)

    def _client(self, index: int) -> None:
        rnd = random.Random(f"{self.tag}-{index}")
        grids = self.city.geography.areas("grid")
        cats = [c for c in self.city.categories.values() if not c.sensor_only]
        depts = sorted(self.city.departments)
        session = requests.Session()
        headers = {"X-Gridwatch-Source": SOURCE, "Authorization": f"Bearer {self.token}",
                   "Content-Type": "application/json"}
        active: list[list] = []  # [external id, next step, start time]
        n = 0
        while True:
            if not self._stop.is_set() and len(active) < 4:
                ext = f"{self.tag}-{index}-{n}"
                n += 1
                active.append([ext, 0, datetime.now(UTC) - timedelta(minutes=30), rnd.choice(grids),
                               rnd.choice(cats), rnd.choice(depts)])
            if not active:
                return
            case = rnd.choice(active)
            ext, step, t0, grid, cat, dept = case
            action = SEQUENCE[step]
            rec = {"source": SOURCE, "external_id": ext, "event": action, "event_id": f"{action}-{step}",
                   "occurred_at": (t0 + timedelta(minutes=step)).isoformat()}
            if action == "report":
                lon, lat = grid.centroid
                rec.update(category=cat.code, title=f"故障演练 {ext}", lon=lon, lat=lat)
            elif action == "dispatch":
                rec["departments"] = [dept]
            self._pace()
            give_up = None
            while True:  # the same event again until it is accepted: a source in order
                status = 0
                try:
                    resp = session.post(self.base + "/api/v1/ingest/cases", data=json.dumps([rec]), headers=headers,
                                        timeout=10)
                    status = resp.status_code
                    if status == 200 and resp.json()["items"][0]["status"] == "accepted":
                        break
                except (requests.RequestException, ValueError, KeyError):
                    pass
                with self._lock:
                    self.refused[status] = self.refused.get(status, 0) + 1
                if self._stop.is_set():
                    give_up = give_up or time.monotonic() + 30
                    if time.monotonic() > give_up:
                        active.remove(case)
                        break
                time.sleep(0.2)
            if case not in active:
                continue
            with self._lock:
                self.accepted[(ext, rec["event_id"])] = time.monotonic()
                self.last[ext] = action
            case[1] += 1
            if case[1] == len(SEQUENCE) or self._stop.is_set():
                active.remove(case)  # done, or stopping: it stays where it is (its status is known)

    def accepted_before(self, moment: float) -> set[tuple[str, str]]:
        with self._lock:
            return {k for k, at in self.accepted.items() if at <= moment}


def stored_events(database_url: str) -> list[tuple[str, str]]:
    """(external id, event key) of every stored event of the load's source, doubles included."""
    eng = create_engine(_sqlalchemy_url(database_url))
    try:
        with eng.connect() as conn:
            return [tuple(r) for r in conn.execute(text(
                "SELECT c.external_id, e.event_key FROM case_events e JOIN cases c ON c.id = e.case_id "
                "WHERE c.source = :s"), {"s": SOURCE})]
    finally:
        eng.dispose()


def stored_statuses(database_url: str) -> dict[str, str]:
    eng = create_engine(_sqlalchemy_url(database_url))
    try:
        with eng.connect() as conn:
            return dict(conn.execute(text("SELECT external_id, status FROM cases WHERE source = :s"), {"s": SOURCE}).all())
    finally:
        eng.dispose()


def _sqlalchemy_url(url: str) -> str:
    from config.settings import Settings

    return Settings(database_url=url).sqlalchemy_url


def wait_stored(database_url: str, keys: set[tuple[str, str]], timeout: float) -> float | None:
    """Seconds until every one of ``keys`` is stored (None: not within ``timeout``)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if keys <= set(stored_events(database_url)):
                return time.monotonic() - t0
        except Exception:  # noqa: BLE001 - the database may still be coming back
            pass
        time.sleep(0.25)
    return None


@dataclass
class Count:
    fault: str
    accepted: int
    stored: int
    lost: int
    doubled: int
    wrong_status: int
    dead: int
    recover_s: float | None

    def row(self) -> str:
        rec = "not recovered" if self.recover_s is None else f"{self.recover_s:.1f}"
        return (f"| {self.fault} | {self.accepted:,} | {self.stored:,} | {self.lost:,} | {self.doubled:,} | "
                f"{self.wrong_status:,} | {self.dead:,} | {rec} |")


TABLE_HEAD = ("| fault | accepted | stored | lost | doubled | wrong status | dead letters | s to recover |\n"
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")


def count(fault: str, load: Load, system: System, recover_s: float | None) -> Count:
    """The client's log against SQL, computed from both sides independently."""
    rows = stored_events(system.database_url())
    stored = set(rows)
    accepted = set(load.accepted)
    statuses = stored_statuses(system.database_url())
    wrong = sum(1 for ext, action in load.last.items() if statuses.get(ext) != STATUS_AFTER[action])
    r = system.redis()
    dead = 0
    for _id, fields in r.xrange(f"{system.env.get('STREAM_PREFIX', 'gw')}:stream:dead"):
        if SOURCE.encode() in fields.get(b"raw", b"") or fields.get(b"source") == SOURCE.encode():
            dead += 1
    return Count(fault, len(accepted), len(accepted & stored), len(accepted - stored), len(rows) - len(stored),
                 wrong, dead, recover_s)


def live_matches_sql(system: System, city) -> list[str]:
    """Where the live counters differ from an SQL recount (district and streets): an empty list when they agree."""
    import pandas as pd

    eng = create_engine(_sqlalchemy_url(system.database_url()))
    try:
        with eng.connect() as conn:
            df = pd.read_sql(text("SELECT street_code, status, overdue FROM cases"), conn)
    finally:
        eng.dispose()
    open_ = df.status.isin(["reported", "registered", "dispatched", "accepted", "handling"])
    r = system.redis()
    prefix = system.env.get("STREAM_PREFIX", "gw")
    problems = []
    checks = [(city.county_code, df.index == df.index)] + [
        (s.code, df.street_code == s.code) for s in city.geography.areas("street")]
    for code, mask in checks:
        live = {k.decode(): int(v) for k, v in r.hgetall(f"{prefix}:live:area:{code}").items()}
        want = {"total": int(mask.sum()), "open": int((mask & open_).sum())}
        for status, n in df[mask].status.value_counts().items():
            want[f"s:{status}"] = int(n)
        for k, v in want.items():
            if live.get(k, 0) != v:
                problems.append(f"{code} {k}: live {live.get(k, 0)}, SQL {v}")
    return problems


class PostgresServer:
    """A PostgreSQL of the test's own: initdb in ``root``, on a free port, run as the postgres user."""

    def __init__(self):
        import tempfile

        # Its own folder outside pytest's (those are private to root, and PostgreSQL runs as postgres).
        self.root = Path(tempfile.mkdtemp(prefix="gridwatch-pg-"))
        self.root.chmod(0o755)
        self.data = self.root / "pgdata"
        self.port = free_port()
        self.bin = self._bindir()

    @staticmethod
    def _bindir() -> Path | None:
        found = shutil.which("pg_ctl")
        if found:
            return Path(found).resolve().parent
        versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        return versions[-1].parent if versions else None

    @property
    def available(self) -> bool:
        return self.bin is not None and (os.geteuid() != 0 or shutil.which("runuser") is not None)

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=120)

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.root}'\n"
                    "fsync = on\n")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "pg.log"), "-w", "-t", "60", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
