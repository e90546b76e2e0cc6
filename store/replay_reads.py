"""The export's SQL read: every stored event of the cases reported in a period, in the order the store applied them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from sqlalchemy import Row, func, select

from store.schema import Case
from store.schema import CaseEvent as Ev


def area_filter(area: str):
    """The SQL condition of a case within ``area`` (a district, street, community or grid code)."""
    column = {6: Case.district_code, 9: Case.street_code, 12: Case.community_code, 15: Case.grid_code}.get(len(area))
    if column is None or not area.isdigit():
        raise ValueError(f"area: {area!r} is not an area code (6, 9, 12 or 15 digits: district, street, community, grid)")
    return column == area


def case_event_rows(engine, since: datetime, until: datetime, area: str | None = None) -> Iterator[Row]:
    """The events before ``until`` of the cases reported in [since, until) (within ``area``), each with its case's
    fields, by time; an event stored after a later-timed event of its case (a late arrival) keeps its place after it.
    """
    where = [Case.reported_at >= since, Case.reported_at < until]
    if area:
        where.append(area_filter(area))
    # The running latest time within each case, in the order the store applied the events.
    eff = func.max(Ev.occurred_at).over(partition_by=Ev.case_id, order_by=Ev.id)
    events = (
        select(Ev.id, Ev.case_id, Ev.event_key, Ev.action, Ev.occurred_at, Ev.actor, Ev.departments, Ev.note,
               eff.label("eff"))
        .join(Case, Case.id == Ev.case_id)
        .where(*where, Ev.occurred_at < until)
        .subquery()
    )
    query = (
        select(events, Case.source, Case.external_id, Case.category, Case.grade, Case.title, Case.description,
               Case.address, Case.reporter_name, Case.reporter_phone, Case.lon, Case.lat, Case.grid_code,
               Case.onsite, Case.rating, Case.flags, Case.due_at, Case.accept_due_at)
        .join(Case, Case.id == events.c.case_id)
        .order_by(events.c.eff, events.c.id)
    )
    with engine.connect() as conn:
        yield from conn.execution_options(yield_per=2000).execute(query)
