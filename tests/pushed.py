"""Case records as a push client sends them, and draining what was pushed through a worker."""

from __future__ import annotations

import contextlib
import threading
from datetime import UTC, datetime, timedelta

from ingest.worker import Worker
from store.streams import ensure_groups

NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def report(ext: str, city, **extra) -> dict:
    grid = city.geography.areas("grid")[5]
    cat = next(c for c in city.categories.values() if not c.sensor_only)
    rec = {"source": "push-test", "external_id": ext, "event": "report", "occurred_at": NOW.isoformat(),
           "category": cat.code, "title": f"推送案件 {ext}", "grid_code": grid.code}
    rec.update(extra)
    return rec


def drain(city, settings, engine, r) -> None:
    ensure_groups(r, settings)
    worker = Worker(city, settings, engine, r, name="t")
    while worker.run_once(50):
        pass


@contextlib.contextmanager
def worker_running(city, settings, engine, r, name: str = "t"):
    """A worker applying the streams in a thread while the block runs."""
    ensure_groups(r, settings)
    worker = Worker(city, settings, engine, r, name=name)
    stop = threading.Event()

    def work():
        while not stop.is_set():
            worker.run_once(50)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    try:
        yield worker
    finally:
        stop.set()
        t.join(10)
