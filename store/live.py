"""Writes to the live state (Redis), through the idempotent scripts in core.livestate."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import redis

from core.geography import usable_point
from core.livestate import ALARM_STATE_LUA, CASE_STATE_LUA, RECENT_HORIZON_HOURS, LiveKeys, encode_recent

CHUNK = 500  # pairs per script call: keeps each call short so readers are never blocked for long


class LiveWriter:
    def __init__(self, r: redis.Redis, prefix: str, district: str):
        self.r = r
        self.keys = LiveKeys(prefix)
        self.prefix = prefix
        self.district = district
        self._case = r.register_script(CASE_STATE_LUA)
        self._alarm = r.register_script(ALARM_STATE_LUA)

    def set_case_states(self, states: Iterable[tuple[int | str, str]], pipe=None) -> None:
        """(case id, encoded state) pairs → counters moved by the difference from what was counted before."""
        states = list(states)
        target = pipe if pipe is not None else self.r
        for i in range(0, len(states), CHUNK):
            argv: list[str] = [self.prefix, self.district]
            for case_id, state in states[i : i + CHUNK]:
                argv += [str(case_id), state]
            self._case(keys=[self.keys.cases], args=argv, client=target)

    def set_alarms(self, changes: Iterable[tuple[str, str | None, dict | None]], pipe=None, offline: bool = False) -> None:
        """(device id, grid, alarm dict or None to clear) triples; ``offline``: device-silence alarms."""
        changes = list(changes)
        target = pipe if pipe is not None else self.r
        key, field = (self.keys.offline, "offline") if offline else (self.keys.alarms, "alarms")
        for i in range(0, len(changes), CHUNK):
            argv: list[str] = [self.prefix, self.district, field]
            for device, grid, alarm in changes[i : i + CHUNK]:
                argv += [device, grid or "", orjson.dumps({**alarm, "grid": grid or ""}).decode() if alarm else ""]
            self._alarm(keys=[key], args=argv, client=target)

    def note_reports(self, cases: Iterable[dict[str, Any]], pipe=None, now: datetime | None = None) -> int:
        """Located cases reported in the last RECENT_HORIZON_HOURS → the recent reports (the hotspot finder's input).

        Every touched case is written again (two commands per batch, whatever its size), so a case reclassified or
        relocated by a later event moves, and a batch redelivered after a crash re-asserts what it wrote. The risk
        sweep trims what has left its window. Returns how many cases were written.
        """
        since = (now or datetime.now(UTC)) - timedelta(hours=RECENT_HORIZON_HOURS)
        info: dict[str, str] = {}
        scores: dict[str, float] = {}
        for c in cases:
            grid, lon, lat, at = c.get("grid_code"), c.get("lon"), c.get("lat"), c.get("reported_at")
            if not grid or at is None or at < since or not usable_point(lon, lat):
                continue
            key = str(c["id"])
            scores[key] = at.timestamp()
            info[key] = encode_recent(scores[key], c["category"], grid, lon, lat)
        if info:
            target = pipe if pipe is not None else self.r
            target.hset(self.keys.recent_info, mapping=info)
            target.zadd(self.keys.recent, scores)
        return len(info)
