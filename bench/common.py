"""What every benchmark needs: a throwaway environment on the real parts, and one way to print a figure."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import g

from config.city import load_city
from config.settings import Settings
from dashboard import auth
from dashboard.context import SETTINGS_KEY


def line(label: str, value: str, width: int = 52) -> None:
    print(f"  {label:<{width}} {value}", flush=True)


def pct(values: list[float], q: float) -> float:
    """The q-quantile of ``values`` as one of them (nearest rank; never beyond the largest)."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def rate(n: int, seconds: float, unit: str = "/s") -> str:
    return f"{n / seconds:>12,.0f} {unit}   ({n:,} in {seconds:.2f} s)"


@dataclass
class BenchEnv:
    tmp: Path
    settings: Settings
    r: Any
    engine: Any
    city: Any

    @property
    def redis_label(self) -> str:
        return "REDIS_URL" if os.environ.get("REDIS_URL") else "embedded"

    pg_schema: str | None = None

    def close(self) -> None:
        """Delete this run's Redis keys, its PostgreSQL schema and its temporary files."""
        keys = list(self.r.scan_iter(f"{self.settings.stream_prefix}:*", count=1000))
        for i in range(0, len(keys), 1000):
            self.r.delete(*keys[i : i + 1000])
        self.engine.dispose()
        if self.pg_schema:
            drop_pg_schema(self.settings.database_url, self.pg_schema)
        shutil.rmtree(self.tmp, ignore_errors=True)


def pg_schema_url(base_url: str, name: str) -> tuple[str, str]:
    """A throwaway schema in the PostgreSQL database at ``base_url``: (its name, a URL whose search_path is it)."""
    from sqlalchemy import create_engine

    schema = f"bench_{name[:8]}_{uuid.uuid4().hex[:8]}"
    eng = create_engine(Settings(database_url=base_url).sqlalchemy_url)
    with eng.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    eng.dispose()
    sep = "&" if "?" in base_url else "?"
    return schema, f"{base_url}{sep}options=-csearch_path%3D{schema}"


def drop_pg_schema(url: str, schema: str) -> None:
    from sqlalchemy import create_engine

    eng = create_engine(Settings(database_url=url).sqlalchemy_url)
    with eng.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    eng.dispose()


def bench_env(name: str, **overrides: Any) -> BenchEnv:
    """REDIS_URL / DATABASE_URL when set, else an embedded Redis and a SQLite file in a temporary folder.

    Keys get a prefix of their own, so a benchmark never touches a running system's data.
    """
    from config.city import get_city
    from store.services import get_engine, get_redis, migrate, start_embedded_redis

    tmp = Path(tempfile.mkdtemp(prefix=f"gridwatch-{name}-"))
    redis_url = os.environ.get("REDIS_URL") or start_embedded_redis(tmp)
    db_url = overrides.pop("database_url", None) or os.environ.get("DATABASE_URL") or f"sqlite:///{tmp / 'bench.db'}"
    schema = None
    if db_url.startswith("postgres"):  # a schema of its own, dropped at close: never the tables of a running system
        schema, db_url = pg_schema_url(db_url, name)
    settings = Settings(redis_url=redis_url, database_url=db_url, var_dir=tmp,
                        stream_prefix=name[:6] + uuid.uuid4().hex[:6], worker_block_ms=20, **overrides)
    r = get_redis(settings)
    engine = get_engine(settings)
    migrate(engine)
    return BenchEnv(tmp, settings, r, engine, get_city(), schema)


@contextmanager
def viewing(app, role: str = "admin", area: str | None = None, path: str = "/"):
    """A request context of ``app`` as a logged-in viewer of ``role`` over ``area`` (default the district): for
    timing a page's callbacks directly, as the browser's request would run them after the login gate."""
    with app.server.test_request_context(path):
        district = load_city(app.server.config[SETTINGS_KEY].city_dir).geography.district.code
        g.gw_viewer = auth.Viewer(f"bench-{role}", role, area or district, None)
        g.gw_csrf = "bench"
        yield
