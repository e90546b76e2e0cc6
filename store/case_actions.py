"""The reads an action on a case needs: the case's key, status and place, and whether an event of it was applied."""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.engine import Engine

from store.schema import Case, CaseEvent


def case_head(engine: Engine, case_id: int) -> dict[str, Any] | None:
    """The case's id, key (source, external id), status, grid and ``phase`` (the key of the newest event that moved
    its status), or None when there is no such case."""
    with engine.connect() as conn:
        row = conn.execute(select(Case.id, Case.source, Case.external_id, Case.status, Case.grid_code,
                                  Case.departments).where(Case.id == case_id)).first()
        if row is None:
            return None
        phase = conn.execute(select(CaseEvent.event_key).where(
            CaseEvent.case_id == case_id,
            or_(CaseEvent.status_before.is_(None), CaseEvent.status_before != CaseEvent.status_after))
            .order_by(CaseEvent.id.desc()).limit(1)).scalar()
    return {**row._mapping, "phase": phase or ""}


def applied_event(engine: Engine, case_id: int, event_key: str) -> dict[str, Any] | None:
    """The timeline row of the event ``event_key`` of the case, once the worker has applied it; else None."""
    with engine.connect() as conn:
        row = conn.execute(select(CaseEvent.action, CaseEvent.actor, CaseEvent.status_before, CaseEvent.status_after,
                                  CaseEvent.received_at)
                           .where(CaseEvent.case_id == case_id, CaseEvent.event_key == event_key)).first()
    return dict(row._mapping) if row is not None else None
