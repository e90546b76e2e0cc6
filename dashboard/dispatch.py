"""The dispatcher's work queue (/dispatch) as plain data: the four lists of store/dispatch_queue.py within the
viewer's jurisdiction, each row with its place and departments named and the actions the viewer may take on it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from core import access
from core.actions import allowed_for
from dashboard import context, viewers
from store.dispatch_queue import DEFAULT_LIMIT, LISTS, work_queue

# The actions a list offers inline, in order (each only where the viewer's role may take it on the case's status).
INLINE = {"unrouted": ("register", "dispatch"), "unaccepted": ("remind", "supervise", "transfer"),
          "overdue": ("remind", "supervise"), "no_checkin": ("remind", "supervise")}


def _place(geo, grid: str | None) -> str | None:
    """The street · community · grid a case lies in (None: unlocated)."""
    if not grid or grid not in geo:
        return None
    return " · ".join(geo.area(c).name for c in (grid[:9], grid[:12], grid) if c in geo)


def _row(city, r: dict[str, Any], name: str, role: str | None, personal: bool) -> dict[str, Any]:
    depts = city.departments
    row = {k: r.get(k) for k in ("id", "title", "grade", "category", "status", "grid_code", "reported_at",
                                 "dispatched_at", "due_at", "supervised_at", "supervise_note", "department",
                                 "checkin_due_at")}
    row["place"] = _place(city.geography, r.get("grid_code"))
    row["department_names"] = [(depts[d].short or depts[d].name) if d in depts else d for d in r["departments"]]
    if r.get("department"):
        d = depts.get(r["department"])
        row["department_name"] = (d.short or d.name) if d is not None else r["department"]
    may = {str(a) for a in allowed_for(role, r["status"])}
    row["actions"] = [a for a in INLINE[name] if a in may]
    return access.free_text(row, personal, (city.county_code,))


def queue(now: datetime | None = None, limit: int = DEFAULT_LIMIT) -> dict[str, Any]:
    """The viewer's work queue: ``lists`` name → {rows, count}, and ``as_of``."""
    now = now or datetime.now(UTC)
    v = viewers.viewer()
    city = context.city()
    found = work_queue(context.engine(), area=viewers.scope(), now=now, limit=limit)
    role = v.role if v is not None else None
    personal = viewers.personal()
    lists = {name: {"rows": [_row(city, r, name, role, personal) for r in found[name][0]], "count": found[name][1]}
             for name in LISTS}
    return {"as_of": now, "lists": lists, "limit": limit}
