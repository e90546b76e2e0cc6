"""SQL reads for the API and the views: case lists (keyset pagination) and one case with its timeline.

Personal data (reporter name and phone) is never selected: a later change adds roles that may see it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from core.geography import level_of
from core.models import Case, CaseEvent

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
REPORTER_HIDDEN = "hidden"  # what the API shows instead of the reporter's name and phone

_CASE = Case.__table__
_EVENT = CaseEvent.__table__
_AREA_COLUMN = {
    "district": _CASE.c.district_code,
    "street": _CASE.c.street_code,
    "community": _CASE.c.community_code,
    "grid": _CASE.c.grid_code,
}
_LIST_COLUMNS = [
    c for c in _CASE.c if c.name not in ("reporter_name", "reporter_phone", "description")
]
_DETAIL_COLUMNS = [c for c in _CASE.c if c.name not in ("reporter_name", "reporter_phone")]
_EVENT_COLUMNS = [c for c in _EVENT.c if c.name not in ("case_id", "event_key")]

_CURSOR_PREFIX = "c1:"


class CursorError(ValueError):
    pass


def encode_cursor(last_id: int) -> str:
    """An opaque cursor for the page after the case ``last_id``."""
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The last id of the previous page; CursorError if the cursor was not made by encode_cursor."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise CursorError("not a cursor") from None
    if not text.startswith(_CURSOR_PREFIX) or not text[len(_CURSOR_PREFIX):].isdigit():
        raise CursorError("not a cursor")
    value = int(text[len(_CURSOR_PREFIX):])
    if value <= 0:
        raise CursorError("not a cursor")
    return value


def _case_row(row: Any) -> dict[str, Any]:
    out = dict(row._mapping)
    out["departments"] = list(out.get("departments") or [])
    out["reporter"] = REPORTER_HIDDEN
    return out


def list_cases(
    engine: Engine,
    *,
    area: str | None = None,
    statuses: Collection[str] | None = None,
    category: str | None = None,
    limit: int = DEFAULT_LIMIT,
    after_id: int | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Cases newest first (by id), filtered; returns (items, next cursor or None).

    ``area`` is any area code: the column compared depends on its level (a district sees its
    unlocated cases too). ``category`` is a 小类 code (4 digits) or a 大类 code (2 digits).
    ``after_id`` is the decoded cursor: only cases with a smaller id.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be 1..{MAX_LIMIT}")
    q = select(*_LIST_COLUMNS)
    if area:
        q = q.where(_AREA_COLUMN[level_of(area)] == area)
    if statuses:
        q = q.where(_CASE.c.status.in_(sorted(statuses)))
    if category:
        q = q.where(_CASE.c.category.startswith(category) if len(category) == 2 else _CASE.c.category == category)
    if after_id is not None:
        q = q.where(_CASE.c.id < after_id)
    q = q.order_by(_CASE.c.id.desc()).limit(limit + 1)
    with engine.connect() as conn:
        rows = [_case_row(r) for r in conn.execute(q)]
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (encode_cursor(rows[-1]["id"]) if more and rows else None)


def get_case(engine: Engine, case_id: int) -> dict[str, Any] | None:
    """One case with its timeline (events by occurred_at, then id), or None."""
    with engine.connect() as conn:
        row = conn.execute(select(*_DETAIL_COLUMNS).where(_CASE.c.id == case_id)).first()
        if row is None:
            return None
        events = conn.execute(
            select(*_EVENT_COLUMNS).where(_EVENT.c.case_id == case_id).order_by(_EVENT.c.occurred_at, _EVENT.c.id)
        )
        case = _case_row(row)
        case["timeline"] = [dict(e._mapping) for e in events]
    return case


SLA_COLUMNS = [_CASE.c[n] for n in ("id", "source", "external_id", "category", "grade", "title", "status", "grid_code",
                                    "street_code", "departments", "reported_at", "due_at", "due_provisional", "overdue")]


def sla_cases(engine: Engine, *, now, states: Collection[str], area: str | None = None,
              warn_share: float = 0.2, limit: int = DEFAULT_LIMIT) -> list[dict[str, Any]]:
    """Open cases whose SLA state (core.sla.state) is in ``states``, nearest deadline first.

    Overdue cases are found by the database (due_at < now); "warning" depends on each case's own window, so the
    open cases due after now are read in deadline order and judged by the same rule the wall and briefings use.
    """
    from core.lifecycle import OPEN_STATUSES
    from core.sla import state

    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be 1..{MAX_LIMIT}")
    q = select(*SLA_COLUMNS).where(_CASE.c.status.in_(sorted(s.value for s in OPEN_STATUSES)),
                                   _CASE.c.due_at.is_not(None))
    if area:
        q = q.where(_AREA_COLUMN[level_of(area)] == area)
    if "warning" not in states:
        q = q.where(_CASE.c.due_at <= now)
    elif "overdue" not in states:
        q = q.where(_CASE.c.due_at >= now)
    q = q.order_by(_CASE.c.due_at, _CASE.c.id)
    out: list[dict[str, Any]] = []
    with engine.connect() as conn:
        for row in conn.execution_options(stream_results=True, yield_per=2000).execute(q):
            case = dict(row._mapping)
            case["sla_state"] = state(now, case["reported_at"], case["due_at"], warn_share)
            if case["sla_state"] not in states:
                continue
            case["departments"] = list(case.get("departments") or [])
            case["seconds_left"] = round((case["due_at"] - now).total_seconds())
            out.append(case)
            if len(out) >= limit:
                break
    return out


def kpi_frame(engine: Engine, *, area: str | None, since, until):
    """One row per case reported in [since, until) in ``area``, with the columns core.kpis.compute reads."""
    import pandas as pd
    from sqlalchemy import func

    from core.kpis import CASE_COLUMNS

    def first(actions):
        return (select(func.min(_EVENT.c.occurred_at)).where(_EVENT.c.case_id == _CASE.c.id, _EVENT.c.action.in_(actions))
                .scalar_subquery())

    q = select(
        _CASE.c.reported_at, first(("dispatch", "whistle")).label("dispatched_at"), _CASE.c.resolved_at,
        _CASE.c.closed_at, first(("evaluate",)).label("evaluated_at"), _CASE.c.due_at, _CASE.c.status,
        _CASE.c.onsite, _CASE.c.escalated, _CASE.c.rating,
    ).where(_CASE.c.reported_at >= since, _CASE.c.reported_at < until)
    if area:
        q = q.where(_AREA_COLUMN[level_of(area)] == area)
    with engine.connect() as conn:
        rows = conn.execute(q).all()
    df = pd.DataFrame(rows, columns=list(CASE_COLUMNS))
    for c in ("reported_at", "dispatched_at", "resolved_at", "closed_at", "evaluated_at", "due_at"):
        df[c] = pd.to_datetime(df[c], utc=True)
    df["rating"] = pd.to_numeric(df["rating"])
    return df


RISK_CASE_COLUMNS = [_CASE.c[n] for n in ("id", "source", "external_id", "category", "grade", "title", "status", "overdue",
                                          "grid_code", "reported_at", "due_at")]


def risk_top_cases(engine: Engine, *, area: str, grade_weights, overdue_multiplier: float,
                   limit: int = 10) -> tuple[list[dict[str, Any]], int]:
    """The open cases of ``area`` that add most to its risk score (core.risk: grade weight × the overdue multiplier
    when overdue), heaviest first, then oldest; and how many open cases the area has.

    Reads only open cases, through the (area, status) indexes (the district, which holds every case, through
    (status, due_at)); the weight is computed by the database with a CASE expression.
    """
    from sqlalchemy import case, func, literal

    from core.lifecycle import OPEN_STATUSES

    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be 1..{MAX_LIMIT}")
    weight = case(*((_CASE.c.grade == g, literal(float(w))) for g, w in sorted(grade_weights.items())),
                  else_=literal(0.0))
    contribution = (weight * case((_CASE.c.overdue.is_(True), literal(float(overdue_multiplier))),
                                  else_=literal(1.0))).label("contribution")
    where = [_AREA_COLUMN[level_of(area)] == area, _CASE.c.status.in_(sorted(s.value for s in OPEN_STATUSES))]
    q = (select(*RISK_CASE_COLUMNS, contribution).where(*where)
         .order_by(contribution.desc(), _CASE.c.reported_at, _CASE.c.id).limit(limit))
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(q)]
        total = conn.execute(select(func.count()).select_from(_CASE).where(*where)).scalar_one()
    for row in rows:
        row["contribution"] = round(float(row["contribution"]), 3)
    return rows, int(total)
