"""Where every route and callback finds its settings, Redis, SQL engine and city.

The Flask server carries the settings (``server.config[SETTINGS_KEY]``), so a test can build an
app with its own settings. Connections are made lazily on first use (the embedded Redis is
started by ``store.services`` then), and the schema is migrated once per process before the
first SQL read.
"""

from __future__ import annotations

import threading

import redis
from flask import current_app
from sqlalchemy.engine import Engine

from config.city import City, load_city
from config.settings import Settings, get_settings
from store.services import get_engine, get_redis, migrate

SETTINGS_KEY = "GRIDWATCH_SETTINGS"

_migrated: set[str] = set()
_migrate_lock = threading.Lock()


def settings() -> Settings:
    """The settings of the app serving the current request (defaults outside a request)."""
    try:
        found = current_app.config.get(SETTINGS_KEY)
    except RuntimeError:  # no application context
        found = None
    return found or get_settings()


def redis_client() -> redis.Redis:
    return get_redis(settings())


def engine() -> Engine:
    """The SQL engine, migrated to the newest schema once per process and database."""
    s = settings()
    eng = get_engine(s)
    url = s.sqlalchemy_url
    if url not in _migrated:
        with _migrate_lock:
            if url not in _migrated:
                migrate(eng)
                _migrated.add(url)
    return eng


def city() -> City:
    return load_city(settings().city_dir)


def own_prefixes() -> tuple[str, ...] | None:
    """The city's own area codes start so (its county code): a 15-digit number starting so is a place, not an ID."""
    try:
        return (city().county_code,)
    except Exception:  # noqa: BLE001 - no city configured: 15-digit numbers are left alone (never over-masked)
        return None
