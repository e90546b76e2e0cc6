"""The worker's heartbeat: proof in Redis that a worker process is alive and whether its batches apply.

A daemon thread writes, every ``INTERVAL_S`` seconds, the key ``P:live:worker:NAME`` (TTL ``TTL_S``) and the
field NAME of the hash ``P:live:workers``, both holding the same JSON::

    {"name", "host", "pid", "beat_at", "applied_at", "failing", "error", "failing_since"}

The key exists while the worker process is alive (it expires when the process dies); the hash keeps the last
word of every worker for the health page. After each batch the worker calls :meth:`Heartbeat.ok` or
:meth:`Heartbeat.failed`; :meth:`Heartbeat.stop` deletes the key on a clean exit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from datetime import UTC, datetime

import redis

from core.livestate import LiveKeys

log = logging.getLogger(__name__)

INTERVAL_S = 2.0
TTL_S = 15


def _now() -> str:
    return datetime.now(UTC).isoformat()


class Heartbeat:
    def __init__(self, r: redis.Redis, keys: LiveKeys, name: str, interval_s: float = INTERVAL_S, ttl_s: int = TTL_S):
        self.r = r
        self.keys = keys
        self.name = name
        self.interval_s = interval_s
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.state = {"name": name, "host": socket.gethostname(), "pid": os.getpid(), "beat_at": None,
                      "applied_at": None, "failing": 0, "error": None, "failing_since": None}

    def start(self) -> Heartbeat:
        self.beat()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.beat()
            except redis.RedisError as exc:
                log.warning("heartbeat not written: %s", exc)

    def beat(self) -> None:
        with self._lock:
            self.state["beat_at"] = _now()
            value = json.dumps(self.state)
        pipe = self.r.pipeline(transaction=False)
        pipe.set(self.keys.worker(self.name), value, ex=self.ttl_s)
        pipe.hset(self.keys.workers, self.name, value)
        pipe.execute()

    def ok(self, applied: int) -> None:
        with self._lock:
            self.state.update(failing=0, error=None, failing_since=None)
            if applied > 0:
                self.state["applied_at"] = _now()

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            if not self.state["failing"]:
                self.state["failing_since"] = _now()
            self.state["failing"] += 1
            self.state["error"] = f"{type(exc).__name__}: {exc}"[:500]
        with contextlib.suppress(redis.RedisError):
            self.beat()  # say so at once, not only at the next tick

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s + 1)
        try:
            with self._lock:
                self.state["beat_at"] = _now()
                value = json.dumps(self.state)
            pipe = self.r.pipeline(transaction=False)
            pipe.delete(self.keys.worker(self.name))
            pipe.hset(self.keys.workers, self.name, value)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("heartbeat not removed: %s", exc)
