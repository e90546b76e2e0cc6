"""吹哨报到 status per department, against hand-worked timelines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core.whistle import whistle_reports

T = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
M = timedelta(minutes=1)


def ev(action, minutes, *deps):
    return {"action": action, "occurred_at": T + minutes * M, "departments": list(deps)}


def test_on_time_late_missing_pending():
    events = [
        ev("report", -10), ev("register", -9),
        ev("whistle", 0, "cg", "sz", "zj", "ga"),
        ev("checkin", 12, "cg"),     # within 30 min: on time
        ev("checkin", 30, "sz"),     # exactly at the limit: on time
        ev("checkin", 45, "zj"),     # after 30 min: late
        # ga never checks in
    ]
    got = {r.department: r.status for r in whistle_reports(events, now=T + 60 * M)}
    assert got == {"cg": "on_time", "sz": "on_time", "zj": "late", "ga": "missing"}
    early = {r.department: r.status for r in whistle_reports(events, now=T + 20 * M)}
    assert early["ga"] == "pending" and early["cg"] == "on_time"


def test_each_whistle_is_judged_on_its_own_and_order_does_not_matter():
    events = [ev("whistle", 0, "cg"), ev("checkin", 5, "cg"), ev("whistle", 100, "cg", "sz"), ev("checkin", 160, "cg")]
    reports = whistle_reports(list(reversed(events)), now=T + 200 * M, limit=timedelta(minutes=30))
    assert [(r.department, r.whistled_at, r.status) for r in reports] == [
        ("cg", T, "on_time"),             # the 5-minute check-in answers the first whistle
        ("cg", T + 100 * M, "late"),      # the second whistle is answered only at +160
        ("sz", T + 100 * M, "missing"),
    ]
    # A check-in before the whistle does not count for it.
    assert whistle_reports([ev("checkin", -5, "cg"), ev("whistle", 0, "cg")], now=T + 40 * M)[0].status == "missing"
