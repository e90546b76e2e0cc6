"""Every (status, action) pair, checked against a table written out by hand from the process description."""

from __future__ import annotations

import itertools

import pytest

from core import lifecycle
from core.lifecycle import Action, Status, TransitionError

# The process as the dispatch center describes it, written independently of core.lifecycle.TRANSITIONS:
# (from, action) -> to. Anything not listed must be refused.
R, G, D, A, H, V, C, E = (
    "reported", "registered", "dispatched", "accepted", "handling", "resolved", "closed", "evaluated",
)
EXPECTED = {
    (None, "report"): R,
    (R, "register"): G,        # 立案
    (G, "dispatch"): D,        # 派遣
    (D, "accept"): A,          # 签收
    (A, "handle"): H,          # 处置
    (A, "resolve"): V,         # 办结 straight after accepting
    (H, "resolve"): V,
    (V, "close"): C,           # 核查结案
    (C, "evaluate"): E,        # 评价
    (R, "onsite"): V,          # 现场处置 by the grid worker
    (G, "onsite"): V,
    (D, "transfer"): D,        # 转派: to other departments while still in a department's hands
    (A, "transfer"): D,
    (H, "transfer"): D,
    (D, "return"): G,          # 退回 by the department: back to be re-dispatched
    (A, "return"): G,
    (G, "whistle"): D,         # 吹哨: summon several departments
    (D, "whistle"): D,
    (A, "whistle"): D,
    (H, "whistle"): D,
    (V, "reopen"): G,
    (C, "reopen"): G,
    (E, "reopen"): G,
}
STATUSES = [None, R, G, D, A, H, V, C, E]
# Timeline marks that never change the status; extend/suspend/resume only while the case is open.
MARKS = ["note", "overdue", "warning", "remind", "escalate", "checkin"]
CLOCK = ["extend", "suspend", "resume", "supervise"]  # 督办 too: an order for work still to do
MOVES = ["report", "register", "dispatch", "transfer", "whistle", "accept", "handle", "resolve", "onsite", "return", "close",
         "evaluate", "reopen"]


@pytest.mark.parametrize(("status", "action"), list(itertools.product(STATUSES, MOVES)))
def test_every_pair(status, action):
    expected = EXPECTED.get((status, action))
    if expected is None:
        with pytest.raises(TransitionError) as exc:
            lifecycle.apply(status, action)
        # The reason names the action, and the current status when there is one.
        assert action in exc.value.reason
        if status is not None and action != "report":
            assert status in exc.value.reason
    else:
        out = lifecycle.apply(status, action)
        assert out.status == expected and out.changed


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("note", MARKS + CLOCK)
def test_annotations_keep_status(status, note):
    if status is None or (note in CLOCK and status not in (R, G, D, A, H)):
        with pytest.raises(TransitionError):
            lifecycle.apply(status, note)
    else:
        out = lifecycle.apply(status, note)
        assert out.status == status and not out.changed


def test_unknown_action_is_refused_with_the_list():
    with pytest.raises(TransitionError, match="unknown action 'fly'.*report"):
        lifecycle.apply(R, "fly")


def test_allowed_actions_agree_with_table():
    for status in STATUSES:
        expected = {a for (s, a) in EXPECTED if s == status}
        got = {a.value for a in lifecycle.allowed_actions(status)} - set(MARKS) - set(CLOCK)
        assert got == expected, status


def test_open_statuses():
    assert {s for s in STATUSES if s and lifecycle.is_open(s)} == {R, G, D, A, H}
    assert set(Status) == {Status(s) for s in STATUSES if s}
    assert {a.value for a in Action} >= set(MOVES)


@pytest.mark.parametrize("status", STATUSES)
def test_every_allowed_action_applies(status):
    for action in lifecycle.allowed_actions(status):
        lifecycle.apply(status, action)  # raises if allowed_actions offered something apply refuses


# --------------------------------------------------------------------------- the one path-finder (no store needed)

@pytest.mark.parametrize(("start", "goal", "steps", "want"), [
    # written out by hand from the transitions table in DESIGN.md, not computed
    (Status.REPORTED, Status.CLOSED, None, ["register", "dispatch", "accept", "resolve", "close"]),
    (Status.REGISTERED, Status.HANDLING, None, ["dispatch", "accept", "handle"]),
    (Status.DISPATCHED, Status.DISPATCHED, None, []),
    (None, Status.REGISTERED, None, None),  # a case not reported yet: report is not a forward step
    (Status.REGISTERED, Status.RESOLVED, ("onsite", "close"), ["onsite"]),
    (Status.REGISTERED, Status.CLOSED, ("onsite", "close"), ["onsite", "close"]),
    (Status.CLOSED, Status.REGISTERED, None, None),  # reopening is not a forward step
    (Status.REPORTED, Status.EVALUATED, None, ["register", "dispatch", "accept", "resolve", "close", "evaluate"]),
])
def test_path_to_finds_the_shortest_run_of_the_steps_allowed(start, goal, steps, want):
    from core.lifecycle import Action, path_to

    found = path_to(start, goal) if steps is None else path_to(start, goal, [Action(s) for s in steps])
    assert (None if found is None else [a.value for a in found]) == want
    if found:  # and every step of it is legal in turn
        status = start
        for a in found:
            status = lifecycle.apply(status, a).status
        assert status == goal


def test_path_to_takes_a_test_of_the_status_too():
    from core.lifecycle import OPEN_STATUSES, path_to

    assert [a.value for a in path_to(Status.REGISTERED, lambda s: s not in OPEN_STATUSES)] == [
        "dispatch", "accept", "resolve"]


def test_there_is_one_lifecycle_path_finder():
    """No feed keeps a breadth-first search of its own over the lifecycle (core.lifecycle.path_to is the one)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    found = [str(p.relative_to(root)) for folder in ("core", "ingest", "dashboard", "layouts", "config")
             for p in (root / folder).rglob("*.py") if re.search(r"\.popleft\(", p.read_text(encoding="utf-8"))]
    assert found == ["core/lifecycle.py"], found
