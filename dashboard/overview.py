"""The live overview page's data (/live): what the live state in Redis counts now, no SQL. A view model: the page
(layouts/live.py) formats it and never opens a connection itself."""

from __future__ import annotations

from typing import Any

from dashboard import context, live


def snapshot(codes: list[str]) -> dict[str, Any]:
    """The counts of each area in ``codes``, the dead-letter count, the streams' figures and the newest applied
    data's time. Raises what Redis raises when it is away (the page says so and keeps running)."""
    settings = context.settings()
    r = context.redis_client()
    return {"counts": live.area_counts(r, settings, codes), "dead": live.dead_letters(r, settings),
            "stats": live.streams(r, settings), "last": live.last_event_at(r, settings)}
