"""The case file: what a report makes of a new case and what each later event changes in it.

Pure: plain dicts in, the changed fields out. The worker reads the cases, applies these changes with the status
the lifecycle gives (core/lifecycle.py) and writes them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

from core.lifecycle import OPEN_STATUSES, Action, Status
from core.records import CaseEvent
from core.sla import Limit, WorkingCalendar

Changes = dict[str, Any]
Case = Mapping[str, Any]
Locate = Callable[[CaseEvent], str | None]


class CategoryRules(Protocol):
    """What the case file needs of a category (config.city.Category)."""

    default_grade: Any
    accept_limit: Limit | None
    complete_limit: Limit | None


def deadlines(ev: CaseEvent, category: CategoryRules, calendar: WorkingCalendar
              ) -> tuple[datetime | None, datetime | None, bool]:
    """(accept due, due, provisional): the source's own deadlines, else the category's limits from the report."""
    accept_due, due, provisional = ev.accept_due_at, ev.due_at, False
    if accept_due is None and category.accept_limit is not None:
        d = calendar.add(ev.occurred_at, category.accept_limit)
        accept_due, provisional = d.due, d.provisional
    if due is None and category.complete_limit is not None:
        d = calendar.add(ev.occurred_at, category.complete_limit)
        due, provisional = d.due, provisional or d.provisional
    return accept_due, due, provisional


def _area(grid: str | None) -> Changes:
    """The location columns a grid code gives (street and community are its prefixes)."""
    return {"street_code": grid and grid[:9], "community_code": grid and grid[:12], "grid_code": grid,
            "located": grid is not None}


def new_case(ev: CaseEvent, category: CategoryRules, calendar: WorkingCalendar, *, district: str,
             grid: str | None, now: datetime) -> dict[str, Any]:
    """The row a report opens (no id and no status yet: the caller sets the status the lifecycle gives)."""
    accept_due, due, provisional = deadlines(ev, category, calendar)
    return {
        "id": None, "source": ev.source, "external_id": ev.external_id, "category": ev.category,
        "grade": ev.grade or category.default_grade, "title": ev.title, "description": ev.description,
        "address": ev.address, "reporter_name": ev.reporter_name, "reporter_phone": ev.reporter_phone,
        "lon": ev.lon, "lat": ev.lat, "district_code": district,
        "street_code": grid[:9] if grid else None, "community_code": grid[:12] if grid else None,
        "grid_code": grid, "located": grid is not None,
        "status": None, "departments": list(ev.departments or []), "onsite": bool(ev.onsite), "overdue": False,
        "due_provisional": provisional, "suspended_at": None, "warned": False, "escalated": False, "rating": None,
        "flags": sorted(set(ev.flags)) if ev.flags else None, "drill": bool(ev.drill),
        "reported_at": ev.occurred_at, "accept_due_at": accept_due, "due_at": due,
        "supervised_at": None, "supervise_note": None, "supervise_due_at": None,
        "accepted_at": None, "resolved_at": None, "closed_at": None, "dispatched_at": None, "evaluated_at": None,
        "updated_at": now, "created_at": now,
    }


# ---- what each action does ------------------------------------------------------------------
# Each takes (case, event, status after) and returns the fields it changes; actions not listed change none.

def _earliest(case: Case, field: str, at: datetime) -> datetime:
    """The first time of something, whatever the order the events arrived in."""
    first = case.get(field)
    return at if first is None else min(first, at)


def _dispatch(case: Case, ev: CaseEvent, _target: Status) -> Changes:
    return {"dispatched_at": _earliest(case, "dispatched_at", ev.occurred_at),
            "departments": list(dict.fromkeys(ev.departments or []))}


def _whistle(case: Case, ev: CaseEvent, _target: Status) -> Changes:
    return {"dispatched_at": _earliest(case, "dispatched_at", ev.occurred_at),
            "departments": list(dict.fromkeys([*case["departments"], *(ev.departments or [])]))}


def _supervise(_case: Case, ev: CaseEvent, _target: Status) -> Changes:
    """督办: the newest supervision order, its 批示 and its deadline (the case's own deadline stays)."""
    return {"supervised_at": ev.occurred_at, "supervise_note": ev.note, "supervise_due_at": ev.due_at}


def _return(_case: Case, _ev: CaseEvent, _target: Status) -> Changes:
    return {"departments": []}


def _accept(_case: Case, ev: CaseEvent, _target: Status) -> Changes:
    return {"accepted_at": ev.occurred_at}


def _resolve(case: Case, ev: CaseEvent, _target: Status) -> Changes:
    return {"resolved_at": ev.occurred_at, "onsite": case["onsite"] or ev.event is Action.ONSITE}


def _close(_case: Case, ev: CaseEvent, _target: Status) -> Changes:
    return {"closed_at": ev.occurred_at}


def _evaluate(case: Case, ev: CaseEvent, _target: Status) -> Changes:
    return {"evaluated_at": _earliest(case, "evaluated_at", ev.occurred_at), "rating": ev.rating}


def _reopen(_case: Case, _ev: CaseEvent, _target: Status) -> Changes:
    return {"resolved_at": None, "closed_at": None, "rating": None}


def _overdue(_case: Case, _ev: CaseEvent, target: Status) -> Changes:
    return {"overdue": target in OPEN_STATUSES}


def _warning(_case: Case, _ev: CaseEvent, _target: Status) -> Changes:
    return {"warned": True}


def _escalate(_case: Case, _ev: CaseEvent, _target: Status) -> Changes:
    return {"escalated": True}


def _extend(_case: Case, ev: CaseEvent, _target: Status) -> Changes:
    """An approved new deadline: the clock's marks start over."""
    return {"due_at": ev.due_at, "due_provisional": False, "overdue": ev.due_at <= ev.occurred_at, "warned": False,
            "escalated": False}


def _suspend(case: Case, ev: CaseEvent, _target: Status) -> Changes:
    return {} if case["suspended_at"] is not None else {"suspended_at": ev.occurred_at}


def _resume(case: Case, ev: CaseEvent, _target: Status) -> Changes:
    """The deadlines move by the time the clock stood still."""
    stopped = case["suspended_at"]
    if stopped is None:
        return {}
    held = max(ev.occurred_at - stopped, timedelta(0))
    out: Changes = {f: case[f] + held for f in ("due_at", "accept_due_at") if case[f] is not None}
    due = out.get("due_at")
    out.update(suspended_at=None, overdue=due is not None and due <= ev.occurred_at)
    return out


ACTIONS: dict[Action, Callable[[Case, CaseEvent, Status], Changes]] = {
    Action.DISPATCH: _dispatch, Action.TRANSFER: _dispatch, Action.SUPERVISE: _supervise, Action.WHISTLE: _whistle, Action.RETURN: _return, Action.ACCEPT: _accept,
    Action.RESOLVE: _resolve, Action.ONSITE: _resolve, Action.CLOSE: _close, Action.EVALUATE: _evaluate,
    Action.REOPEN: _reopen, Action.OVERDUE: _overdue, Action.WARNING: _warning, Action.ESCALATE: _escalate,
    Action.EXTEND: _extend, Action.SUSPEND: _suspend, Action.RESUME: _resume,
}


def corrections(case: Case, ev: CaseEvent, locate: Locate) -> Changes:
    """What any later event may correct: flags (added), grade, category, a source's new deadline, the location."""
    out: Changes = {}
    if ev.flags:
        out["flags"] = sorted(set(case.get("flags") or []) | set(ev.flags))
    if ev.grade is not None:
        out["grade"] = ev.grade
    if ev.category is not None:
        out["category"] = ev.category
    if ev.due_at is not None and ev.event not in (Action.EXTEND, Action.SUPERVISE):  # set already / not the case's
        out["due_at"] = ev.due_at
    if ev.lon is not None or ev.grid_code is not None:
        out.update(lon=ev.lon, lat=ev.lat, **_area(locate(ev)))
    return out


def changes(case: Case, ev: CaseEvent, target: Status, locate: Locate) -> Changes:
    """The fields ``ev`` changes in ``case`` besides the status (``target``: the status after it).

    ``locate`` gives the grid of an event that carries a new location (given grid code or point).
    """
    rule = ACTIONS.get(ev.event)
    out = rule(case, ev, target) if rule is not None else {}
    if ev.event is not Action.REPORT:
        out.update(corrections(case, ev, locate))
    due = out["due_at"] if "due_at" in out else case["due_at"]
    suspended = out["suspended_at"] if "suspended_at" in out else case["suspended_at"]
    if due is not None and target in OPEN_STATUSES and suspended is None and due <= ev.occurred_at:
        out["overdue"] = True
    return out


def deadline_set(ev: CaseEvent, due_before: datetime | None, due_after: datetime | None) -> datetime | None:
    """The deadline an event set or moved, for its timeline row: a report's first, a 督办's own, else a new one, else
    None."""
    if ev.event is Action.SUPERVISE:
        return ev.due_at
    return due_after if ev.event is Action.REPORT or due_after != due_before else None
