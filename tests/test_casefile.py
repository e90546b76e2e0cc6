"""Unit tests for core.casefile: a new case's deadlines and what each event changes. No Redis, no SQL.

Expected deadlines are worked out by hand on the default office hours (09:00-12:00 and 14:00-18:00 Asia/Shanghai,
UTC+8, so a working day is 7 h); the calendars below make every day plain Monday-Friday and known, or unknown.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from core import casefile
from core.lifecycle import Action, Status
from core.records import CaseEvent
from core.sla import Limit, WorkingCalendar

CST = timezone(timedelta(hours=8))
KNOWN = WorkingCalendar(covered_years=[2025])  # 2025: plain Mon-Fri, no holidays, nothing provisional
GRID = "110105001001001"  # street 110105001, community 110105001001
NOW = datetime(2025, 3, 20, 8, 0, tzinfo=UTC)
CATEGORY = SimpleNamespace(default_grade=3, accept_limit=Limit(2, "wh"), complete_limit=Limit(1, "wd"))


def cst(*args: int) -> datetime:
    return datetime(*args, tzinfo=CST)


def event(action: Action | str, at: datetime, **fields) -> CaseEvent:
    return CaseEvent(source="t", external_id="c1", event=Action(action), occurred_at=at, **fields)


def report(at: datetime, **fields) -> CaseEvent:
    return event(Action.REPORT, at, category="0101", **fields)


def case(**fields) -> dict:
    """An open case reported Friday 2025-03-14 10:00 CST, due Monday 10:00 CST, not suspended."""
    base = {"status": "dispatched", "departments": ["roads"], "onsite": False, "overdue": False, "warned": False,
            "escalated": False, "rating": None, "flags": None, "grade": 3, "category": "0101", "lon": None,
            "lat": None, "grid_code": None, "street_code": None, "community_code": None, "located": False,
            "suspended_at": None, "accept_due_at": cst(2025, 3, 14, 12), "due_at": cst(2025, 3, 17, 10),
            "accepted_at": None, "resolved_at": None, "closed_at": None, "dispatched_at": None, "evaluated_at": None,
            "due_provisional": False}
    base.update(fields)
    return base


def no_location(_ev: CaseEvent) -> str | None:
    raise AssertionError("an event without a location is not located")


# ---- a new case ---------------------------------------------------------------------------------

def test_a_report_gets_its_deadlines_from_its_categorys_limits_on_the_working_calendar():
    # Friday 10:00 + 2 working hours = Friday 12:00 (the morning interval's end).
    # Friday 10:00 + 1 working day (7 h): 2 h to 12:00, 4 h 14:00-18:00, then 1 h from Monday 09:00 = Monday 10:00.
    row = casefile.new_case(report(cst(2025, 3, 14, 10), grid_code=GRID), CATEGORY, KNOWN, district="110105",
                            grid=GRID, now=NOW)
    assert row["accept_due_at"] == datetime(2025, 3, 14, 4, 0, tzinfo=UTC)
    assert row["due_at"] == datetime(2025, 3, 17, 2, 0, tzinfo=UTC)
    assert row["due_provisional"] is False
    assert row["grade"] == 3 and row["status"] is None and row["id"] is None
    assert (row["street_code"], row["community_code"], row["grid_code"], row["located"]) == (
        "110105001", "110105001001", GRID, True)
    assert row["reported_at"] == cst(2025, 3, 14, 10) and row["created_at"] == row["updated_at"] == NOW


def test_a_report_after_hours_starts_counting_at_the_next_working_morning():
    # Saturday 20:00: nothing counts until Monday 09:00; +2 wh = Monday 11:00; +7 h = Monday 18:00.
    row = casefile.new_case(report(cst(2025, 3, 15, 20)), CATEGORY, KNOWN, district="110105", grid=None, now=NOW)
    assert row["accept_due_at"] == cst(2025, 3, 17, 11)
    assert row["due_at"] == cst(2025, 3, 17, 18)
    assert row["located"] is False and row["street_code"] is None


def test_a_deadline_on_days_the_calendar_does_not_know_is_provisional():
    # 2003 is neither in chinesecalendar's data nor covered: plain Mon-Fri is guessed, and said to be a guess.
    row = casefile.new_case(report(cst(2003, 3, 14, 10)), CATEGORY, WorkingCalendar(), district="110105",
                            grid=None, now=NOW)
    assert row["due_at"] == cst(2003, 3, 17, 10)
    assert row["due_provisional"] is True


def test_a_sources_own_deadlines_win_and_calendar_hours_ignore_the_calendar():
    given = cst(2025, 3, 30, 18)
    cat = SimpleNamespace(default_grade=2, accept_limit=Limit(30, "m"), complete_limit=Limit(4, "wd"))
    row = casefile.new_case(report(cst(2025, 3, 14, 23, 50), due_at=given, grade=1), cat, WorkingCalendar(),
                            district="110105", grid=None, now=NOW)
    assert row["due_at"] == given
    assert row["accept_due_at"] == cst(2025, 3, 15, 0, 20)  # 30 calendar minutes, at night all the same
    assert row["due_provisional"] is False and row["grade"] == 1


def test_a_category_without_limits_leaves_the_case_without_deadlines():
    cat = SimpleNamespace(default_grade=4, accept_limit=None, complete_limit=None)
    assert casefile.deadlines(report(cst(2025, 3, 14, 10)), cat, KNOWN) == (None, None, False)


# ---- what each event changes ----------------------------------------------------------------------

def test_the_first_dispatch_counts_whatever_the_arrival_order_and_names_the_departments_once():
    c = case(dispatched_at=cst(2025, 3, 14, 11))
    ch = casefile.changes(c, event("dispatch", cst(2025, 3, 14, 10, 30), departments=["water", "water", "parks"]),
                          Status.DISPATCHED, no_location)
    assert ch == {"dispatched_at": cst(2025, 3, 14, 10, 30), "departments": ["water", "parks"]}


def test_a_whistle_adds_departments_to_the_ones_on_the_case():
    ch = casefile.changes(case(), event("whistle", cst(2025, 3, 14, 11), departments=["parks", "roads"]),
                          Status.DISPATCHED, no_location)
    assert ch["departments"] == ["roads", "parks"] and ch["dispatched_at"] == cst(2025, 3, 14, 11)


@pytest.mark.parametrize(("action", "target", "expected"), [
    ("return", Status.REGISTERED, {"departments": []}),
    ("accept", Status.ACCEPTED, {"accepted_at": cst(2025, 3, 14, 11)}),
    ("resolve", Status.RESOLVED, {"resolved_at": cst(2025, 3, 14, 11), "onsite": False}),
    ("onsite", Status.RESOLVED, {"resolved_at": cst(2025, 3, 14, 11), "onsite": True}),
    ("close", Status.CLOSED, {"closed_at": cst(2025, 3, 14, 11)}),
    ("warning", Status.DISPATCHED, {"warned": True}),
    ("escalate", Status.DISPATCHED, {"escalated": True}),
    ("overdue", Status.DISPATCHED, {"overdue": True}),
    ("overdue", Status.RESOLVED, {"overdue": False}),  # the sweep's mark landing just after the resolution
    ("remind", Status.DISPATCHED, {}),
    ("note", Status.DISPATCHED, {}),
])
def test_each_action_changes_its_own_fields(action, target, expected):
    assert casefile.changes(case(), event(action, cst(2025, 3, 14, 11)), target, no_location) == expected


def test_an_evaluation_rates_and_a_reopening_clears_the_results():
    closed = case(status="closed", resolved_at=cst(2025, 3, 14, 11), closed_at=cst(2025, 3, 14, 12))
    assert casefile.changes(closed, event("evaluate", cst(2025, 3, 14, 15), rating=4), Status.EVALUATED,
                            no_location) == {"evaluated_at": cst(2025, 3, 14, 15), "rating": 4}
    assert casefile.changes(closed, event("reopen", cst(2025, 3, 14, 16)), Status.REGISTERED, no_location) == {
        "resolved_at": None, "closed_at": None, "rating": None}


def test_an_extension_sets_the_new_deadline_and_starts_the_clocks_marks_over():
    c = case(overdue=True, warned=True, escalated=True, due_provisional=True)
    later = cst(2025, 3, 21, 18)
    ch = casefile.changes(c, event("extend", cst(2025, 3, 18, 9), due_at=later), Status.DISPATCHED, no_location)
    assert ch == {"due_at": later, "due_provisional": False, "overdue": False, "warned": False, "escalated": False}
    past = casefile.changes(c, event("extend", cst(2025, 3, 18, 9), due_at=cst(2025, 3, 18, 8)), Status.DISPATCHED,
                            no_location)
    assert past["overdue"] is True


def test_a_suspension_keeps_its_first_time_and_a_resumption_moves_the_deadlines_by_the_pause():
    assert casefile.changes(case(), event("suspend", cst(2025, 3, 14, 11)), Status.DISPATCHED, no_location) == {
        "suspended_at": cst(2025, 3, 14, 11)}
    stopped = case(suspended_at=cst(2025, 3, 14, 11))
    assert casefile.changes(stopped, event("suspend", cst(2025, 3, 14, 15)), Status.DISPATCHED, no_location) == {}
    # Suspended Friday 11:00, resumed Saturday 14:30: 27.5 h of calendar time stood still.
    ch = casefile.changes(stopped, event("resume", cst(2025, 3, 15, 14, 30)), Status.DISPATCHED, no_location)
    assert ch == {"due_at": cst(2025, 3, 18, 13, 30), "accept_due_at": cst(2025, 3, 15, 15, 30),
                  "suspended_at": None, "overdue": False}


def test_a_resumption_past_the_moved_deadline_is_overdue_and_one_without_a_suspension_changes_nothing():
    # Due Friday 10:30, suspended at 11:00, resumed Wednesday 12:00: 5 days 1 h later, due Wednesday 11:30.
    stopped = case(due_at=cst(2025, 3, 14, 10, 30), suspended_at=cst(2025, 3, 14, 11), accept_due_at=None)
    ch = casefile.changes(stopped, event("resume", cst(2025, 3, 19, 12)), Status.DISPATCHED, no_location)
    assert ch == {"due_at": cst(2025, 3, 19, 11, 30), "suspended_at": None, "overdue": True}
    assert casefile.changes(case(), event("resume", cst(2025, 3, 14, 12)), Status.DISPATCHED, no_location) == {}


def test_any_later_event_may_correct_grade_category_deadline_flags_and_place():
    c = case(flags=["late_report"])
    seen = []

    def locate(ev: CaseEvent) -> str:
        seen.append(ev)
        return GRID

    ev = event("note", cst(2025, 3, 14, 11), grade=1, category="0202", due_at=cst(2025, 3, 20, 18),
               flags=["duplicate", "late_report"], lon=116.4, lat=39.9)
    ch = casefile.changes(c, ev, Status.DISPATCHED, locate)
    assert seen == [ev]
    assert ch == {"flags": ["duplicate", "late_report"], "grade": 1, "category": "0202",
                  "due_at": cst(2025, 3, 20, 18), "lon": 116.4, "lat": 39.9, "grid_code": GRID,
                  "street_code": "110105001", "community_code": "110105001001", "located": True}


def test_a_relocation_outside_every_grid_unlocates_the_case():
    ch = casefile.changes(case(grid_code=GRID, located=True), event("note", cst(2025, 3, 14, 11), lon=1.0, lat=1.0),
                          Status.DISPATCHED, lambda _ev: None)
    assert ch == {"lon": 1.0, "lat": 1.0, "grid_code": None, "street_code": None, "community_code": None,
                  "located": False}


def test_a_report_is_never_corrected_by_its_own_fields():
    c = case(status=None, flags=["late_report"], due_at=cst(2025, 3, 17, 10))
    ev = report(cst(2025, 3, 14, 10), grade=1, flags=["duplicate"], lon=116.4, lat=39.9)
    assert casefile.changes(c, ev, Status.REPORTED, no_location) == {}


def test_an_event_after_the_deadline_of_a_running_open_case_marks_it_overdue():
    after = cst(2025, 3, 17, 10, 1)
    assert casefile.changes(case(), event("accept", after), Status.ACCEPTED, no_location) == {
        "accepted_at": after, "overdue": True}
    # not when the case is resolved by it, nor while its clock stands still
    assert "overdue" not in casefile.changes(case(), event("resolve", after), Status.RESOLVED, no_location)
    assert casefile.changes(case(suspended_at=cst(2025, 3, 16, 9)), event("note", after), Status.DISPATCHED,
                            no_location) == {}
    # exactly at the deadline counts as past it
    assert casefile.changes(case(), event("note", cst(2025, 3, 17, 10)), Status.DISPATCHED, no_location) == {
        "overdue": True}


def test_the_deadline_an_event_set_is_recorded_on_its_timeline_row():
    first, moved = cst(2025, 3, 17, 10), cst(2025, 3, 18, 10)
    assert casefile.deadline_set(report(cst(2025, 3, 14, 10)), None, first) == first
    assert casefile.deadline_set(event("extend", cst(2025, 3, 14, 11), due_at=moved), first, moved) == moved
    assert casefile.deadline_set(event("accept", cst(2025, 3, 14, 11)), first, first) is None

