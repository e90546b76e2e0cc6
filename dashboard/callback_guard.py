"""The gate's check of Dash callbacks: each callback belongs to a page (recorded as the pages register them) and
runs only for a viewer who may open that page; its inputs must be of the types the page's controls send."""

from __future__ import annotations

import contextlib

from flask import request

from core import access
from dashboard.viewers import Viewer

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


def _entry_problem(part: str, entry) -> str | None:
    """Why one entry of ``inputs`` or ``state`` is not what its control sends (None: it is, or it is not checked)."""
    if not isinstance(entry, dict) or "property" not in entry:
        return f"{part}: an entry without id and property"
    prop, value = entry.get("property"), entry.get("value")
    name = f"{str(entry.get('id'))[:60]}.{str(prop)[:40]}"
    want = _PROP_TYPES.get(prop) if isinstance(prop, str) else None
    if want is None or value is None:
        return None
    ok = isinstance(value, want) and not isinstance(value, bool)
    if ok and prop == "value" and isinstance(value, list):
        ok = all(isinstance(v, _SCALARS) for v in value)
    if not ok:
        return f"callback input {name}: a {type(value).__name__} is not what this control sends"
    if isinstance(value, str) and len(value) > MAX_CALLBACK_TEXT:
        return f"callback input {name}: {len(value)} characters, more than {MAX_CALLBACK_TEXT}"
    return None


def callback_input_problem(body) -> str | None:
    """Why a Dash update request's inputs are not what the page's components send (None: they are)."""
    if not isinstance(body, dict):
        return "the body is not a JSON object"
    for part in ("inputs", "state"):
        entries = body.get(part) or []
        if not isinstance(entries, list):
            return f"{part}: not a list"
        for entry in (e for x in entries for e in (x if isinstance(x, list) else [x])):
            problem = _entry_problem(part, entry)
            if problem:
                return problem
    return None


def callback_refusal(server, v: Viewer) -> tuple[str | None, str | None, str | None]:
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
