"""When the system is not fine although every part answers: the rules behind /healthz's "degraded".

Pure: the web app (dashboard/api.py) gathers the facts from Redis (workers' heartbeats, the consumer group's oldest
pending entries, the streams' newest entries, the time of the newest applied data) and gets back the reasons.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime


def reasons(*, alive: set[str], workers: Mapping[str, Mapping], oldest_pending: Mapping[str, datetime | None],
            newest_entry: Mapping[str, datetime | None], last_applied: datetime | None, now: datetime,
            pending_max_s: float, stale_s: float) -> list[str]:
    """Why applying is not working, in words an operator acts on (empty: it works).

    - no worker heartbeat (no worker process alive);
    - a live worker whose batches fail (``failing`` > 0 in its heartbeat);
    - an entry of a stream pending (read, not yet applied) longer than ``pending_max_s``;
    - nothing applied for ``stale_s`` although a stream received entries after the last applied data.
    """
    out = []
    if not alive:
        out.append("no worker is running (no heartbeat): nothing published is applied")
    for name in sorted(alive):
        state = workers.get(name) or {}
        if int(state.get("failing") or 0) > 0:
            out.append(f"worker {name}: {state['failing']} failed batches in a row since {state.get('failing_since')} "
                       "(the entries stay pending and are retried; see the worker's log)")
    for stream, at in sorted(oldest_pending.items()):
        if at is not None and (now - at).total_seconds() > pending_max_s:
            out.append(f"stream {stream}: an entry has waited {int((now - at).total_seconds())} s to be applied "
                       f"(more than {pending_max_s:g} s)")
    newest = max((t for t in newest_entry.values() if t is not None), default=None)
    if newest is not None and (last_applied is None or newest > last_applied):
        since = last_applied or newest
        if (now - since).total_seconds() > stale_s:
            out.append(f"nothing applied for {int((now - since).total_seconds())} s although feeds are publishing "
                       "(数据停止更新)")
    return out
