"""在线督办 on the server: a person's action on a case, checked (core/actions.py), published as a case event through
the case stream (the worker applies it by the lifecycle's rules, like any feed's event) and written to the audit log.

One entry point, ``perform``, serves the API (``POST /api/v1/cases/<id>/actions``) and every Dash callback that acts.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from core import access
from core import actions as rules
from core.actions import ActionError
from dashboard import context
from dashboard.viewers import Viewer, audit
from store.case_actions import applied_event, case_head
from store.streams import Producer

log = logging.getLogger(__name__)

SOURCE = "gridwatch"  # the stream entries' source: the dashboard itself



@dataclass
class Outcome:
    """The answer to an action: ``status`` the HTTP code, ``body`` the JSON."""

    status: int
    body: dict[str, Any] = field(default_factory=dict)


def _refused(exc: ActionError, v: Viewer, case_id: int, body: Any) -> Outcome:
    action = body.get("action") if isinstance(body, dict) else None
    audit("case_action", str(case_id), {"action": str(action)[:32], "refused": exc.message[:300]}, ok=False, who=v)
    return Outcome(exc.status, {"error": exc.message, "error_zh": exc.zh,
                                **({"parameter": exc.field} if exc.field else {})})


def error_text(body: dict[str, Any], lang: str) -> str | None:
    """A refusal's reason in the page's language."""
    return (body.get("error_zh") if lang == "zh" else None) or body.get("error")


def _wait_applied(case_id: int, key: str, wait_s: float) -> dict[str, Any] | None:
    engine = context.engine()
    end = time.monotonic() + wait_s
    delay = 0.02
    while True:
        found = applied_event(engine, case_id, key)
        if found is not None or time.monotonic() >= end:
            return found
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


def perform(v: Viewer | None, case_id: int, body: Any, *, wait_s: float | None = None) -> Outcome:
    """Take the action ``body`` asks for on case ``case_id`` as viewer ``v``. 200: applied (or applied before: a
    replayed request); 202: accepted, the worker has not applied it yet; 4xx: refused, nothing published."""
    if v is None:
        return Outcome(401, {"error": "log in first", "error_zh": "请先登录"})
    case = case_head(context.engine(), case_id)
    if case is None or not access.within(v.area, case["grid_code"]):  # outside: as if absent (no probing)
        return Outcome(404, {"error": f"id: no case with id {case_id} in your jurisdiction", "parameter": "id",
                             "error_zh": f"您的辖区内没有编号为 {case_id} 的案件"})
    now = datetime.now(UTC)
    try:
        rid = body.get("request_id") if isinstance(body, dict) else None
        key = f"web:{rid or rules.request_key(v.username, case_id, case['phase'], body if isinstance(body, dict) else {})}"
        before = applied_event(context.engine(), case_id, key) if isinstance(body, dict) else None
        if before is not None and before["actor"] == rules.actor(v.username, v.role):  # a replayed request: applied once, answered again
            return Outcome(200, {"applied": True, "replayed": True, "case_id": case_id, "event_key": key,
                                 "action": before["action"], "status": before["status_after"]})
        req = rules.check(body, role=v.role, user=v.username, case_id=case_id, status=case["status"],
                          phase=case["phase"], departments=context.city().departments, now=now)
    except ActionError as exc:
        return _refused(exc, v, case_id, body)
    ev = rules.event(req, source=case["source"], external_id=case["external_id"], user=v.username, role=v.role,
                     now=now)
    Producer(context.redis_client(), context.settings(), source=SOURCE).cases([ev])
    audit("case_action", str(case_id), {"action": req.action.value, "event_key": ev["event_id"],
                                        "departments": ev.get("departments"), "due_at": ev.get("due_at")}, who=v)
    log.info("case %s: %s by %s (%s), published as %s", case_id, req.action.value, v.username, v.role, ev["event_id"])
    wait_s = context.settings().action_wait_seconds if wait_s is None else wait_s
    applied = _wait_applied(case_id, ev["event_id"], wait_s) if wait_s > 0 else None
    answer = {"applied": applied is not None, "case_id": case_id, "event_key": ev["event_id"],
              "action": req.action.value}
    if applied is not None:
        answer["status"] = applied["status_after"]
        return Outcome(200, answer)
    answer["note"] = "accepted: the worker has not applied it yet; the case page shows it once applied"
    return Outcome(202, answer)


def perform_many(v: Viewer | None, case_ids: list[int], body: dict[str, Any], *, wait_s: float | None = None
                 ) -> dict[int, Outcome]:
    """The same action on several cases (督办 / 催办 for a selection): each answered apart; one refused case does not
    stop the others. A request id, if given, is made per case."""
    out: dict[int, Outcome] = {}
    for cid in case_ids:
        one = dict(body)
        if one.get("request_id"):
            one["request_id"] = f"{one['request_id']}-{cid}"[:64]
        out[cid] = perform(v, cid, one, wait_s=0)
    wait_s = context.settings().action_wait_seconds if wait_s is None else wait_s
    if wait_s > 0:
        end = time.monotonic() + wait_s
        for cid, o in out.items():
            if o.status == 202:
                found = _wait_applied(cid, o.body["event_key"], max(0.0, end - time.monotonic()))
                if found is not None:
                    o.status, o.body["applied"], o.body["status"] = 200, True, found["status_after"]
                    o.body.pop("note", None)
    return out
