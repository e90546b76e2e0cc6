"""Feed health: each pulling or subscribing feed reports whether its source answers.

Stored in the live state (``P:live:feed_status``, feed name → JSON) so /healthz and the screens
can show a light per feed without asking the feed process. A feed that keeps failing stays
visible with its last error and the number of failures in a row. What a feed refused for a
missing or wrong token or credentials is counted apart (ingest/feedauth.py) and read back with
the feed's health as ``refused``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import redis

from config.settings import Settings
from core.livestate import LiveKeys, with_refusals


class FeedHealth:
    def __init__(self, r: redis.Redis, settings: Settings, feed: str):
        self.r = r
        self.key = LiveKeys(settings.stream_prefix).feed_status
        self.feed = feed

    def _get(self) -> dict[str, Any]:
        raw = self.r.hget(self.key, self.feed)
        return orjson.loads(raw) if raw else {}

    def ok(self, detail: str = "", **extra: Any) -> None:
        """The source answered and what it sent was read."""
        now = datetime.now(UTC).isoformat()
        state = {**self._get(), "ok": True, "at": now, "last_ok": now, "failures": 0, "detail": detail, **extra}
        self.r.hset(self.key, self.feed, orjson.dumps(state))

    def failed(self, error: str, **extra: Any) -> int:
        """The source is down or sent garbage. Returns the number of failures in a row."""
        state = self._get()
        failures = int(state.get("failures", 0)) + 1
        state.update(ok=False, at=datetime.now(UTC).isoformat(), failures=failures, error=error[:500], **extra)
        self.r.hset(self.key, self.feed, orjson.dumps(state))
        return failures


def read_all(r: redis.Redis, settings: Settings) -> dict[str, dict[str, Any]]:
    """Feed → its health, with its refusals (``refused: {source: {reason: n}}``, counted by ingest/feedauth.py)."""
    keys = LiveKeys(settings.stream_prefix)
    raw, refused = r.hgetall(keys.feed_status), r.hgetall(keys.feed_refused)
    return with_refusals({_text(k): orjson.loads(v) for k, v in raw.items()},
                         {_text(k): int(v) for k, v in refused.items()})


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
