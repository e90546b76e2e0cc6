"""The dispatcher's work queue (/dispatch): four lists of open cases within a jurisdiction, newest first, with their
counts — 待分拨 (reported or registered, no department yet, not handled on the spot), 待签收 (dispatched, not yet
accepted), 超期 (past the deadline, the clock running) and 报到未到 (a whistle's department past its report-in time
without checking in). Each list is one indexed read and one count."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Text, cast, false, func, or_, select
from sqlalchemy.engine import Engine

from core.geography import level_of
from core.lifecycle import OPEN_STATUSES, Status
from store.schema import Case, CaseAssignment

LISTS = ("unrouted", "unaccepted", "overdue", "no_checkin")
DEFAULT_LIMIT = 50
MAX_LIMIT = 500

_C = Case.__table__
_A = CaseAssignment.__table__
_OPEN = sorted(s.value for s in OPEN_STATUSES)
_COLUMNS = (_C.c.id, _C.c.title, _C.c.grade, _C.c.category, _C.c.status, _C.c.grid_code, _C.c.departments,
            _C.c.reported_at, _C.c.dispatched_at, _C.c.due_at, _C.c.supervised_at, _C.c.supervise_note)
_AREA = {"district": _C.c.district_code, "street": _C.c.street_code, "community": _C.c.community_code,
         "grid": _C.c.grid_code}


def _within(area: str | None) -> list:
    """The conditions every list shares: the city's cases (not a replay's drill) in ``area`` (None: all)."""
    out = [_C.c.drill == false()]
    if area:
        out.append(_AREA[level_of(area)] == area)
    return out


def _conditions(name: str, area: str | None, now: datetime) -> tuple[list, Any, tuple]:
    """(the WHERE of list ``name``, its FROM, its ORDER BY)."""
    where = _within(area)
    if name == "unrouted":
        where += [_C.c.status.in_([Status.REPORTED.value, Status.REGISTERED.value]), _C.c.onsite == false(),
                  or_(_C.c.departments.is_(None), cast(_C.c.departments, Text).in_(["[]", "null"]))]
        return where, _C, (_C.c.id.desc(),)
    if name == "unaccepted":
        where.append(_C.c.status == Status.DISPATCHED.value)
        return where, _C, (_C.c.dispatched_at.desc(), _C.c.id.desc())
    if name == "overdue":
        where += [_C.c.status.in_(_OPEN), _C.c.due_at < now, _C.c.suspended_at.is_(None)]
        return where, _C, (_C.c.due_at.desc(), _C.c.id.desc())
    if name == "no_checkin":
        where += [_C.c.status.in_(_OPEN), _A.c.role == "whistle", _A.c.checked_in_at.is_(None),
                  _A.c.ended_at.is_(None), _A.c.due_at < now]
        return where, _A.join(_C, _A.c.case_id == _C.c.id), (_A.c.due_at.desc(), _A.c.id.desc())
    raise ValueError(f"unknown list {name!r}; one of {', '.join(LISTS)}")


def queue_list(engine: Engine, name: str, *, area: str | None, now: datetime,
               limit: int = DEFAULT_LIMIT) -> tuple[list[dict[str, Any]], int]:
    """(the newest ``limit`` cases of list ``name``, how many the list holds). A row of 报到未到 is one department's
    missing report-in: ``department`` and ``checkin_due_at`` say whose and by when."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be 1..{MAX_LIMIT}")
    where, source, order = _conditions(name, area, now)
    extra = (_A.c.department, _A.c.due_at.label("checkin_due_at")) if name == "no_checkin" else ()
    with engine.connect() as conn:
        rows = conn.execute(select(*_COLUMNS, *extra).select_from(source).where(*where).order_by(*order)
                            .limit(limit)).all()
        total = conn.execute(select(func.count()).select_from(source).where(*where)).scalar_one()
    out = []
    for row in rows:
        r = dict(row._mapping)
        r["departments"] = [d for d in (r.get("departments") or []) if isinstance(d, str)]
        out.append(r)
    return out, int(total)


def work_queue(engine: Engine, *, area: str | None, now: datetime,
               limit: int = DEFAULT_LIMIT) -> dict[str, tuple[list[dict[str, Any]], int]]:
    """Every list of the queue: name → (rows, count)."""
    return {name: queue_list(engine, name, area=area, now=now, limit=limit) for name in LISTS}
