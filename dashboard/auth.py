"""The gate in front of every route, and the login, logout and kiosk-link routes (the rules: core/access.py).

The gate (``install``) lets through only the login page, static files, health, the OpenAPI description and the push
feeds (which check their own tokens); everything else needs a session and the role's permission, and a Dash callback
the right to open its page (dashboard/callback_guard.py). Who is asking lives in dashboard/viewers.py, users and
sessions in dashboard/accounts.py; the app and the pages reach them through this module. ``python -m dashboard.auth``
manages users (dashboard/users_cli.py). Why it works this way: docs/decisions/0009-logins-and-the-gate.md.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from typing import Any
from urllib.parse import quote, urlsplit

import orjson
from flask import Response, g, redirect, request
from markupsafe import escape
from werkzeug.middleware.proxy_fix import ProxyFix

from core import access
from dashboard import context, i18n
from dashboard.accounts import (
    ADDRESS_TRIES,
    LOCK_AFTER,
    LOCK_MINUTES,
    SESSION_HOURS,
    address_allowed,
    authenticate,
    create_screen_link,
    create_user,
    end_session,
    load_session,
    locks,
    new_session,
    revoke_screen_links,
    screen_viewer,
    set_disabled,
    set_password,
)
from dashboard.callback_guard import DASH_UPDATE, callback_input_problem, callback_refusal, callbacks_of
from dashboard.users_cli import main
from dashboard.viewers import (
    Viewer,
    address,
    audit,
    in_scope,
    may_see,
    personal,
    scope,
    viewer,
    whole_district,
)

# the names the app, the pages, the tests and the benchmarks reach through ``auth``
__all__ = [
    "ADDRESS_TRIES", "COOKIE", "LOCK_AFTER", "Viewer", "audit", "authenticate", "callbacks_of", "create_screen_link",
    "create_user", "in_scope", "install", "load_session", "locks", "main", "may_see", "new_session", "personal",
    "revoke_screen_links", "scope", "set_disabled", "set_password", "viewer", "whole_district",
]

log = logging.getLogger(__name__)

COOKIE = "gridwatch_session"
CSRF_COOKIE = "_csrf_token"  # the name dash-renderer reads (and sends back as X-CSRFToken)
CSRF_HEADER = "X-CSRFToken"
LOGIN_CSRF_COOKIE = "gridwatch_login_csrf"
# paths anyone may open: the login page, static files, health, the API's description, the push feeds (their tokens)
PUBLIC_PATHS = frozenset({"/login", "/healthz", "/healthz/live", "/healthz/ready", "/api/v1/openapi.json", "/_favicon.ico", "/favicon.ico"})
PUBLIC_PREFIXES = ("/assets/", "/_dash-component-suites/", "/api/v1/ingest/", "/s/")


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


def _safe_next(target: str | None) -> str:
    """Where to go after logging in: a path of this site only (no //host, no scheme)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else "/"


def install(server) -> None:
    """The gate, the login and logout routes and the kiosk links, on the Flask server; behind TRUST_PROXY proxies,
    Werkzeug's ProxyFix, so the client's address (and scheme) are what the trusted proxies saw."""
    hops = (server.config.get(context.SETTINGS_KEY) or context.settings()).trust_proxy
    if hops:
        server.wsgi_app = ProxyFix(server.wsgi_app, x_for=hops, x_proto=hops)
    _add_gate(server)
    _add_headers(server)
    _add_login_routes(server)


def _csrf_ok() -> bool:
    """Whether a state-changing request carries the session's CSRF token (header, or the form's ``csrf``)."""
    sent = request.headers.get(CSRF_HEADER, "") or (request.form.get("csrf", "") if request.form else "")
    return bool(sent and hmac.compare_digest(sent, g.gw_csrf))


def _callback_check(server, v: Viewer) -> Response | None:
    """A Dash update refused (its page is not the viewer's, or its inputs are not what the controls send), or None."""
    key, page, refused = callback_refusal(server, v)
    if refused:
        audit("refused", page or "callback", {"callback": (key or "")[:200]}, ok=False)
        log.warning("refused callback %s (%s) for %s (%s)", (key or "")[:80], page, v.username, v.role)
        return _forbidden(refused)
    problem = callback_input_problem(request.get_json(silent=True))
    if problem:
        log.warning("bad callback input from %s (%s): %s", v.username, address(), problem)
        return Response(orjson.dumps({"error": problem}), status=400, mimetype="application/json")
    return None


def _add_gate(server) -> None:
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
        if request.method not in ("GET", "HEAD", "OPTIONS") and not _csrf_ok():
            log.warning("refused %s %s from %s: missing or wrong CSRF token", request.method, path, address())
            return _forbidden(f"CSRF: send the session's token in the {CSRF_HEADER} header (reload the page)")
        if path.startswith("/api/") and not access.may(g.gw_viewer.role, "api"):
            return _forbidden(f"the {g.gw_viewer.role} role has no access to the API")
        if path == DASH_UPDATE:  # roles at the data: every callback is its page's, and checked as the page is
            return _callback_check(server, g.gw_viewer)
        return None


def _add_headers(server) -> None:
    @server.after_request
    def _headers(resp: Response):
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        csrf = g.get("gw_csrf")
        if csrf and request.cookies.get(CSRF_COOKIE) != csrf:
            resp.set_cookie(CSRF_COOKIE, csrf, httponly=False, **_cookie_args(context.settings()))
        return resp


def _add_login_routes(server) -> None:
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


if __name__ == "__main__":
    raise SystemExit(main())
