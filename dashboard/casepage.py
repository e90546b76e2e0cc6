"""The case page's view model (/case/<id>): one case as a plain dict, which layouts/case.py draws.

Deadlines, departments and 报到 verdicts are read as stored and lined up per stage, never worked out again. The
reporter comes masked unless asked for whole; times are aware UTC datetimes, durations seconds.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from core import sla
from core.kpis import SATISFIED
from core.lifecycle import OPEN_STATUSES, Action, Status
from core.routing import AUTO_ACTOR, rule_of
from core.whistle import whistle_reports
from dashboard import context
from store import queries

# The milestones a case passes, in order. 处置 (handling) is part of the 签收→办结 stage.
MILESTONES = (Status.REPORTED, Status.REGISTERED, Status.DISPATCHED, Status.ACCEPTED, Status.RESOLVED,
              Status.CLOSED, Status.EVALUATED)
# The stored deadline a stage that ends at this milestone is judged against.
DEADLINE_OF = {Status.ACCEPTED: "accept_due_at", Status.RESOLVED: "due_at"}
# Moves back in the lifecycle: the milestones after the new status are to be reached again.
REWINDS = frozenset({Action.RETURN, Action.REOPEN})

FIELDS = ("id", "source", "external_id", "title", "category", "grade", "status", "description", "address", "lon",
          "lat", "district_code", "street_code", "community_code", "grid_code", "located", "departments", "onsite",
          "overdue", "escalated", "warned", "due_provisional", "suspended_at", "rating", "flags", "reported_at",
          "accept_due_at", "due_at", "accepted_at", "resolved_at", "closed_at", "updated_at", "supervised_at",
          "supervise_note", "supervise_due_at")


def _seconds(a: datetime, b: datetime) -> float:
    return (b - a).total_seconds()


def _overlap(start: datetime, end: datetime, spans: list[dict[str, Any]], now: datetime) -> float:
    """Seconds of [start, end) during which the clock stood still (挂起)."""
    total = 0.0
    for s in spans:
        lo, hi = max(start, s["start"]), min(end, s["end"] or now)
        if hi > lo:
            total += _seconds(lo, hi)
    return total


def _milestones(events: list[dict[str, Any]]) -> dict[Status, tuple[datetime, str]]:
    """When the case first reached each milestone (time, action) in its current round.

    A 退回 (return) undoes the milestones after 立案: the time lost to the returned dispatch counts into 立案 → 派遣.
    A 重新办理 (reopen) starts a new round at the reopen: its stages run from there.
    """
    order = {s: i for i, s in enumerate(MILESTONES)}
    reached: dict[Status, tuple[datetime, str]] = {}
    for e in events:
        before, after = e.get("status_before"), Status(e["status_after"])
        if before == after.value or after not in order:
            continue
        if e["action"] in REWINDS:
            for s in [s for s in reached if order[s] > order[after]]:
                del reached[s]
            if e["action"] == Action.REOPEN or after not in reached:  # 重新办理 starts a new round
                reached[after] = (e["occurred_at"], e["action"])
        elif after not in reached:
            reached[after] = (e["occurred_at"], e["action"])
    return reached


def _suspensions(events: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """挂起 spans: start, end (None while still held), who and why, and the held seconds (so far)."""
    spans: list[dict[str, Any]] = []
    for e in events:
        if e["action"] == Action.SUSPEND and (not spans or spans[-1]["end"] is not None):
            spans.append({"start": e["occurred_at"], "end": None, "actor": e.get("actor"), "note": e.get("note"),
                          "resume_note": None, "held_s": 0.0, "new_due": None})
        elif e["action"] == Action.RESUME and spans and spans[-1]["end"] is None:
            spans[-1].update(end=e["occurred_at"], resume_note=e.get("note"), new_due=e.get("due_at"))
    for s in spans:
        s["held_s"] = _seconds(s["start"], s["end"] or now)
    return spans


def _extensions(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """延期: when, who, why, and the deadline before and after (as the timeline recorded them)."""
    out: list[dict[str, Any]] = []
    last_due = None
    for e in events:
        if e["action"] == Action.EXTEND:
            out.append({"at": e["occurred_at"], "actor": e.get("actor"), "note": e.get("note"),
                        "old_due": last_due, "new_due": e.get("due_at")})
        if e.get("due_at") is not None:
            last_due = e["due_at"]
    return out


def _stages(case: dict[str, Any], events: list[dict[str, Any]], spans: list[dict[str, Any]], now: datetime,
            warn_share: float) -> list[dict[str, Any]]:
    reached = _milestones(events)
    chain = [s for s in MILESTONES if s in reached]
    held_now = case.get("suspended_at") is not None
    stages: list[dict[str, Any]] = []

    def judged(end_status: Status, start: datetime, end: datetime | None) -> dict[str, Any]:
        field = DEADLINE_OF.get(end_status)
        deadline = case.get(field) if field else None
        stop = end or now
        out = {"to": end_status.value, "start": start, "end": end, "running": end is None,
               "duration_s": _seconds(start, stop), "suspended_s": _overlap(start, stop, spans, now),
               "deadline_field": field, "deadline": deadline, "met": None, "margin_s": None, "state": None}
        if deadline is None:
            return out
        out["margin_s"] = _seconds(stop, deadline)  # > 0: time to spare (or spared); < 0: past the deadline
        if end is not None:
            out["met"] = end <= deadline
        elif held_now:
            out["state"] = "suspended"  # the clock stands still; the deadline moves when it runs again
        else:
            out["state"] = sla.state(now, case["reported_at"], deadline, warn_share)
            out["met"] = False if out["state"] == "overdue" else None
        return out

    for a, b in zip(chain, chain[1:], strict=False):
        stages.append({"from": a.value, "from_action": reached[a][1], "to_action": reached[b][1],
                       **judged(b, reached[a][0], reached[b][0])})
    last = chain[-1] if chain else None
    if last is not None and last is not Status.EVALUATED:
        # the stage under way: from the last milestone to the next one this status leads to
        status = Status(case["status"])
        nxt = Status.RESOLVED if status in (Status.ACCEPTED, Status.HANDLING) else MILESTONES[MILESTONES.index(last) + 1]
        stages.append({"from": last.value, "from_action": reached[last][1], "to_action": None,
                       **judged(nxt, reached[last][0], None)})
    return stages


def _departments(rows: list[dict[str, Any]], whistles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    verdict = {(w["department"], w["whistled_at"]): w for w in whistles}
    out = []
    for r in rows:
        d = {k: r[k] for k in ("department", "role", "assigned_at", "due_at", "accepted_at", "accepted_on_time",
                               "resolved_at", "resolved_on_time", "returned_at", "reopened_at", "ended_at",
                               "checked_in_at", "rating", "evaluated_at", "handling_s")}
        w = verdict.get((r["department"], r["assigned_at"])) if r["role"] == "whistle" else None
        d["checkin_status"] = w["status"] if w else None
        out.append(d)
    return out


def _evaluation(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The evaluation in force: the last 评价 not undone by a later 重新办理."""
    found = None
    for e in events:
        if e["action"] == Action.EVALUATE:
            rating = e.get("rating")
            found = {"at": e["occurred_at"], "rating": rating, "actor": e.get("actor"), "note": e.get("note"),
                     "satisfied": None if rating is None else rating >= SATISFIED}
        elif e["action"] == Action.REOPEN:
            found = None
    return found


def auto_route(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What the auto-router (智能分拨) said of the case: its dispatch (when, the lead departments, the departments it
    summoned, its note and the rule that note names), or its note that no rule could place the case (``unrouted``:
    it waits for a dispatcher)."""
    auto = [e for e in events if e.get("actor") == AUTO_ACTOR]
    dispatch = next((e for e in reversed(auto) if e["action"] == Action.DISPATCH), None)
    if dispatch is not None:
        whistle = next((e for e in reversed(auto) if e["action"] == Action.WHISTLE), None)
        return {"at": dispatch["occurred_at"], "departments": dispatch.get("departments") or [],
                "summoned": (whistle.get("departments") or []) if whistle else [], "note": dispatch.get("note"),
                "rule": rule_of(dispatch.get("note")), "unrouted": False}
    note = next((e for e in reversed(auto) if e["action"] == Action.NOTE), None)
    if note is not None:
        return {"at": note["occurred_at"], "departments": [], "summoned": [], "note": note.get("note"), "rule": None,
                "unrouted": True}
    return None


def version(view: dict[str, Any]) -> str:
    """What changes whenever the case does: the page redraws only then."""
    c = view["case"]
    return f"{c['updated_at'].isoformat() if c['updated_at'] else ''}|{len(view['events'])}|{c['status']}"


def case_view(engine, settings, case_id: int, now: datetime | None = None, *,
              personal: bool = False) -> dict[str, Any] | None:
    """Everything the case page shows about one case, or None if there is no such case. The reporter's name and
    phone are masked unless ``personal``."""
    case = queries.get_case(engine, case_id, personal=personal, own=context.own_prefixes())
    if case is None:
        return None
    now = now or datetime.now(UTC)
    events = case.pop("timeline")
    limit = timedelta(minutes=settings.whistle_report_minutes)
    whistles = [w.as_dict() for w in whistle_reports(events, now, limit)]
    spans = _suspensions(events, now)
    is_open = Status(case["status"]) in OPEN_STATUSES
    running = is_open and case.get("suspended_at") is None and case.get("due_at") is not None
    overdue_now = running and sla.state(now, case["reported_at"], case["due_at"], settings.sla_warn_share) == "overdue"
    resolved_late = (case.get("resolved_at") is not None and case.get("due_at") is not None
                     and case["resolved_at"] > case["due_at"])
    return {
        "now": now,
        "case": {k: case.get(k) for k in FIELDS},
        "reporter": case["reporter"],
        "open": is_open,
        "overdue": bool(is_open and (case.get("overdue") or overdue_now)),
        "resolved_late": resolved_late,
        "events": [{k: e.get(k) for k in ("id", "action", "occurred_at", "status_before", "status_after", "actor",
                                          "departments", "note", "rating", "due_at", "source")} for e in events],
        "stages": _stages(case, events, spans, now, settings.sla_warn_share),
        "departments": _departments(queries.case_assignments(engine, case_id), whistles),
        "whistles": whistles,
        "whistle_limit_s": limit.total_seconds(),
        "extensions": _extensions(events),
        "suspensions": spans,
        "evaluation": _evaluation(events),
        "auto_route": auto_route(events),
    }


def page_view(case_id: int, now: datetime | None = None, *, personal: bool = False) -> dict[str, Any] | None:
    """:func:`case_view` on the app's own connection and settings: what the case page calls."""
    return case_view(context.engine(), context.settings(), case_id, now, personal=personal)
