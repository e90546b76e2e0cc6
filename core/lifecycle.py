"""The case lifecycle: which action may move a case from which status to which.

上报 reported → 立案 registered → 派遣 dispatched → 签收 accepted → 处置 handling → 办结 resolved
→ 核查结案 closed → 评价 evaluated, plus 现场处置 (resolved on the spot), 退回 (returned by a
department), 吹哨 (whistle: summon several departments) and reopen.

This is the one place the rule lives; the worker, the API and the screens all ask it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    REPORTED = "reported"
    REGISTERED = "registered"
    DISPATCHED = "dispatched"
    ACCEPTED = "accepted"
    HANDLING = "handling"
    RESOLVED = "resolved"
    CLOSED = "closed"
    EVALUATED = "evaluated"


class Action(StrEnum):
    REPORT = "report"
    REGISTER = "register"
    DISPATCH = "dispatch"
    TRANSFER = "transfer"  # 转派: dispatched elsewhere while still in a department's hands
    WHISTLE = "whistle"
    ACCEPT = "accept"
    HANDLE = "handle"
    RESOLVE = "resolve"
    ONSITE = "onsite"
    RETURN = "return"
    CLOSE = "close"
    EVALUATE = "evaluate"
    REOPEN = "reopen"
    # Annotations: recorded on the timeline, never change the status.
    NOTE = "note"
    OVERDUE = "overdue"
    # SLA annotations: the clock, not the status.
    WARNING = "warning"  # 临期: little of the window is left
    REMIND = "remind"  # 催办: a reminder to the responsible departments
    ESCALATE = "escalate"  # 升级: overdue past the margin, raised to the department head / district
    EXTEND = "extend"  # 延期: an approved new deadline (due_at), with who and why
    SUSPEND = "suspend"  # 挂起: the clock stops
    RESUME = "resume"  # 恢复: the clock runs again; the deadline moves by the suspended time
    CHECKIN = "checkin"  # 报到: a summoned department reports in after a whistle
    SUPERVISE = "supervise"  # 督办: a supervision order, its 批示 (note) and an optional deadline (due_at)


STATUS_LABELS = {
    Status.REPORTED: ("上报", "Reported"),
    Status.REGISTERED: ("立案", "Registered"),
    Status.DISPATCHED: ("派遣", "Dispatched"),
    Status.ACCEPTED: ("签收", "Accepted"),
    Status.HANDLING: ("处置", "Handling"),
    Status.RESOLVED: ("办结", "Resolved"),
    Status.CLOSED: ("核查结案", "Closed"),
    Status.EVALUATED: ("评价", "Evaluated"),
}

ACTION_LABELS = {
    Action.REPORT: ("上报", "Report"),
    Action.REGISTER: ("立案", "Register"),
    Action.DISPATCH: ("派遣", "Dispatch"),
    Action.TRANSFER: ("转派", "Transfer"),
    Action.WHISTLE: ("吹哨", "Whistle"),
    Action.ACCEPT: ("签收", "Accept"),
    Action.HANDLE: ("处置", "Start handling"),
    Action.RESOLVE: ("办结", "Resolve"),
    Action.ONSITE: ("现场处置", "Resolve on the spot"),
    Action.RETURN: ("退回", "Return"),
    Action.CLOSE: ("核查结案", "Close"),
    Action.EVALUATE: ("评价", "Evaluate"),
    Action.REOPEN: ("重新办理", "Reopen"),
    Action.NOTE: ("备注", "Note"),
    Action.OVERDUE: ("超期", "Overdue"),
    Action.WARNING: ("临期", "Deadline near"),
    Action.REMIND: ("催办", "Reminder"),
    Action.ESCALATE: ("升级督办", "Escalated"),
    Action.EXTEND: ("延期", "Extended"),
    Action.SUSPEND: ("挂起", "Suspended"),
    Action.RESUME: ("恢复", "Resumed"),
    Action.CHECKIN: ("报到", "Reported in"),
    Action.SUPERVISE: ("督办", "Supervision order"),
}

# action -> (statuses it may start from, status it leads to). None as a start means "no case yet".
TRANSITIONS: dict[Action, tuple[frozenset[Status | None], Status]] = {
    Action.REPORT: (frozenset({None}), Status.REPORTED),
    Action.REGISTER: (frozenset({Status.REPORTED}), Status.REGISTERED),
    Action.DISPATCH: (frozenset({Status.REGISTERED}), Status.DISPATCHED),
    Action.TRANSFER: (frozenset({Status.DISPATCHED, Status.ACCEPTED, Status.HANDLING}), Status.DISPATCHED),
    Action.WHISTLE: (
        frozenset({Status.REGISTERED, Status.DISPATCHED, Status.ACCEPTED, Status.HANDLING}),
        Status.DISPATCHED,
    ),
    Action.ACCEPT: (frozenset({Status.DISPATCHED}), Status.ACCEPTED),
    Action.HANDLE: (frozenset({Status.ACCEPTED}), Status.HANDLING),
    Action.RESOLVE: (frozenset({Status.ACCEPTED, Status.HANDLING}), Status.RESOLVED),
    Action.ONSITE: (frozenset({Status.REPORTED, Status.REGISTERED}), Status.RESOLVED),
    Action.RETURN: (frozenset({Status.DISPATCHED, Status.ACCEPTED}), Status.REGISTERED),
    Action.CLOSE: (frozenset({Status.RESOLVED}), Status.CLOSED),
    Action.EVALUATE: (frozenset({Status.CLOSED}), Status.EVALUATED),
    Action.REOPEN: (frozenset({Status.RESOLVED, Status.CLOSED, Status.EVALUATED}), Status.REGISTERED),
}

ANNOTATIONS = frozenset({
    Action.NOTE, Action.OVERDUE, Action.WARNING, Action.REMIND, Action.ESCALATE, Action.EXTEND, Action.SUSPEND,
    Action.RESUME, Action.CHECKIN, Action.SUPERVISE,
})
# Annotations that change the clock, so only make sense while the case is still the city's to do. (The sweep's own
# marks — overdue, warning, remind, escalate — may land just after a case was resolved; they are kept, harmlessly.)
OPEN_ONLY = frozenset({Action.EXTEND, Action.SUSPEND, Action.RESUME, Action.SUPERVISE})

# A case is "open" (still the city's to do) until it is resolved.
OPEN_STATUSES = frozenset(
    {Status.REPORTED, Status.REGISTERED, Status.DISPATCHED, Status.ACCEPTED, Status.HANDLING}
)
# Actions that need departments named in the event.
NEEDS_DEPARTMENTS = frozenset({Action.DISPATCH, Action.TRANSFER, Action.WHISTLE})


class TransitionError(ValueError):
    """An action that the case's current status does not allow."""

    def __init__(self, action: Action, status: Status | None, reason: str):
        super().__init__(reason)
        self.action = action
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Outcome:
    status: Status
    changed: bool  # False for annotations


# (status, action) -> outcome of every legal move; str keys match the StrEnum members too.
_MOVES = {(s, a): Outcome(target, True) for a, (starts, target) in TRANSITIONS.items() for s in starts}


def apply(status: Status | None, action: Action | str) -> Outcome:
    """The status after ``action`` on a case now in ``status`` (None: the case does not exist yet).

    Raises TransitionError with a reason naming both when the move is not allowed.
    """
    legal = _MOVES.get((status, action))
    if legal is not None:
        return legal
    try:
        action = Action(action)
    except ValueError:
        raise TransitionError(action, status, f"unknown action {action!r}; use one of: {', '.join(a.value for a in Action)}") from None
    status = Status(status) if status is not None else None
    if action in ANNOTATIONS:
        if status is None:
            raise TransitionError(action, status, f"cannot record {action.value!r}: the case has not been reported")
        if action in OPEN_ONLY and status not in OPEN_STATUSES:
            raise TransitionError(action, status, f"cannot {action.value} a case that is {status.value}: "
                                                  "its clock has stopped")
        return Outcome(status, False)
    starts, target = TRANSITIONS[action]
    if status in starts:
        return Outcome(target, True)
    if status is None:
        reason = f"cannot {action.value}: the case has not been reported (a 'report' event must come first)"
    elif action is Action.REPORT:
        reason = "cannot report: the case already exists"
    else:
        allowed = ", ".join(sorted(s.value for s in starts if s is not None))
        reason = f"cannot {action.value} a case that is {status.value}; allowed from: {allowed}"
    raise TransitionError(action, status, reason)


def allowed_actions(status: Status | None) -> list[Action]:
    """Every action that may follow ``status`` (annotations included once the case exists)."""
    out = [a for a, (starts, _) in TRANSITIONS.items() if status in starts]
    if status is not None:
        out += sorted(a for a in ANNOTATIONS if a not in OPEN_ONLY or status in OPEN_STATUSES)
    return out


def starts_of(action: Action) -> frozenset[Status]:
    """The statuses a move may start from (empty for an annotation: any existing case)."""
    return frozenset(s for s in TRANSITIONS[action][0] if s is not None) if action in TRANSITIONS else frozenset()


def is_open(status: Status | str) -> bool:
    return Status(status) in OPEN_STATUSES


# The steps a case takes forward through a department, in the order a path prefers them: what an importer or Open311
# infers when a source tells only where a case is now. (现场处置, ONSITE, is the other way to resolved: ask for it.)
FORWARD = (Action.REGISTER, Action.DISPATCH, Action.ACCEPT, Action.HANDLE, Action.RESOLVE, Action.CLOSE, Action.EVALUATE)


def path_to(start: Status | None, goal: Callable[[Status], bool] | Status,
            steps: Iterable[Action] = FORWARD) -> list[Action] | None:
    """The shortest run of ``steps`` (forward moves) from ``start`` to a status meeting ``goal`` (a status, or a
    test of one); [] when ``start`` already does, None when no run of those steps gets there. Ties go to the
    order of ``steps``. The one path-finder: every feed that infers the steps a source does not record asks here."""
    target = None if callable(goal) else Status(goal)
    want = goal if target is None else (lambda s: s == target)
    allowed = tuple(steps)
    queue: deque[tuple[Status | None, list[Action]]] = deque([(start, [])])
    seen = {start}
    while queue:
        status, path = queue.popleft()
        if status is not None and want(status):
            return path
        for a in allowed:
            nxt = _MOVES.get((status, a))
            if nxt is not None and nxt.status not in seen:
                seen.add(nxt.status)
                queue.append((nxt.status, [*path, a]))
    return None
