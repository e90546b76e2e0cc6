"""The embedded Redis keeps what it acknowledged: append-only file and save points, a SIGKILL loses nothing, the
consumer group and its pending entries survive, and it is restarted on the same address. An external server that
persists nothing is warned about."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import redis

from config.settings import Settings
from store import services
from tests.faults import free_port


def test_the_embedded_redis_persists_and_comes_back_from_a_sigkill_with_every_acknowledged_entry(tmp_path: Path):
    var = tmp_path / "var"
    url = services.start_embedded_redis(var)
    r = redis.Redis.from_url(url)
    assert r.config_get("appendonly")["appendonly"] == "yes"
    assert r.config_get("appendfsync")["appendfsync"] == "everysec"
    assert r.config_get("save")["save"].split() == ["900", "1", "300", "10", "60", "1000"]
    r.xgroup_create("s", "g", id="0", mkstream=True)
    ids = [r.xadd("s", {"d": str(i)}) for i in range(5000)]  # each answered: acknowledged
    r.xreadgroup("g", "c1", {"s": ">"}, count=300)  # read, never acknowledged: pending
    r.hset("live", mapping={"total": 5000})
    pid = int((var / "redis" / "redis.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while services._alive(url) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert services.restart_embedded_redis_if_dead(var) is True
    assert int((var / "redis" / "redis.pid").read_text()) != pid
    r = redis.Redis.from_url(url)  # the same address
    assert [e[0] for e in r.xrange("s")] == ids
    assert r.xpending("s", "g")["pending"] == 300
    assert r.hget("live", "total") == b"5000"
    assert services.restart_embedded_redis_if_dead(var) is False  # alive: nothing to do
    assert services.restart_embedded_redis_if_dead(tmp_path / "other") is None  # not ours


def test_an_external_redis_that_persists_nothing_is_warned_about(tmp_path: Path, caplog):
    port = free_port()
    proc = subprocess.Popen([services._redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10
        while not services._alive(url) and time.monotonic() < deadline:
            time.sleep(0.05)
        with caplog.at_level(logging.WARNING, logger="store.services"):
            services.get_redis(Settings(redis_url=url, var_dir=tmp_path))
        warned = [r.getMessage() for r in caplog.records if "persists nothing" in r.getMessage()]
        assert len(warned) == 1 and "appendonly" in warned[0]
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="store.services"):
            services.get_redis(Settings(redis_url=url, var_dir=tmp_path), decode=True)  # once per process
        assert not [r for r in caplog.records if "persists nothing" in r.getMessage()]
    finally:
        proc.kill()
        proc.wait()


def test_a_durable_external_redis_is_not_warned_about(tmp_path: Path, caplog):
    url = services.start_embedded_redis(tmp_path / "var")
    services._checked.discard(url)
    with caplog.at_level(logging.WARNING, logger="store.services"):
        services.warn_if_not_durable(redis.Redis.from_url(url), url)
    assert not caplog.records
