"""The worker's heartbeat in Redis (real Redis)."""

import json
import threading

from ingest.worker import Worker


def test_worker_heartbeat_present_while_running_and_gone_after(settings, r, engine, city):
    w = Worker(city, settings, engine, r, name="hb-test")
    keys = w.applier.keys
    t = threading.Thread(target=w.run, daemon=True)
    t.start()
    try:
        for _ in range(200):
            if r.exists(keys.worker("hb-test")):
                break
            w.stop.wait(0.05)
        beat = json.loads(r.get(keys.worker("hb-test")))
        assert beat["name"] == "hb-test" and beat["failing"] == 0
        assert 0 < r.ttl(keys.worker("hb-test")) <= 15
    finally:
        w.stop.set()
        t.join(30)
    assert not r.exists(keys.worker("hb-test"))
    assert json.loads(r.hget(keys.workers, "hb-test"))["name"] == "hb-test"


# ---- /healthz: honest about applying, discreet for anonymous callers -------------------------------------------

import time  # noqa: E402
from contextlib import contextmanager  # noqa: E402

from sqlalchemy import create_engine  # noqa: E402

from store.streams import Producer, StreamNames, ensure_groups  # noqa: E402
from tests import accounts  # noqa: E402


@contextmanager
def running(worker):
    t = threading.Thread(target=worker.run, daemon=True)
    t.start()
    try:
        for _ in range(200):
            if worker.r.exists(worker.applier.keys.worker(worker.name)):
                break
            time.sleep(0.05)
        yield worker
    finally:
        worker.stop.set()
        t.join(30)


def _reading(i: int) -> dict:
    return {"source": "sim", "device_id": f"smk-{i}", "type": "smoke", "value": 0.1, "ts": "2026-12-02T08:00:00+08:00"}


def test_anonymous_healthz_says_status_and_reasons_only_and_a_viewer_gets_the_details(settings, r, engine, city):
    from app import create_app

    app = create_app(settings)
    anon = app.server.test_client().get("/healthz")
    assert set(anon.get_json()) == {"status", "reasons"}
    text = anon.get_data(as_text=True)
    assert "unix://" not in text and "sqlite" not in text and str(settings.var_dir) not in text
    viewer = accounts.client(settings, app=app).get("/healthz").get_json()
    assert {"streams", "redis", "database", "workers"} <= set(viewer)


def test_no_worker_is_degraded_and_not_ready_and_a_running_one_is_ready(settings, r, engine, city):
    from app import create_app

    c = create_app(settings).server.test_client()
    ensure_groups(r, settings)
    body = c.get("/healthz").get_json()
    assert body["status"] == "degraded" and any("no worker is running" in x for x in body["reasons"])
    ready = c.get("/healthz/ready")
    assert ready.status_code == 503 and ready.get_json()["reasons"] == ["no worker is running (no heartbeat)"]
    assert c.get("/healthz/live").status_code == 200
    with running(Worker(city, settings, engine, r, name="hz-1")):
        assert c.get("/healthz/ready").status_code == 200
        body = c.get("/healthz").get_json()
        assert not any("worker" in x for x in body["reasons"]), body


def test_failing_batches_are_degraded(settings, r, engine, city, tmp_path):
    from app import create_app

    c = create_app(settings).server.test_client()
    gone = create_engine(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")  # every statement fails
    with running(Worker(city, settings, gone, r, name="hz-bad")):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            body = c.get("/healthz").get_json()
            if any("hz-bad" in x and "failed batches" in x for x in body["reasons"]):
                break
            time.sleep(0.2)
        assert body["status"] == "degraded" and any("hz-bad" in x for x in body["reasons"]), body


def test_an_entry_pending_too_long_and_nothing_applied_are_degraded(settings, r, engine, city):
    from app import create_app

    s = settings.model_copy(update={"health_pending_max_s": 0.5, "health_stale_s": 0.5})
    c = create_app(s).server.test_client()
    names = StreamNames.of(s)
    ensure_groups(r, s)
    Producer(r, s, source="sim").sensors([_reading(i) for i in range(3)])
    r.xreadgroup(s.consumer_group, "stuck", {names.sensors: ">"}, count=1)  # read, never applied
    time.sleep(1.0)
    reasons = c.get("/healthz").get_json()["reasons"]
    assert any(x.startswith("stream sensors: an entry has waited") for x in reasons), reasons
    assert any("nothing applied" in x and "feeds are publishing" in x for x in reasons), reasons
