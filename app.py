"""The Gridwatch web app: builds the Dash app and registers its pages and blueprints.

``server`` is the WSGI callable (``gunicorn app:server``). Nothing connects at import: Redis
(embedded or REDIS_URL) and SQL are opened on first use, and the schema is migrated before the
first SQL read (dashboard/context.py).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl

import dash
from dash import Input, Output, State, clientside_callback, dcc, html
from dash.exceptions import PreventUpdate
from flask import Flask, g

from config.city import get_city, load_city
from config.settings import Settings, get_settings
from core import access
from core.risk import css_colors
from dashboard import api, auth, context, i18n, notifications, web
from ingest.feeds import push
from layouts import briefings, case, compare, dispatch, drill, live, screen

ROOT = Path(__file__).resolve().parent


def create_app(settings: Settings | None = None) -> dash.Dash:
    settings = settings or get_settings()
    district = load_city(settings.city_dir).geography.district
    server = Flask(__name__)
    server.config[context.SETTINGS_KEY] = settings
    web.install(server)  # odd paths refused before anything else; headers; 503 while Redis or SQL is away
    auth.install(server)  # the gate before every route: a session, the role's permission, CSRF on posts
    server.register_blueprint(api.blueprint())
    server.register_blueprint(push.blueprint(context.city, context.redis_client, context.settings))
    server.register_blueprint(briefings.blueprint())
    server.register_blueprint(notifications.blueprint())

    # what is worth compressing (flask-compress, below): text of every kind, the CSV export included
    server.config["COMPRESS_MIMETYPES"] = [
        "text/html", "text/css", "text/plain", "text/csv", "text/xml", "text/javascript", "application/javascript",
        "application/json", "application/xml", "image/svg+xml"]
    app = dash.Dash(
        __name__,
        server=server,
        assets_folder=str(ROOT / "assets"),
        title=drill.title(i18n.DEFAULT_LANG, district.name),
        update_title=None,
        suppress_callback_exceptions=False,
        compress=True,  # gzip / brotli for every answer a client accepts them for (flask-compress)
    )
    app.layout = root  # a function: drawn per page load, with who is logged in
    # every page's components, so the callbacks of pages not shown are still checked against real ids
    with server.app_context():
        city = load_city(settings.city_dir)
        app.validation_layout = html.Div([
            frame(), drill.layout(settings, city, {}), live.layout(i18n.texts(i18n.DEFAULT_LANG), district.name),
            screen.layout(settings, city, {}), compare.skeleton(), briefings.skeleton(), case.skeleton(city),
            dispatch.skeleton(city),
        ])

    # every callback is recorded as its page's: the gate refuses a callback whose page the viewer may not open
    with auth.callbacks_of(app, "frame"):  # the router, for every role: it checks the page it draws
        @app.callback(Output(ROUTER_CONTENT, "children"), Output(ROUTER_KIND, "data"), Output(ROUTER_TITLE, "data"),
                      Input(ROUTER_URL, "pathname"), Input(ROUTER_URL, "search"), State(ROUTER_KIND, "data"))
        def route(pathname, search, kind):
            """The page for the URL. Within the drill-down (/, /area/…) the page stays and follows the URL itself."""
            if not isinstance(pathname, str) or not isinstance(search or "", str):
                raise PreventUpdate  # not what a browser's location sends
            found = page_of(pathname)
            if found == kind and found in STAYS:
                raise PreventUpdate
            query = dict(parse_qsl((search or "").lstrip("?"), keep_blank_values=True))
            return render(found, pathname, query), found, page_title(found, query)

        clientside_callback("function(t) { if (t) { document.title = t; } return window.dash_clientside.no_update; }",
                            Output(ROUTER_TITLE, "id"), Input(ROUTER_TITLE, "data"))
    for kind, register in (("live", live.register), ("screen", screen.register), ("drill", drill.register),
                           ("compare", compare.register), ("briefings", briefings.register), ("case", case.register),
                           ("dispatch", dispatch.register)):
        with auth.callbacks_of(app, kind):
            register(app)
    server.config[web.CSP_HASHES] = app.csp_hashes()  # Dash's inline scripts, allowed by hash in the CSP
    return app


ROUTER_URL, ROUTER_KIND, ROUTER_TITLE, ROUTER_CONTENT = "page-url", "page-kind", "page-title", "page-content"
STAYS = {"drill"}  # pages that follow their URL themselves instead of being drawn again
# the case page (/case/<id>) is drawn on the server: a new URL draws it again (its own callbacks redraw its parts)


def frame(user=None) -> html.Div:
    """The router's frame: the URL, the page kind and title, the page, and who is logged in (with 退出)."""
    return html.Div([dcc.Location(id=ROUTER_URL), dcc.Store(id=ROUTER_KIND), dcc.Store(id=ROUTER_TITLE),
                     html.Div(id=ROUTER_CONTENT), *([user] if user is not None else [])],
                    style=css_colors(_grade_colors()))  # the one table of colours, for every page's stylesheet


def _grade_colors() -> dict[int, str]:
    try:
        return {level: x.color for level, x in get_city().grades.items()}
    except Exception:  # noqa: BLE001 - a city that does not load is reported by the page itself
        return {}


def root() -> html.Div:
    """The layout Dash serves: the frame, and a small note of the user with a logout button (not on a wall link)."""
    v = auth.viewer()
    if v is None or v.role == "screen":
        return frame()
    t = i18n.texts(i18n.DEFAULT_LANG)
    city = context.city()
    area = city.geography.get(v.area)
    user = html.Form([
        html.Span(f"{v.username} · {t[f'role_{v.role}']} · {area.name if area else v.area}", className="gw-who"),
        dcc.Input(type="hidden", name="csrf", value=g.get("gw_csrf") or ""),
        html.Button(t["logout"], type="submit", className="gw-logout"),
    ], method="post", action="/logout", className="gw-user", id="gw-user")
    return frame(user)


def page_of(pathname: str | None) -> str:
    path = (pathname or "/").rstrip("/") or "/"
    if path == "/" or path.startswith("/area/"):
        return "drill"
    if path == "/screen":
        return "screen"
    if path == "/live":
        return "live"
    if path.startswith("/case/"):
        return "case"
    if path == "/compare":
        return "compare"
    if path == "/briefings":
        return "briefings"
    if path == "/dispatch":
        return "dispatch"
    return "missing"


def render(kind: str, pathname: str | None, query: dict[str, str]):
    settings = context.settings()
    city = context.city()
    v = auth.viewer()
    if v is not None and not access.may_open(v.role, v.area, kind):
        t = i18n.texts(query.get("lang"))
        return html.Div([html.H1(t["forbidden"]), html.P(t["forbidden_hint"].format(role=t[f"role_{v.role}"])),
                         dcc.Link(t["dr_go_home"], href="/", className="dr-button")],
                        className="dr dr-missing")
    if kind == "drill":
        return drill.layout(settings, city, query)
    if kind == "screen":
        return screen.layout(settings, city, query)
    if kind == "live":
        return live.layout(i18n.texts(i18n.DEFAULT_LANG), city.geography.district.name)
    if kind == "case":
        return case.layout(settings, city, (pathname or "").rstrip("/")[len("/case/"):], query)
    if kind == "compare":
        return compare.layout(settings, city, query)
    if kind == "briefings":
        return briefings.layout(settings, city, query)
    if kind == "dispatch":
        return dispatch.layout(settings, city, query)
    t = i18n.texts(query.get("lang"))
    return html.Div([html.H1(t["dr_bad_path"]), html.P(str(pathname)[:80]),
                     dcc.Link(t["dr_go_home"], href="/", className="dr-button")], className="dr dr-missing")


def page_title(kind: str, query: dict[str, str]) -> str:
    lang = query.get("lang")
    if kind == "screen":
        return screen.title(lang)
    if kind == "live":
        return live.title(i18n.texts(lang), context.city().geography.district.name)
    if kind == "case":
        return case.title(lang)
    if kind == "compare":
        return compare.title(lang)
    if kind == "briefings":
        return briefings.title(lang)
    if kind == "dispatch":
        return dispatch.title(lang)
    return drill.title(lang)


app = create_app()
server = app.server
