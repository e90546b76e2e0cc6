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
