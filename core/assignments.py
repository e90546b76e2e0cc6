"""Who was responsible for a case, and how they did: one row per (case, department, assignment).

The department rankings (core/rankings.py) judge departments on these rows. They are projected from the case
timeline by one rule, here, which the worker applies as it stores events (and the migration that created the table
applied to the history that was already stored):

- 派遣 ``dispatch`` (and 转派 ``transfer``) makes each named department a *lead* (主办) of the case. A lead still
  working on it stays; any other unfinished lead is superseded (its row ends without a result).
- 吹哨 ``whistle`` summons each named department (role ``whistle``); it owes a 报到 ``checkin`` by ``due_at``
  (whistle time + the report limit). The first check-in at or after the whistle counts (core/whistle.py's rule).
  A lead's ``due_at`` is likewise its acknowledgement deadline: the case's 签收 deadline.
- 签收 ``accept``, 办结 ``resolve`` / 现场处置 ``onsite`` and 退回 ``return`` are the current unfinished leads'
  acts; the accept and resolve are judged on time against the case's deadlines in force when they are applied.
- ``reopen`` marks the leads whose resolution did not hold (reopened) and ends them; ``evaluate`` gives the rating
  to the leads whose resolution it judges.
- A lead's ``finished_at`` is when it stopped being open work: resolved, or else ended (returned, superseded);
  ``handling_s`` is the seconds from its dispatch to its resolution.

Pure: rows are dicts; the caller loads the case's current rows and writes what changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

LEAD = "lead"
WHISTLE = "whistle"

COLUMNS = ("case_id", "department", "role", "grid_code", "assigned_at", "due_at", "accepted_at", "accepted_on_time",
           "resolved_at", "resolved_on_time", "returned_at", "reopened_at", "ended_at", "finished_at", "checked_in_at",
           "rating", "evaluated_at", "handling_s")
MUTABLE = ("accepted_at", "accepted_on_time", "resolved_at", "resolved_on_time", "returned_at", "reopened_at",
           "ended_at", "finished_at", "checked_in_at", "rating", "evaluated_at", "handling_s")


def _on_time(at: datetime, due: datetime | None) -> bool:
    return due is None or at <= due


def new_row(case_id: Any, department: str, role: str, at: datetime, grid: str | None,
            due: datetime | None = None) -> dict[str, Any]:
    row = dict.fromkeys(COLUMNS)
    row.update(case_id=case_id, department=department, role=role, grid_code=grid, assigned_at=at, due_at=due, id=None)
    return row


@dataclass(frozen=True)
class _Act:
    """One event as the row rules see it."""

    at: datetime
    case_id: Any
    departments: list[str]
    accept_due: datetime | None
    due: datetime | None
    grid: str | None
    rating: int | None
    whistle_limit: timedelta


def _dispatch(rows, leads, working, e: _Act) -> list[dict[str, Any]]:
    for r in working:
        if r["department"] not in e.departments:
            r["ended_at"] = e.at  # superseded: dispatched elsewhere before finishing
    keep = {r["department"] for r in working if r["department"] in e.departments}
    for r in leads:
        if r["resolved_at"] is not None:
            r["ended_at"] = e.at  # a new dispatch after a resolution starts a new round
    return [new_row(e.case_id, d, LEAD, e.at, e.grid, e.accept_due) for d in e.departments if d not in keep]


def _whistle(rows, leads, working, e: _Act) -> list[dict[str, Any]]:
    return [new_row(e.case_id, d, WHISTLE, e.at, e.grid, e.at + e.whistle_limit) for d in e.departments]


def _checkin(rows, leads, working, e: _Act) -> list[dict[str, Any]]:
    for r in rows:
        if (r["role"] == WHISTLE and r["department"] in e.departments and r["checked_in_at"] is None
                and r["assigned_at"] <= e.at):
            r["checked_in_at"] = e.at
    return []


def _accept(rows, leads, working, e: _Act) -> list[dict[str, Any]]:
    for r in working:
        if r["accepted_at"] is None:
            r["accepted_at"], r["accepted_on_time"] = e.at, _on_time(e.at, e.accept_due)
    return []


def _resolve(rows, leads, working, e: _Act) -> list[dict[str, Any]]:
    for r in working:
        r["resolved_at"], r["resolved_on_time"] = e.at, _on_time(e.at, e.due)
        r["handling_s"] = (e.at - r["assigned_at"]).total_seconds()
    return []


def _return(rows, leads, working, e: _Act) -> list[dict[str, Any]]:
    for r in working:
        r["returned_at"] = r["ended_at"] = e.at
    return []


def _reopen(rows, leads, working, e: _Act) -> list[dict[str, Any]]:
    for r in leads:
        if r["resolved_at"] is not None:
            r["reopened_at"] = r["ended_at"] = e.at
    return []


def _evaluate(rows, leads, working, e: _Act) -> list[dict[str, Any]]:
    for r in leads:
        if r["resolved_at"] is not None:
            r["rating"], r["evaluated_at"] = e.rating, e.at
    return []


# What each action does to the rows (see the module docstring); other actions leave them alone.
_RULES = {"dispatch": _dispatch, "transfer": _dispatch, "whistle": _whistle, "checkin": _checkin, "accept": _accept,
          "resolve": _resolve, "onsite": _resolve, "return": _return, "reopen": _reopen, "evaluate": _evaluate}
ACTIONS = frozenset(_RULES)


def apply(rows: list[dict[str, Any]], action: str, at: datetime, *, case_id: Any, departments: Iterable[str] | None,
          accept_due: datetime | None, due: datetime | None, grid: str | None, rating: int | None,
          whistle_limit: timedelta) -> list[dict[str, Any]]:
    """Apply one event to a case's rows (changed in place). Returns the rows it added (also appended to ``rows``).

    ``rows`` are all the case's rows so far, oldest first. Rows this returns have ``id`` None until stored;
    the caller keeps track of which existing rows changed (compare before and after, or mark them).
    """
    rule = _RULES.get(action)
    if rule is None:
        return []
    leads = [r for r in rows if r["role"] == LEAD and r["ended_at"] is None]
    working = [r for r in leads if r["resolved_at"] is None]
    e = _Act(at, case_id, list(dict.fromkeys(departments or [])), accept_due, due, grid, rating, whistle_limit)
    added = rule(rows, leads, working, e)
    rows.extend(added)
    for r in rows:  # no longer open work from: resolved, or ended (returned, superseded) unresolved
        if r["role"] == LEAD:
            r["finished_at"] = r["resolved_at"] if r["resolved_at"] is not None else r["ended_at"]
    return added


def project(events: Iterable[Mapping[str, Any]], *, case_id: Any, accept_due: datetime | None, due: datetime | None,
            grid: str | None, whistle_limit: timedelta) -> list[dict[str, Any]]:
    """All rows of one case from its whole timeline (events in applied order) — for backfills and checks."""
    rows: list[dict[str, Any]] = []
    for e in events:
        apply(rows, e["action"], e["occurred_at"], case_id=case_id, departments=e.get("departments"),
              accept_due=accept_due, due=due, grid=grid, rating=e.get("rating"), whistle_limit=whistle_limit)
    return rows
