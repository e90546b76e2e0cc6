"""The reads the router (智能分拨) needs: cases waiting to be routed, one case by id."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.engine import Engine

from core.routing import UNROUTED_KEY
from store.schema import Case, CaseEvent

_COLUMNS = (Case.id, Case.source, Case.external_id, Case.category, Case.grade, Case.grid_code, Case.reported_at,
            Case.departments, Case.onsite, Case.status)


def waiting(engine: Engine, sources: Collection[str], limit: int = 2000) -> list[dict[str, Any]]:
    """Reported cases of ``sources`` that no one dispatched, reported for no grid worker to handle on the spot, not a
    drill's, oldest first (at most ``limit``); ``noted``: the router's 待分拨 note is on its timeline already."""
    if not sources:
        return []
    noted = exists().where(CaseEvent.case_id == Case.id, CaseEvent.event_key == UNROUTED_KEY)
    with engine.connect() as conn:
        rows = conn.execute(select(*_COLUMNS, noted.label("noted")).where(
            Case.status == "reported", Case.source.in_(sorted(sources)), Case.onsite.is_(False),
            Case.drill.is_(False)).order_by(Case.id).limit(limit)).all()
    return [dict(r._mapping) for r in rows if not r.departments]


def one(engine: Engine, case_id: int) -> dict[str, Any] | None:
    """The routing facts' columns of one case, or None."""
    with engine.connect() as conn:
        row = conn.execute(select(*_COLUMNS).where(Case.id == case_id)).first()
    return dict(row._mapping) if row is not None else None
