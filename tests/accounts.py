"""Users and logged-in clients for the tests: every route but login, health and the push feeds needs a session.

``client(settings)`` is a Flask test client logged in through the real login form (as ``admin`` over the district
unless told otherwise), sending the session's CSRF token with every request as the browser's Dash does.
"""

from __future__ import annotations

import contextlib
import re
import uuid

PASSWORD = "a test password 42"


def make_user(settings, role: str = "admin", area: str | None = None, name: str | None = None) -> str:
    """A user of ``role`` over ``area`` (default the district) in the settings' store; its name."""
    from config.city import load_city
    from dashboard import auth
    from store.services import get_engine, migrate

    engine = get_engine(settings)
    migrate(engine)
    city = load_city(settings.city_dir)
    name = name or f"{role}-{uuid.uuid4().hex[:8]}"
    auth.create_user(engine, city, name, PASSWORD, role, area or city.geography.district.code)
    return name


def login(client, name: str, password: str = PASSWORD):
    """Log ``client`` in through the login form; the response of the form's post."""
    page = client.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.get_data(as_text=True)).group(1)
    resp = client.post("/login", data={"username": name, "password": password, "csrf": token, "next": "/"})
    csrf = client.get_cookie("_csrf_token")
    if csrf is not None:
        client.environ_base["HTTP_X_CSRFTOKEN"] = csrf.value
    return resp


def client(settings=None, role: str = "admin", area: str | None = None, *, app=None):
    """A test client of a new app (or ``app``) logged in as a new user of ``role`` over ``area``."""
    from app import create_app
    from dashboard.context import SETTINGS_KEY

    app = app or create_app(settings)
    settings = settings or app.server.config[SETTINGS_KEY]
    c = app.server.test_client()
    resp = login(c, make_user(settings, role, area))
    assert resp.status_code == 303 and "error" not in resp.headers["Location"], resp.headers.get("Location")
    return c


@contextlib.contextmanager
def request(app, role: str = "admin", area: str | None = None, path: str = "/"):
    """A request context of ``app`` as a viewer of ``role`` over ``area`` (default the district): for calling the
    page's functions directly, as a callback would."""
    from flask import g

    from dashboard import auth
    from dashboard.context import SETTINGS_KEY

    with app.server.test_request_context(path):
        from config.city import load_city

        district = load_city(app.server.config[SETTINGS_KEY].city_dir).geography.district.code
        g.gw_viewer = auth.Viewer(f"test-{role}", role, area or district, None)
        g.gw_csrf = "test"
        yield
