"""吹哨报到: when a grid "blows the whistle", each summoned department must report in (报到) within a limit.

One rule, used by the case page, the rankings and the briefings: for every department named by a ``whistle``
event, its first ``checkin`` at or after the whistle decides — on time (within the limit), late, missing (the
limit has passed with no check-in) or pending (the limit has not passed yet).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

DEFAULT_LIMIT = timedelta(minutes=30)


@dataclass(frozen=True)
class WhistleReport:
    department: str
    whistled_at: datetime
    due_at: datetime
    reported_at: datetime | None
    status: str  # on_time | late | missing | pending

    def as_dict(self) -> dict[str, Any]:
        return {"department": self.department, "whistled_at": self.whistled_at, "due_at": self.due_at,
                "reported_at": self.reported_at, "status": self.status}


def whistle_reports(events: Iterable[Mapping[str, Any]], now: datetime,
                    limit: timedelta = DEFAULT_LIMIT) -> list[WhistleReport]:
    """Report status per (whistle, department) from a case's timeline.

    ``events`` are mappings with ``action``, ``occurred_at`` and ``departments`` (a list), in any order.
    A department whistled twice is judged against each whistle separately.
    """
    events = sorted(events, key=lambda e: e["occurred_at"])
    checkins: dict[str, list[datetime]] = {}
    for e in events:
        if e["action"] == "checkin":
            for d in e.get("departments") or []:
                checkins.setdefault(d, []).append(e["occurred_at"])
    out: list[WhistleReport] = []
    for e in events:
        if e["action"] != "whistle":
            continue
        t = e["occurred_at"]
        due = t + limit
        for d in dict.fromkeys(e.get("departments") or []):
            first = next((c for c in checkins.get(d, []) if c >= t), None)
            if first is not None:
                status = "on_time" if first <= due else "late"
            else:
                status = "missing" if now > due else "pending"
            out.append(WhistleReport(d, t, due, first, status))
    return out
