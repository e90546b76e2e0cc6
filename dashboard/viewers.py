"""Who is asking: the viewer of the current request, what they may see (their jurisdiction, their role's
permissions, personal data), and the audit log of what was done (SQL). The rules are core/access.py."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import g, has_request_context, request
from sqlalchemy import insert

from core import access
from dashboard import context
from store.schema import AuditEntry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Viewer:
    """Who is asking: from the session, or a system job (no request) that sees everything."""

    username: str
    role: str
    area: str
    user_id: int | None = None  # None: a screen link

    @property
    def personal(self) -> bool:
        """Whether this viewer sees reporters' names and phones."""
        return self.role in access.PERSONAL


# --------------------------------------------------------------------------- who is asking


def viewer() -> Viewer | None:
    """The viewer of the current request (None outside a request, and for a request without a session)."""
    if not has_request_context():
        return None
    return g.get("gw_viewer")


def scope() -> str | None:
    """The area code the current request may see: the viewer's jurisdiction; None outside a request (a system job:
    the scheduler, the command line, a briefing's thread, which checked its request before it started)."""
    if not has_request_context():
        return None
    v = g.get("gw_viewer")
    if v is None:
        raise PermissionError("not logged in")
    return v.area


def in_scope(code: str | None) -> bool:
    """Whether the current request may see the area ``code`` (a case's grid; None: a case without one)."""
    s = scope()
    return True if s is None else access.within(s, code)


def may_see(what: str) -> bool:
    """Whether the current request's role may open ``what`` (core.access.ALLOWED); a system job may."""
    v = viewer()
    return True if not has_request_context() else bool(v and access.may(v.role, what))


def whole_district() -> bool:
    """Whether the current request may see the whole district (its jurisdiction is the district; a system job)."""
    s = scope()
    return s is None or access.district_wide(s)


def personal() -> bool:
    """Whether the current request may see personal data (system jobs: no — a briefing never holds any)."""
    v = viewer()
    return bool(v and v.personal)


def address() -> str | None:
    """The client's address: the peer's, or with TRUST_PROXY hops the one the outermost trusted proxy saw (ProxyFix,
    installed by ``dashboard.auth.install``, reads it from the right of X-Forwarded-For; what a client wrote on the left is ignored)."""
    if not has_request_context():
        return None
    return (request.remote_addr or "")[:64] or None


def audit(action: str, target: str | None = None, detail: dict[str, Any] | None = None, ok: bool = True, *,
          who: Viewer | None = None, username: str | None = None, engine=None) -> None:
    """One line in the audit log (SQL). Never raises: a failed write is logged, the request goes on."""
    v = who or viewer()
    try:
        eng = engine or context.engine()
        with eng.begin() as conn:
            conn.execute(insert(AuditEntry).values(
                at=datetime.now(UTC), username=(v.username if v else username), role=v.role if v else None,
                action=action[:32], target=None if target is None else str(target)[:255], detail=detail,
                address=address(), ok=ok))
    except Exception as exc:  # noqa: BLE001 - the audit must not take the request down; it says so in the log
        log.error("audit %s %s not written: %s: %s", action, target, type(exc).__name__, exc)

