"""While Redis or the SQL database is away, requests answer 503 with Retry-After and a message naming the fix —
never a 500 — and a push is accepted again as soon as Redis is back."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import orjson
import pytest

from store import services
from tests import accounts
from tests.faults import free_port


@pytest.fixture
def own_redis(tmp_path):
    """A Redis server of the test's own, which the test may kill: (url, kill, start)."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    procs = []

    def start():
        procs.append(subprocess.Popen([services._redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
                                       "--dir", str(tmp_path), "--appendonly", "yes"], stdout=subprocess.DEVNULL))
        deadline = time.monotonic() + 10
        while not services._alive(url) and time.monotonic() < deadline:
            time.sleep(0.05)

    def kill():
        os.kill(procs[-1].pid, signal.SIGKILL)
        procs[-1].wait()

    start()
    yield url, kill, start
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def _push(client, headers, ext: str):
    rec = {"external_id": ext, "event": "report", "occurred_at": "2026-11-22T09:31:00+08:00", "category": "0101",
           "title": "暴露垃圾", "lon": 113.93, "lat": 22.76}
    return client.post("/api/v1/ingest/cases", data=orjson.dumps([rec]), content_type="application/json",
                       headers=headers)


def test_push_answers_503_with_retry_after_while_redis_is_away(settings, engine, own_redis, push_headers, caplog):
    url, kill, start = own_redis
    s = settings.model_copy(update={"redis_url": url})
    c = accounts.client(s)
    headers = push_headers()
    assert _push(c, headers, "o-1").status_code == 200
    kill()
    for path in ("cases", "sensors"):
        resp = c.post(f"/api/v1/ingest/{path}", data=b"[{}]", content_type="application/json", headers=headers)
        assert resp.status_code == 503, resp.get_data(as_text=True)
        assert int(resp.headers["Retry-After"]) > 0
        body = resp.get_json()
        assert body["unavailable"] == "redis" and "REDIS_URL" in body["fix"] and "send again" in body["fix"]
    # A logged-in read needs its session from Redis: the same answer, not a 500.
    resp = c.get("/api/v1/summary")
    assert resp.status_code == 503 and resp.headers["Retry-After"]
    assert "Traceback" not in caplog.text
    start()
    deadline = time.monotonic() + 20
    while (resp := _push(c, headers, "o-2")).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert resp.status_code == 200 and resp.get_json()["accepted"] == 1


def test_a_read_answers_503_while_the_database_is_away(settings, r, engine, tmp_path):
    c = accounts.client(settings)
    assert c.get("/api/v1/cases").status_code == 200
    db = engine.url.database
    if engine.dialect.name != "sqlite":
        pytest.skip("the SQL outage is made by moving the SQLite file away")
    engine.dispose()
    os.rename(db, db + ".away")
    os.chmod(tmp_path, 0o500)  # nor can a new one be created
    try:
        from store.services import get_engine

        get_engine(settings).dispose()
        resp = c.get("/api/v1/cases")
        assert resp.status_code == 503, resp.get_data(as_text=True)[:300]
        assert resp.headers["Retry-After"] and resp.get_json()["unavailable"] == "database"
    finally:
        os.chmod(tmp_path, 0o700)
        os.rename(db + ".away", db)
