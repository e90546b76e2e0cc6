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
