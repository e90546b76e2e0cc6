"""The Gridwatch web app: builds the Dash app and registers its pages and blueprints.

``server`` is the WSGI callable (``gunicorn app:server``). Nothing connects at import: Redis
(embedded or REDIS_URL) and SQL are opened on first use, and the schema is migrated before the
first SQL read (dashboard/context.py).
"""

from __future__ import annotations

from pathlib import Path

import dash
from flask import Flask

from config.city import load_city
from config.settings import Settings, get_settings
from dashboard import api, callbacks, context, i18n
from ingest.feeds import push
from layouts import live

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
        suppress_callback_exceptions=False,
    )

    def serve_layout():
        return live.layout(i18n.texts(i18n.DEFAULT_LANG), district.name)

    app.layout = serve_layout
    callbacks.register(app)
    return app


app = create_app()
server = app.server
