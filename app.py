"""The Gridwatch web app: builds the Dash app and registers its pages and blueprints.

``server`` is the WSGI callable (``gunicorn app:server``). Nothing connects at import: Redis
(embedded or REDIS_URL) and SQL are opened on first use, and the schema is migrated before the
first SQL read (dashboard/context.py).
"""

from __future__ import annotations

from pathlib import Path

import dash
from dash import html
from flask import Flask

from config.city import load_city
from config.settings import Settings, get_settings
from dashboard import api, callbacks, context, i18n
from ingest.feeds import push
from layouts import case, live, screen

ROOT = Path(__file__).resolve().parent


def create_app(settings: Settings | None = None) -> dash.Dash:
    settings = settings or get_settings()
    district = load_city(settings.city_dir).geography.district
    server = Flask(__name__)
    server.config[context.SETTINGS_KEY] = settings
    server.register_blueprint(api.blueprint())
    server.register_blueprint(push.blueprint(context.city, context.redis_client, context.settings))

    app = dash.Dash(
        __name__,
        server=server,
        assets_folder=str(ROOT / "assets"),
        title=live.title(i18n.texts(i18n.DEFAULT_LANG), district.name),
        update_title=None,
        use_pages=True,
        pages_folder="",
        suppress_callback_exceptions=False,
    )

    def live_page(**_query):
        return live.layout(i18n.texts(i18n.DEFAULT_LANG), district.name)

    def screen_page(**query):
        return screen.layout(context.settings(), context.city(), query)

    dash.register_page("live", path="/", layout=live_page,
                       title=live.title(i18n.texts(i18n.DEFAULT_LANG), district.name))
    dash.register_page("screen", path="/screen", layout=screen_page, title=screen.title())

    def case_page(case_id: str = "", **query):
        return case.layout(context.settings(), context.city(), case_id, query)

    dash.register_page("case", path_template="/case/<case_id>", layout=case_page, title=case.title())
    app.layout = html.Div(dash.page_container)
    # every page's components, so callbacks of pages not shown are still checked against real ids
    with server.app_context():
        app.validation_layout = html.Div([
            dash.page_container, live.layout(i18n.texts(i18n.DEFAULT_LANG), district.name),
            screen.layout(settings, load_city(settings.city_dir), {}),
        ])
    callbacks.register(app)
    screen.register(app)
    return app


app = create_app()
server = app.server
