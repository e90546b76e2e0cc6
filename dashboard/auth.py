"""Login, sessions, the gate in front of every route, and the audit log (the rules: core/access.py).

- Passwords are hashed with argon2id (argon2-cffi). A user is locked out from an address for LOCK_MINUTES after
  LOCK_AFTER failed logins in a row from it (by user and address, so nobody can lock a user out from elsewhere), and
  an address may try at most ADDRESS_TRIES password logins per ADDRESS_WINDOW_S (Redis), so guessing is slow. A
  locked user, a wrong password and an unknown name get the same answer after the same work (one argon2 verify).
- A session is a random token in an HttpOnly, SameSite=Lax cookie (``gridwatch_session``); the server keeps what it
  means in Redis (user, role, jurisdiction, CSRF token) under the token's SHA-256, for SESSION_HOURS after the last
  request. Logging out, disabling the user or changing the password ends it at once.
- Every POST but the login form's (which has its own double-submitted token) carries the session's CSRF token in the
  ``X-CSRFToken`` header; Dash's renderer sends it from the ``_csrf_token`` cookie by itself.
- The gate (``install``) lets through only the login page, static files, health, the OpenAPI description and the
  push feeds (which check their own tokens); everything else needs a session and the role's permission
  (core.access.ALLOWED); a Dash callback only when the viewer may open the page it belongs to (``callbacks_of``
  records each page's callbacks as it registers them; a callback of no page is refused). Jurisdiction is applied
  where areas are read: ``scope()`` is the viewer's area code, used by the API's area checks (dashboard/api.py), the
  drill-down's views, the case page and the briefings.
- The wall's kiosk links (``/s/<token>``) open a read-only ``screen`` session; only the token's hash is stored.
- ``audit()`` writes who did what, when and from where to SQL (logins and failures, case views, exports, changes).

    python -m dashboard.auth add NAME --role leader --area 440311001 [--password …]   (and: disable, enable, passwd,
    list, screen-link, revoke-link, audit) — see --help.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import logging
import re
import secrets
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import orjson
from flask import Response, g, has_request_context, redirect, request
from markupsafe import escape
from sqlalchemy import insert, select, update

from core import access
from store.schema import AuditEntry, ScreenLink, User

log = logging.getLogger(__name__)

COOKIE = "gridwatch_session"
CSRF_COOKIE = "_csrf_token"  # the name dash-renderer reads (and sends back as X-CSRFToken)
CSRF_HEADER = "X-CSRFToken"
LOGIN_CSRF_COOKIE = "gridwatch_login_csrf"
SESSION_HOURS = 12
LOCK_AFTER = 5  # failed logins in a row lock the user …
LOCK_MINUTES = 15  # … for this long
ADDRESS_TRIES = 20  # login attempts one address may make …
ADDRESS_WINDOW_S = 600  # … in this many seconds
MIN_PASSWORD = 10
USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{2,64}$")
# paths anyone may open: the login page, static files, health, the API's description, the push feeds (their tokens)
PUBLIC_PATHS = frozenset({"/login", "/healthz", "/healthz/live", "/healthz/ready", "/api/v1/openapi.json", "/_favicon.ico", "/favicon.ico"})
PUBLIC_PREFIXES = ("/assets/", "/_dash-component-suites/", "/api/v1/ingest/", "/s/")


class AuthError(ValueError):
    """A request to change users that cannot be done (bad name, role, area or password): the message says why."""


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
    installed by ``install``, reads it from the right of X-Forwarded-For; what a client wrote on the left is ignored)."""
    if not has_request_context():
        return None
    return (request.remote_addr or "")[:64] or None


# --------------------------------------------------------------------------- audit


def audit(action: str, target: str | None = None, detail: dict[str, Any] | None = None, ok: bool = True, *,
          who: Viewer | None = None, username: str | None = None, engine=None) -> None:
    """One line in the audit log (SQL). Never raises: a failed write is logged, the request goes on."""
    from dashboard import context

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


# --------------------------------------------------------------------------- users


def _hasher():
    from argon2 import PasswordHasher

    return PasswordHasher()  # argon2id with the library's current recommended parameters


def _check_user(city, username: str, role: str, area: str) -> None:
    if not USERNAME_RE.match(username or ""):
        raise AuthError(f"name: {username[:70]!r} is not a user name; use 2–64 letters, digits or . _ @ -")
    if role not in access.ROLES:
        raise AuthError(f"role: unknown role {role!r}; use one of: {', '.join(access.ROLES)}")
    if city.geography.get(area) is None:
        raise AuthError(f"area: no area with code {area[:32]!r}; the district is {city.geography.district.code}")


def _check_password(password: str) -> None:
    if len(password or "") < MIN_PASSWORD:
        raise AuthError(f"password: at least {MIN_PASSWORD} characters")


def create_user(engine, city, username: str, password: str, role: str, area: str) -> None:
    """Add a user; AuthError if the name is taken or anything is malformed."""
    _check_user(city, username, role, area)
    _check_password(password)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        if conn.execute(select(User.id).where(User.username == username)).first():
            raise AuthError(f"name: a user {username!r} exists already; pick another name or change theirs (passwd)")
        conn.execute(insert(User).values(username=username, password_hash=_hasher().hash(password), role=role,
                                         area_code=area, disabled=False, failed_logins=0, created_at=now,
                                         updated_at=now))


def _row(conn, q):
    """The first row of a select on a table, with its columns as attributes (or None)."""
    from types import SimpleNamespace

    found = conn.execute(q).mappings().first()
    return None if found is None else SimpleNamespace(**found)


def _user(conn, username: str):
    return _row(conn, select(User.__table__).where(User.username == username))


def set_disabled(engine, r, settings, username: str, disabled: bool) -> None:
    """Disable (ending every session of theirs at once) or enable a user."""
    with engine.begin() as conn:
        u = _user(conn, username)
        if u is None:
            raise AuthError(f"name: no user {username!r}")
        conn.execute(update(User).where(User.id == u.id).values(
            disabled=disabled, failed_logins=0, locked_until=None, updated_at=datetime.now(UTC)))
    if disabled:
        end_sessions_of(r, settings, u.id)
    else:
        _unlock(r, settings, username)


def set_password(engine, r, settings, username: str, password: str) -> None:
    """A new password (ending every session of theirs); unlocks the user."""
    _check_password(password)
    with engine.begin() as conn:
        u = _user(conn, username)
        if u is None:
            raise AuthError(f"name: no user {username!r}")
        conn.execute(update(User).where(User.id == u.id).values(
            password_hash=_hasher().hash(password), failed_logins=0, locked_until=None, updated_at=datetime.now(UTC)))
    end_sessions_of(r, settings, u.id)
    _unlock(r, settings, username)


def list_users(engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(User.username, User.role, User.area_code, User.disabled, User.locked_until,
                                   User.created_at).order_by(User.username)).all()
    return [dict(r._mapping) for r in rows]


_DUMMY_HASH: list[str] = []  # an argon2id hash of nothing anyone types: verified for unknown names (same work)


def _verify(password_hash: str | None, password: str) -> bool:
    """One argon2 verify, whatever is asked: of the user's hash, or of a stand-in for an unknown name."""
    from argon2.exceptions import InvalidHashError, VerificationError

    if password_hash is None:
        if not _DUMMY_HASH:
            _DUMMY_HASH.append(_hasher().hash(secrets.token_urlsafe(24)))
        password_hash = _DUMMY_HASH[0]
    try:
        return _hasher().verify(password_hash, password or "")
    except (VerificationError, InvalidHashError):
        return False


def _fail_key(settings, username: str, addr: str | None) -> str:
    return settings.key("auth", "fail", username, addr or "-")  # a valid user name holds no ':' nor a glob character


def locks(r, settings, username: str) -> int:
    """From how many addresses ``username`` is locked out now."""
    keys = list(r.scan_iter(settings.key("auth", "fail", username) + ":*", count=1000))
    return sum(1 for n in (r.mget(keys) if keys else []) if n is not None and int(n) >= LOCK_AFTER)


def _unlock(r, settings, username: str) -> None:
    keys = list(r.scan_iter(settings.key("auth", "fail", username) + ":*", count=1000))
    if keys:
        r.delete(*keys)


def authenticate(engine, r, settings, username: str, password: str,
                 addr: str | None = None) -> tuple[Viewer | None, str]:
    """(the viewer, "ok") for a good login; (None, reason) otherwise — "unknown", "wrong", "locked", "disabled".
    LOCK_AFTER wrong passwords from one address lock the user out from that address (``addr``) only, for
    LOCK_MINUTES (Redis): nobody elsewhere can lock a user out. Every way runs exactly one argon2 verify, and the
    caller gives the same answer whatever the reason, so neither the answer nor its time tells which names exist."""
    with engine.connect() as conn:
        u = _user(conn, username) if USERNAME_RE.match(username or "") else None
    good = _verify(u.password_hash if u is not None else None, password)
    if u is None:
        return None, "unknown"
    key = _fail_key(settings, u.username, addr)
    failed = int(r.get(key) or 0)
    if failed >= LOCK_AFTER:
        return None, "locked"
    if u.disabled:
        return None, "disabled"
    if not good:
        pipe = r.pipeline()
        pipe.incr(key)
        pipe.expire(key, LOCK_MINUTES * 60)  # in a row: a failure within LOCK_MINUTES of the last one counts on
        failed = pipe.execute()[0]
        return None, "locked" if failed >= LOCK_AFTER else "wrong"
    r.delete(key)
    return Viewer(u.username, u.role, u.area_code, u.id), "ok"


def address_allowed(r, settings, addr: str | None) -> bool:
    """Count a password login attempt from ``addr``; False once it has made ADDRESS_TRIES in the window. (A wall's
    kiosk link is neither counted nor refused here: behind a NAT, everyone's guesses would block the wall.)"""
    key = settings.key("auth", "tries", addr or "-")
    n = r.incr(key)
    if n == 1:
        r.expire(key, ADDRESS_WINDOW_S)
    return n <= ADDRESS_TRIES


# --------------------------------------------------------------------------- sessions (Redis)


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_session(r, settings, v: Viewer) -> tuple[str, str]:
    """A session for ``v``: (the cookie's token, its CSRF token)."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
    key = settings.key("session", _sha(token))
    pipe = r.pipeline()
    pipe.set(key, orjson.dumps({"u": v.username, "r": v.role, "a": v.area, "i": v.user_id, "c": csrf}),
             ex=SESSION_HOURS * 3600)
    if v.user_id is not None:
        pipe.sadd(settings.key("sessions", str(v.user_id)), key)
        pipe.expire(settings.key("sessions", str(v.user_id)), SESSION_HOURS * 3600)
    pipe.execute()
    return token, csrf


def load_session(r, settings, token: str | None) -> tuple[Viewer, str] | None:
    """(the viewer, the CSRF token) of a live session, its life extended; None for no, an ended or a forged token."""
    if not token or len(token) > 100:
        return None
    key = settings.key("session", _sha(token))
    raw = r.getex(key, ex=SESSION_HOURS * 3600)  # read and extend in one round trip (every request passes here)
    if raw is None:
        return None
    d = orjson.loads(raw)
    return Viewer(d["u"], d["r"], d["a"], d.get("i")), d["c"]


def end_session(r, settings, token: str | None) -> None:
    if token and len(token) <= 100:
        r.delete(settings.key("session", _sha(token)))


def end_sessions_of(r, settings, user_id: int) -> None:
    keys = r.smembers(settings.key("sessions", str(user_id)))
    if keys:
        r.delete(*keys)
    r.delete(settings.key("sessions", str(user_id)))


# --------------------------------------------------------------------------- screen links


def create_screen_link(engine, city, label: str, area: str | None = None) -> str:
    """A new kiosk token for the wall of ``area`` (default the district); only its hash is stored. Returns the token."""
    area = area or city.geography.district.code
    if city.geography.get(area) is None:
        raise AuthError(f"area: no area with code {area[:32]!r}")
    token = secrets.token_urlsafe(32)
    with engine.begin() as conn:
        conn.execute(insert(ScreenLink).values(token_sha256=_sha(token), label=label[:64], area_code=area,
                                               revoked=False, created_at=datetime.now(UTC)))
    return token


def revoke_screen_links(engine, label: str) -> int:
    with engine.begin() as conn:
        return conn.execute(update(ScreenLink).where(ScreenLink.label == label).values(revoked=True)).rowcount


def screen_viewer(engine, token: str) -> Viewer | None:
    if not token or len(token) > 100:
        return None
    with engine.connect() as conn:
        row = _row(conn, select(ScreenLink.__table__).where(ScreenLink.token_sha256 == _sha(token)))
    if row is None or row.revoked:
        return None
    return Viewer(f"screen:{row.label}", "screen", row.area_code)


# --------------------------------------------------------------------------- the gate and the login page


def _cookie_args(settings) -> dict[str, Any]:
    return {"secure": settings.cookie_secure, "samesite": "Lax", "path": "/"}


def _unauthorised(api: bool) -> Response:
    if api:
        return Response(orjson.dumps({"error": "not logged in: log in at /login (a session cookie), then try again"}),
                        status=401, mimetype="application/json")
    target = request.full_path if request.query_string else request.path
    return redirect(f"/login?next={quote(target, safe='/?=&')}", code=302)


def _forbidden(message: str, api: bool = True) -> Response:
    if api:
        return Response(orjson.dumps({"error": message}), status=403, mimetype="application/json")
    return Response(str(escape(message)), status=403, mimetype="text/plain")


CALLBACK_PAGES = "GRIDWATCH_CALLBACK_PAGES"  # server.config: a Dash callback's output key → the page it belongs to
DASH_UPDATE = "/_dash-update-component"


@contextlib.contextmanager
def callbacks_of(app, page: str):
    """Record the Dash callbacks registered inside the block as the page ``page``'s (a router kind, or "frame").
    The gate lets a viewer call a callback only when they may open its page (core.access.may_open); a callback
    recorded for no page is refused."""
    before = set(app.callback_map)
    yield
    owned = app.server.config.setdefault(CALLBACK_PAGES, {})
    for key in set(app.callback_map) - before:
        owned[key] = page


# What a browser sends for these component properties (Dash passes any JSON through): a callback is never handed a
# value of another type, so a crafted request gets a 400 naming the input instead of a callback's traceback.
_PROP_TYPES: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("pathname", "search", "hash", "href", "start_date", "end_date", "date"), (str,)),
    **dict.fromkeys(("n_clicks", "n_intervals", "n_submit", "n_blur"), (int,)),
    **dict.fromkeys(("clickData", "hoverData", "hideout", "getRowsRequest", "viewport", "relayoutData"), (dict,)),
    "value": (str, int, float, list),
}
_SCALARS = (str, int, float)
MAX_CALLBACK_TEXT = 4096  # characters of a URL part or a control's text


def callback_input_problem(body) -> str | None:
    """Why a Dash update request's inputs are not what the page's components send (None: they are)."""
    if not isinstance(body, dict):
        return "the body is not a JSON object"
    for part in ("inputs", "state"):
        entries = body.get(part) or []
        if not isinstance(entries, list):
            return f"{part}: not a list"
        for entry in (e for x in entries for e in (x if isinstance(x, list) else [x])):
            if not isinstance(entry, dict) or "property" not in entry:
                return f"{part}: an entry without id and property"
            prop, value = entry.get("property"), entry.get("value")
            name = f"{str(entry.get('id'))[:60]}.{str(prop)[:40]}"
            want = _PROP_TYPES.get(prop) if isinstance(prop, str) else None
            if want is None or value is None:
                continue
            ok = isinstance(value, want) and not isinstance(value, bool)
            if ok and prop == "value" and isinstance(value, list):
                ok = all(isinstance(v, _SCALARS) for v in value)
            if not ok:
                return f"callback input {name}: a {type(value).__name__} is not what this control sends"
            if isinstance(value, str) and len(value) > MAX_CALLBACK_TEXT:
                return f"callback input {name}: {len(value)} characters, more than {MAX_CALLBACK_TEXT}"
    return None


def _callback_refusal(server, v: Viewer) -> tuple[str | None, str | None, str | None]:
    """(the callback's output key, its page, why it is refused — None when allowed) for a Dash update request."""
    body = request.get_json(silent=True)
    key = body.get("output") if isinstance(body, dict) else None
    key = key if isinstance(key, str) else None
    page = server.config.get(CALLBACK_PAGES, {}).get(key)
    if page is None:
        return key, None, "unknown callback: it belongs to no page of this site (reload the page)"
    if not access.may_open(v.role, v.area, page):
        return key, page, (f"the {v.role} role over {v.area} may not use the {page} page "
                           "(ask the administrator for a role that may)")
    return key, page, None


def _safe_next(target: str | None) -> str:
    """Where to go after logging in: a path of this site only (no //host, no scheme)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else "/"


def install(server) -> None:
    """The gate, the login and logout routes and the kiosk links, on the Flask server; behind TRUST_PROXY proxies,
    Werkzeug's ProxyFix, so the client's address (and scheme) are what the trusted proxies saw."""
    from dashboard import context

    hops = (server.config.get(context.SETTINGS_KEY) or context.settings()).trust_proxy
    if hops:
        from werkzeug.middleware.proxy_fix import ProxyFix

        server.wsgi_app = ProxyFix(server.wsgi_app, x_for=hops, x_proto=hops)

    @server.before_request
    def _gate():
        path = request.path
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            return None  # static files, health, login, push feeds: no session read (push checks its own token)
        found = load_session(context.redis_client(), context.settings(), request.cookies.get(COOKIE))
        g.gw_viewer, g.gw_csrf = (found if found else (None, None))
        api = path.startswith("/api/") or path.startswith("/_dash-") or path.startswith("/briefings/files/")
        if g.gw_viewer is None:
            return _unauthorised(api)
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            sent = request.headers.get(CSRF_HEADER, "") or (request.form.get("csrf", "") if request.form else "")
            if not (sent and hmac.compare_digest(sent, g.gw_csrf)):
                log.warning("refused %s %s from %s: missing or wrong CSRF token", request.method, path, address())
                return _forbidden(f"CSRF: send the session's token in the {CSRF_HEADER} header (reload the page)")
        if path.startswith("/api/") and not access.may(g.gw_viewer.role, "api"):
            return _forbidden(f"the {g.gw_viewer.role} role has no access to the API")
        if path == DASH_UPDATE:  # roles at the data: every callback is its page's, and checked as the page is
            key, page, refused = _callback_refusal(server, g.gw_viewer)
            if refused:
                audit("refused", page or "callback", {"callback": (key or "")[:200]}, ok=False)
                log.warning("refused callback %s (%s) for %s (%s)", (key or "")[:80], page, g.gw_viewer.username,
                            g.gw_viewer.role)
                return _forbidden(refused)
            problem = callback_input_problem(request.get_json(silent=True))
            if problem:
                log.warning("bad callback input from %s (%s): %s", g.gw_viewer.username, address(), problem)
                return Response(orjson.dumps({"error": problem}), status=400, mimetype="application/json")
        return None

    @server.after_request
    def _headers(resp: Response):
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        csrf = g.get("gw_csrf")
        if csrf and request.cookies.get(CSRF_COOKIE) != csrf:
            resp.set_cookie(CSRF_COOKIE, csrf, httponly=False, **_cookie_args(context.settings()))
        return resp

    @server.get("/login")
    def login_page():
        token = secrets.token_urlsafe(24)
        resp = Response(_login_html(token, request.args.get("next"), request.args.get("error"), request.args.get("lang")),
                        mimetype="text/html")
        resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, max_age=3600, **_cookie_args(context.settings()))
        return resp

    @server.post("/login")
    def login():
        settings = context.settings()
        r = context.redis_client()
        form = request.form
        username = (form.get("username") or "")[:64]
        nxt = _safe_next(form.get("next"))
        lang = "&lang=en" if form.get("lang") == "en" else ""
        sent, kept = form.get("csrf") or "", request.cookies.get(LOGIN_CSRF_COOKIE) or ""
        if not (sent and kept and hmac.compare_digest(sent, kept)):
            return redirect(f"/login?error=csrf&next={quote(nxt)}{lang}", code=303)
        if not address_allowed(r, settings, address()):
            audit("login", username, {"reason": "address rate limit"}, ok=False, username=username)
            log.warning("login refused for %r from %s: too many attempts from this address", username, address())
            return redirect(f"/login?error=rate&next={quote(nxt)}{lang}", code=303)
        v, reason = authenticate(context.engine(), r, settings, username, form.get("password") or "", address())
        if v is None:  # the reason goes to the audit log only: the same answer for every one (no user probing)
            audit("login", username, {"reason": reason}, ok=False, username=username)
            log.info("login failed for %r from %s: %s", username, address(), reason)
            return redirect(f"/login?error=failed&next={quote(nxt)}{lang}", code=303)
        token, csrf = new_session(r, settings, v)
        audit("login", username, who=v)
        log.info("login %s (%s, %s) from %s", v.username, v.role, v.area, address())
        resp = redirect(nxt if v.role != "screen" else "/screen", code=303)
        resp.set_cookie(COOKIE, token, httponly=True, max_age=SESSION_HOURS * 3600, **_cookie_args(settings))
        resp.set_cookie(CSRF_COOKIE, csrf, httponly=False, max_age=SESSION_HOURS * 3600, **_cookie_args(settings))
        resp.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
        return resp

    @server.post("/logout")
    def logout():
        settings = context.settings()
        v = viewer()
        end_session(context.redis_client(), settings, request.cookies.get(COOKIE))
        if v:
            audit("logout", v.username, who=v)
        resp = redirect("/login", code=303)
        resp.delete_cookie(COOKIE, path="/")
        resp.delete_cookie(CSRF_COOKIE, path="/")
        return resp

    @server.get("/s/<token>")
    def screen_link(token: str):
        settings = context.settings()
        r = context.redis_client()
        v = screen_viewer(context.engine(), token)
        if v is None:
            audit("screen_link", None, {"reason": "unknown or revoked link"}, ok=False, username="screen")
            return _forbidden("this wall link is unknown or was revoked; ask the administrator for a new one",
                              api=False)
        session, csrf = new_session(r, settings, v)
        audit("screen_link", v.username, who=v)
        resp = redirect("/screen", code=303)
        resp.set_cookie(COOKIE, session, httponly=True, max_age=SESSION_HOURS * 3600, **_cookie_args(settings))
        resp.set_cookie(CSRF_COOKIE, csrf, httponly=False, max_age=SESSION_HOURS * 3600, **_cookie_args(settings))
        return resp


def _login_html(csrf: str, nxt: str | None, error: str | None, lang: str | None = None) -> str:
    """The login form (dashboard/i18n.py's texts; ?lang=en for English)."""
    from dashboard import context, i18n

    lang = i18n.lang_of(lang)
    t = i18n.texts(lang)
    district = context.city().geography.district.name
    msg = t.get(f"login_{error}") if error in ("failed", "rate", "csrf") else None
    other = "zh" if lang == "en" else "en"
    return f"""<!doctype html><html lang="{'zh-CN' if lang == 'zh' else 'en'}"><head><meta charset="utf-8">
<title>{escape(t["login_submit"])} · Gridwatch</title><meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:"Noto Sans CJK SC","Source Han Sans SC",sans-serif;background:#f1f5f9;margin:0;display:flex;
min-height:100vh;align-items:center;justify-content:center;color:#0f172a}}form{{background:#fff;padding:32px 36px;
border-radius:10px;box-shadow:0 4px 20px rgba(15,23,42,.08);width:320px}}h1{{font-size:22px;margin:0 0 18px;color:#0b3a75}}
label{{display:block;font-size:14px;margin:12px 0 4px;color:#334155}}input{{width:100%;box-sizing:border-box;padding:9px 10px;
border:1px solid #cbd5e1;border-radius:6px;font-size:15px}}button{{margin-top:20px;width:100%;padding:10px;background:#1b4fb8;
color:#fff;border:0;border-radius:6px;font-size:16px;cursor:pointer}}.err{{color:#b91c1c;font-size:14px;margin:0 0 8px}}
.lang{{display:block;margin-top:14px;text-align:right;font-size:13px;color:#1b4fb8}}</style>
</head><body><form method="post" action="/login"><h1>{escape(district)} · {escape(t["login_title"])}</h1>
{f'<p class="err" role="alert">{escape(msg.format(minutes=LOCK_MINUTES, tries=LOCK_AFTER))}</p>' if msg else ''}
<input type="hidden" name="csrf" value="{escape(csrf)}"><input type="hidden" name="next" value="{escape(_safe_next(nxt))}">
<input type="hidden" name="lang" value="{lang}">
<label for="username">{escape(t["login_user"])}</label>
<input id="username" name="username" autocomplete="username" required autofocus>
<label for="password">{escape(t["login_password"])}</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">{escape(t["login_submit"])}</button>
<a class="lang" href="/login?lang={other}&amp;next={escape(quote(_safe_next(nxt)))}">{escape(t["switch"])}</a>
</form></body></html>"""


DEMO_WALL = "demo-wall"


def demo_accounts(engine, r, settings, city, base: str) -> str:
    """The demo's accounts — an administrator, a dispatcher and a leader for the district, a leader for the first
    street — made or given new random passwords, and a new wall link (the old demo link revoked): printable text."""
    geo = city.geography
    street = geo.areas("street")[0]
    wanted = [("admin", "admin", geo.district), ("dispatcher", "dispatcher", geo.district),
              ("leader", "leader", geo.district), ("street-leader", "leader", street)]
    lines = ["demo accounts (new passwords at every start; log in at " + base.rstrip("/") + "/login):"]
    for name, role, area in wanted:
        password = secrets.token_urlsafe(9)
        with engine.connect() as conn:
            exists = _user(conn, name) is not None
        if exists:
            set_password(engine, r, settings, name, password)
            set_disabled(engine, r, settings, name, False)
        else:
            create_user(engine, city, name, password, role, area.code)
        lines.append(f"  {name:<14} {password:<14} {role:<11} {area.name} ({area.code})")
    revoke_screen_links(engine, DEMO_WALL)
    token = create_screen_link(engine, city, DEMO_WALL)
    lines.append(f"wall (kiosk link, read-only): {base.rstrip('/')}/s/{token}")
    audit("demo_accounts", None, {"users": [w[0] for w in wanted]}, who=Viewer("demo", "admin", geo.district.code),
          engine=engine)
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dashboard.auth", description="Manage users, wall links and the audit log.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("add", help="add a user")
    a.add_argument("name")
    a.add_argument("--role", required=True, choices=access.ROLES)
    a.add_argument("--area", help="the jurisdiction's area code (default: the district)")
    a.add_argument("--password", help=f"at least {MIN_PASSWORD} characters (default: a random one, printed)")
    for cmd, text in (("disable", "disable a user and end their sessions"), ("enable", "enable a user")):
        sub.add_parser(cmd, help=text).add_argument("name")
    pw = sub.add_parser("passwd", help="set a user's password (ends their sessions, unlocks them)")
    pw.add_argument("name")
    pw.add_argument("--password", help="default: a random one, printed")
    sub.add_parser("list", help="list the users")
    sl = sub.add_parser("screen-link", help="make a kiosk link for the wall (printed once; only its hash is kept)")
    sl.add_argument("label")
    sl.add_argument("--area", help="default: the district")
    sl.add_argument("--base", default="http://127.0.0.1:8050", help="the site's address, for the printed link")
    rv = sub.add_parser("revoke-link", help="revoke the wall links with this label")
    rv.add_argument("label")
    dm = sub.add_parser("demo", help="(make demo) make or reset the demo accounts with new passwords and a new wall "
                                     "link, and print them")
    dm.add_argument("--base", default="http://127.0.0.1:8050", help="the site's address, for the printed link")
    au = sub.add_parser("audit", help="print the latest audit entries")
    au.add_argument("--limit", type=int, default=50)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from config.city import load_city
    from config.settings import get_settings
    from store.services import get_engine, get_redis, migrate

    settings = get_settings()
    engine = get_engine(settings)
    migrate(engine)
    city = load_city(settings.city_dir)
    who = Viewer("cli", "admin", city.geography.district.code)
    try:
        if args.cmd == "add":
            password = args.password or secrets.token_urlsafe(12)
            area = args.area or city.geography.district.code
            create_user(engine, city, args.name, password, args.role, area)
            audit("user_add", args.name, {"role": args.role, "area": area}, who=who, engine=engine)
            print(f"user {args.name} ({args.role}, {area}) added" + ("" if args.password else f"; password: {password}"))
        elif args.cmd in ("disable", "enable"):
            set_disabled(engine, get_redis(settings), settings, args.name, args.cmd == "disable")
            audit(f"user_{args.cmd}", args.name, who=who, engine=engine)
            print(f"user {args.name} {args.cmd}d")
        elif args.cmd == "passwd":
            password = args.password or secrets.token_urlsafe(12)
            set_password(engine, get_redis(settings), settings, args.name, password)
            audit("user_passwd", args.name, who=who, engine=engine)
            print(f"password of {args.name} changed" + ("" if args.password else f": {password}"))
        elif args.cmd == "list":
            r = get_redis(settings)
            for u in list_users(engine):
                n = 0 if u["disabled"] else locks(r, settings, u["username"])
                state = "disabled" if u["disabled"] else f"locked ({n} address(es))" if n else "active"
                print(f"{u['username']:<24} {u['role']:<11} {u['area_code']:<16} {state}")
        elif args.cmd == "screen-link":
            token = create_screen_link(engine, city, args.label, args.area)
            audit("screen_link_add", args.label, {"area": args.area or city.geography.district.code}, who=who,
                  engine=engine)
            print(f"{args.base.rstrip('/')}/s/{token}")
        elif args.cmd == "revoke-link":
            n = revoke_screen_links(engine, args.label)
            audit("screen_link_revoke", args.label, {"links": n}, who=who, engine=engine)
            print(f"{n} link(s) revoked")
        elif args.cmd == "demo":
            print(demo_accounts(engine, get_redis(settings), settings, city, args.base))
        elif args.cmd == "audit":
            with engine.connect() as conn:
                rows = conn.execute(select(AuditEntry.__table__).order_by(AuditEntry.id.desc())
                                    .limit(max(1, args.limit))).mappings().all()
                for row in rows:
                    e = argparse.Namespace(**row)
                    print(f"{e.at:%Y-%m-%d %H:%M:%S} {'ok  ' if e.ok else 'FAIL'} {e.username or '-':<16} "
                          f"{e.action:<18} {e.target or ''} {e.address or ''} {orjson.dumps(e.detail).decode() if e.detail else ''}")
    except AuthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
