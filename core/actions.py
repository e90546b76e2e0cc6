"""在线督办: the actions a user may take on a case from the dashboard, who may take which, and what each needs.

An action is published as a case event of the lifecycle (core/lifecycle.py), so the worker applies it by the same
rules as any feed's event. This module only says which of the lifecycle's actions a person may ask for, what
the request must carry, and who may ask: one table (``MAY_ACT``), checked on the server for the API, every Dash
callback and every page.

- ``dispatcher`` and ``admin`` take every action;
- ``leader`` may 督办 (``supervise``, with its 批示), 催办 (``remind``) and add a note, within their jurisdiction;
- ``screen`` never acts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from core.lifecycle import ACTION_LABELS, STATUS_LABELS, Action, Status, TransitionError, apply, starts_of
from core.records import LIMITS, MAX_DEPARTMENTS

# The actions a person may ask for, in the order the screens offer them.
USER_ACTIONS: tuple[Action, ...] = (
    Action.REGISTER, Action.DISPATCH, Action.TRANSFER, Action.WHISTLE, Action.RETURN, Action.EXTEND,
    Action.SUSPEND, Action.RESUME, Action.SUPERVISE, Action.REMIND, Action.CLOSE, Action.REOPEN, Action.NOTE,
)
_ALL = frozenset(USER_ACTIONS)
MAY_ACT: dict[str, frozenset[Action]] = {
    "screen": frozenset(),
    "leader": frozenset({Action.SUPERVISE, Action.REMIND, Action.NOTE}),
    "dispatcher": _ALL,
    "admin": _ALL,
}
# What each action's request must carry besides its name (the lifecycle's own needs, said for a person).
NEEDS_DEPARTMENTS = frozenset({Action.DISPATCH, Action.TRANSFER, Action.WHISTLE})
NEEDS_NOTE = frozenset({Action.SUPERVISE, Action.RETURN, Action.REOPEN, Action.NOTE, Action.SUSPEND})
NEEDS_DUE = frozenset({Action.EXTEND})
MAY_DUE = frozenset({Action.EXTEND, Action.SUPERVISE})
FIELDS = frozenset({"action", "departments", "note", "due_at", "request_id"})
MAX_BODY = 16 * 1024  # bytes: a request bigger than any legal one is refused before it is read
ACTOR_LIMIT = LIMITS["actor"]


class ActionError(ValueError):
    """A request that cannot be taken: ``status`` the HTTP answer (400, 403, 409, 422), ``field`` the part at
    fault (None: the request as a whole); ``zh`` the same reason in Chinese, for the screens."""

    def __init__(self, status: int, message: str, field: str | None = None, zh: str | None = None):
        super().__init__(message)
        self.status, self.message, self.field, self.zh = status, message, field, zh or message


def _zh(action: Action) -> str:
    return ACTION_LABELS[action][0]


def refusal_zh(action: Action, status: Status | None) -> str:
    """Why the lifecycle refuses ``action`` on a case now in ``status``, in Chinese."""
    if status is None:
        return f"案件尚未上报，不能{_zh(action)}"
    now = STATUS_LABELS[status][0]
    if starts_of(action):
        starts = "、".join(STATUS_LABELS[s][0] for s in Status if s in starts_of(action))  # the lifecycle's order
        return f"案件当前为「{now}」，不能{_zh(action)}（仅可在{starts}时{_zh(action)}）"
    return f"案件当前为「{now}」，已停止计时，不能{_zh(action)}"


@dataclass(frozen=True)
class Request:
    """A checked request: what to publish."""

    action: Action
    departments: tuple[str, ...] | None
    note: str | None
    due_at: datetime | None
    request_id: str


def may_act(role: str | None, action: Action | str) -> bool:
    """Whether ``role`` may take ``action`` at all (jurisdiction is checked apart, on the case)."""
    try:
        return Action(action) in MAY_ACT.get(role or "", frozenset())
    except ValueError:
        return False


def allowed_for(role: str | None, status: Status | str | None) -> list[Action]:
    """The actions ``role`` may take on a case now in ``status``, in the screens' order."""
    out = []
    for a in USER_ACTIONS:
        if not may_act(role, a):
            continue
        try:
            apply(Status(status) if status else None, a)
        except TransitionError:
            continue
        out.append(a)
    return out


def _action(raw: Any) -> Action:
    names = ", ".join(a.value for a in USER_ACTIONS)
    if not isinstance(raw, str) or not raw:
        raise ActionError(400, f"action: required; one of {names}", "action", "请选择要办理的操作")
    try:
        action = Action(raw)
    except ValueError:
        raise ActionError(400, f"action: unknown action {raw[:40]!r}; use one of {names}", "action",
                          "未知的操作") from None
    if action not in _ALL:
        raise ActionError(400, f"action: {action.value!r} is a feed's or the system's step, not a person's; "
                               f"use one of {names}", "action", f"「{_zh(action)}」由承办部门或系统完成，不能在此办理")
    return action


def _departments(raw: Any, action: Action, known: Collection[str]) -> tuple[str, ...] | None:
    if raw is None or raw == []:
        if action in NEEDS_DEPARTMENTS:
            raise ActionError(400, f"departments: required for {action.value} (a list of department codes)",
                              "departments", f"{_zh(action)}需要选择部门")
        return None
    if not isinstance(raw, list) or not all(isinstance(d, str) for d in raw):
        raise ActionError(400, "departments: give a list of department codes, e.g. [\"cg\"]", "departments",
                          "部门格式不正确")
    if len(raw) > MAX_DEPARTMENTS:
        raise ActionError(400, f"departments: at most {MAX_DEPARTMENTS}", "departments",
                          f"最多选择 {MAX_DEPARTMENTS} 个部门")
    unknown = [d for d in raw if d not in known]
    if unknown:
        raise ActionError(400, f"departments: unknown department(s) {', '.join(repr(d[:32]) for d in unknown)} "
                               "(see /api/v1/routing or config/city/departments.yaml)", "departments", "所选部门不存在")
    return tuple(dict.fromkeys(raw))


def _note(raw: Any, action: Action) -> str | None:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        if action in NEEDS_NOTE:
            what = "the 批示: what is to be done" if action is Action.SUPERVISE else "the reason"
            raise ActionError(400, f"note: required for {action.value} ({what})", "note",
                              "督办需要填写批示" if action is Action.SUPERVISE else f"{_zh(action)}需要填写原因")
        return None
    if not isinstance(raw, str):
        raise ActionError(400, "note: give text", "note", "说明须为文字")
    if len(raw) > LIMITS["note"]:
        raise ActionError(400, f"note: is longer than the limit of {LIMITS['note']} characters", "note",
                          f"说明超过 {LIMITS['note']} 字的上限")
    return raw.strip()


def _due(raw: Any, action: Action, now: datetime) -> datetime | None:
    if raw is None:
        if action in NEEDS_DUE:
            raise ActionError(400, f"due_at: required for {action.value} (the approved new deadline, ISO 8601)",
                              "due_at", "延期需要填写新的期限")
        return None
    if action not in MAY_DUE:
        raise ActionError(400, f"due_at: {action.value} takes no deadline", "due_at", f"{_zh(action)}不设期限")
    try:
        due = datetime.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        due = None
    if due is None:
        raise ActionError(400, "due_at: give an ISO 8601 time, e.g. 2026-12-05T18:00:00+08:00", "due_at",
                          "期限格式不正确")
    if due.tzinfo is None:
        raise ActionError(400, "due_at: give the time with its offset (+08:00), so it cannot be misread", "due_at",
                          "期限须注明时区（+08:00）")
    if due <= now:
        raise ActionError(400, f"due_at: {raw} is not in the future", "due_at", "期限须晚于当前时间")
    if due.year >= 2100:
        raise ActionError(400, "due_at: must be before 2100-01-01", "due_at", "期限须早于 2100 年")
    return due


def request_key(user: str, case_id: int, phase: str, body: Mapping[str, Any]) -> str:
    """The id of a request that names none: the same user sending the same body for the same case while its status
    has not moved since (``phase``: the newest status move's event key) sends the same request, applied once; a
    move sent again after it applied is refused by the lifecycle instead. To repeat an action on purpose in the same
    phase, send a new ``request_id``."""
    canon = orjson.dumps({k: body.get(k) for k in sorted(FIELDS - {"request_id"})}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(f"{user}\x00{case_id}\x00{phase}\x00".encode() + canon).hexdigest()[:32]


def check(body: Any, *, role: str | None, user: str, case_id: int, status: Status | str, phase: str,
          departments: Collection[str], now: datetime) -> Request:
    """The request ``body`` (decoded JSON) checked: the fields, who asks, and whether the case's status allows it.
    Raises ActionError naming the field and the fix; nothing is published for a refused request."""
    if not isinstance(body, dict):
        raise ActionError(400, "body: give a JSON object, e.g. {\"action\": \"remind\", \"note\": \"…\"}",
                          zh="请求格式不正确")
    extra = sorted(set(body) - FIELDS)
    if extra:
        raise ActionError(400, f"{extra[0][:40]}: unknown field; the fields are {', '.join(sorted(FIELDS))}",
                          extra[0][:40], "请求含有未知字段")
    action = _action(body.get("action"))
    if not may_act(role, action):
        raise ActionError(403, f"action: your role ({role}) may not {action.value}; "
                               f"it may: {', '.join(a.value for a in USER_ACTIONS if may_act(role, a)) or 'nothing'}",
                          "action", f"您的角色无权{_zh(action)}")
    rid = body.get("request_id")
    if rid is not None and (not isinstance(rid, str) or not (8 <= len(rid) <= 64) or not rid.isascii()
                            or not all(c.isalnum() or c in "-_" for c in rid)):
        raise ActionError(400, "request_id: 8–64 letters, digits, '-' or '_' (a UUID serves)", "request_id",
                          "请求编号格式不正确")
    req = Request(action, _departments(body.get("departments"), action, departments), _note(body.get("note"), action),
                  _due(body.get("due_at"), action, now), rid or request_key(user, case_id, phase, body))
    try:
        apply(Status(status), action)
    except TransitionError as exc:
        raise ActionError(409, f"action: {exc.reason}", "action", refusal_zh(action, Status(status))) from None
    return req


def actor(user: str, role: str) -> str:
    """How the timeline names the person who acted: the user and their role."""
    return f"{user} ({role})"[:ACTOR_LIMIT]


def event(req: Request, *, source: str, external_id: str, user: str, role: str, now: datetime) -> dict[str, Any]:
    """The case event a checked request publishes (the shape core.records.CaseEvent takes)."""
    ev: dict[str, Any] = {"source": source, "external_id": external_id, "event": req.action.value,
                          "event_id": f"web:{req.request_id}", "occurred_at": now.isoformat(),
                          "actor": actor(user, role)}
    if req.departments is not None:
        ev["departments"] = list(req.departments)
    if req.note is not None:
        ev["note"] = req.note
    if req.due_at is not None:
        ev["due_at"] = req.due_at.isoformat()
    return ev
