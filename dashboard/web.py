"""What every answer of the web app shares, at the edge: odd paths refused, the security headers, and a 503 while
Redis or the SQL store is away.

- A path with a ``..`` segment, a backslash or a NUL (after decoding: ``%2e%2e``, ``..%2f``), and an asset Dash
  does not know, answer 404 — never a 500 with a traceback.
- Every answer sends a Content-Security-Policy: scripts from this server and the hashes of Dash's own inline
  scripts (``Dash.csp_hashes``, the renderer start-up and the clientside callbacks), no ``unsafe-inline`` script, no
  ``unsafe-eval``; styles may be inline (Plotly and Leaflet set them at run time); no framing by other sites. With
  it X-Content-Type-Options, X-Frame-Options and Referrer-Policy.
- Everything but the static assets is ``Cache-Control: no-store``: the API, the case JSON and CSV, briefing files
  and the callbacks carry personal data and a viewer's jurisdiction.
- A Redis error (away, loading, refusing writes) or SQLAlchemy's OperationalError/InterfaceError, from any route (push, the gate's session
  read, the API, a callback), answers 503 with ``Retry-After`` (``RETRY_AFTER_S``) and a JSON body that names the
  problem and the fix, and logs one line (no traceback).
"""

from __future__ import annotations

import logging

import orjson
import redis
from dash.exceptions import DependencyException
from flask import Response, current_app, request
from sqlalchemy.exc import InterfaceError, OperationalError

from dashboard import context

log = logging.getLogger(__name__)

NOT_FOUND = "not found\n"
STATIC_PREFIXES = ("/assets/", "/_dash-component-suites/", "/_favicon.ico", "/favicon.ico")


def odd_path(path: str) -> bool:
    """A decoded request path no route should see: a ``..`` or ``.`` segment, a backslash, a NUL or a control."""
    if "\\" in path or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in path):
        return True
    return any(seg in ("..", ".") for seg in path.split("/"))


def not_found() -> Response:
    """The edge's 404: JSON on API paths (the API's own contract), a short text elsewhere."""
    if request.path.startswith("/api/"):
        return Response(orjson.dumps({"error": "not found: the path holds a '..' or '.' segment, a backslash or a "
                                               "control character; see /api/v1/openapi.json for the routes"}),
                        status=404, mimetype="application/json")
    return Response(NOT_FOUND, status=404, mimetype="text/plain")


def policy(hashes: list[str]) -> str:
    scripts = " ".join(["'self'", *hashes])
    return "; ".join([
        "default-src 'self'",
        f"script-src {scripts}",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "worker-src 'self' blob:",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'self'",
    ])


def unavailable(what: str, exc: Exception) -> Response:
    settings = context.settings()
    log.warning("%s %s: %s unavailable: %s: %s", request.method, request.path, what, type(exc).__name__,
                str(exc).splitlines()[0][:200] if str(exc) else "")
    fix = {"redis": "Redis is not answering: start it (or check REDIS_URL); nothing was stored — send again after "
                    f"{settings.retry_after_s} s",
           "database": "the SQL store is not answering: start it (or check DATABASE_URL and free disk space); "
                       f"nothing was stored — send again after {settings.retry_after_s} s"}[what]
    resp = Response(orjson.dumps({"error": f"service unavailable: {what} is away", "unavailable": what, "fix": fix,
                                  "retry_after": settings.retry_after_s}),
                    status=503, mimetype="application/json")
    resp.headers["Retry-After"] = str(settings.retry_after_s)
    return resp


CSP_HASHES = "GRIDWATCH_CSP_HASHES"  # server.config: Dash's csp_hashes(), set once every callback is registered


def install(server) -> None:
    """Register the path guard (before every other check), the headers and the 503 handlers on the Flask server.
    Install it before the gate; set ``server.config[CSP_HASHES]`` once the app's callbacks are all registered."""

    @server.before_request
    def _guard():
        if odd_path(request.path):
            return not_found()

    @server.after_request
    def _headers(resp: Response):
        resp.headers["Content-Security-Policy"] = policy(current_app.config.get(CSP_HASHES, []))
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["X-Frame-Options"] = "SAMEORIGIN"
        resp.headers["Referrer-Policy"] = "same-origin"
        if not request.path.startswith(STATIC_PREFIXES):
            resp.headers["Cache-Control"] = "no-store"
        return resp

    @server.errorhandler(DependencyException)
    def _unknown_asset(exc):
        log.info("404 %s: %s", request.path[:200], str(exc).splitlines()[0][:120])
        return not_found()

    @server.errorhandler(redis.RedisError)  # away, loading, or refusing writes (MISCONF: its disk is full)
    def _redis_away(exc):
        return unavailable("redis", exc)

    @server.errorhandler(OperationalError)
    @server.errorhandler(InterfaceError)
    def _database_away(exc):
        return unavailable("database", exc)
