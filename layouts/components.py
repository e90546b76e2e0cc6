"""What several pages draw alike: number and change formats, bar lists and day columns, the problem notice, the
area picker's options, a map's bounds and the action form of 在线督办. Components and formatters only: nothing here reads a store."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from dash import dcc, html

from core.actions import MAY_DUE, NEEDS_DEPARTMENTS, NEEDS_NOTE
from core.lifecycle import ACTION_LABELS, STATUS_LABELS, Action, Status
from core.records import CITY_TZ
from dashboard import actions, auth, drill, i18n

LOWER_IS_BETTER = {"overdue_open", "handling_mean_s", "handling_median_s"}
NEUTRAL = {"cases_total", "resolved"}  # more or fewer cases is neither good nor bad


def pct(v: float | None) -> str:
    return "—" if v is None else f"{v * 100:.1f}%"


def dur(s: float | None, t: dict[str, str]) -> str:
    if s is None:
        return "—"
    h = s / 3600
    return t["dr_hours"].format(n=f"{h:.1f}") if h < 48 else t["dr_days"].format(n=f"{h / 24:.1f}")


def fmt(key: str, v: Any, t: dict[str, str]) -> str:
    if v is None:
        return "—"
    if key.endswith("_rate") or key == "satisfaction":
        return pct(v)
    if key.endswith("_s"):
        return dur(v, t)
    if key == "rating_mean":
        return f"{v:.2f}"
    return f"{int(v):,}"


def change(key: str, delta: Any, t: dict[str, str]) -> html.Span:
    if delta is None:
        return html.Span(t["dr_no_change"], className="dr-delta dr-flat")
    if key.endswith("_rate") or key == "satisfaction":
        text, size = f"{delta * 100:+.1f} pt", abs(delta) >= 0.0005
    elif key.endswith("_s"):
        text, size = f"{delta / 3600:+.1f} h", abs(delta) >= 60
    elif key == "rating_mean":
        text, size = f"{delta:+.2f}", abs(delta) >= 0.005
    else:
        text, size = f"{int(delta):+,}", delta != 0
    good = (delta < 0) if key in LOWER_IS_BETTER else (delta > 0)
    cls = "dr-flat" if not size else "dr-neutral" if key in NEUTRAL else ("dr-up" if good else "dr-down")
    arrow = "" if not size else ("▲ " if delta > 0 else "▼ ")
    return html.Span(arrow + text, className=f"dr-delta {cls}")


def bars(rows: list[dict[str, Any]], label: str = "name", value: str = "cases", link=None) -> html.Div:
    top = max([r[value] for r in rows] or [0]) or 1
    out = []
    for r in rows:
        name = dcc.Link(r[label], href=link(r)) if link else r[label]
        out.append(html.Div([html.Span(name, className="dr-bar-label"),
                             html.Span(html.I(style={"width": f"{100 * r[value] / top:.1f}%",
                                                     **({"background": r["color"]} if r.get("color") else {})}),
                                       className="dr-bar-track"),
                             html.Span(f"{r[value]:,}", className="dr-bar-value")], className="dr-bar"))
    return html.Div(out or html.Div("—", className="dr-empty"), className="dr-bars")


def trend(days: list[dict[str, Any]], t: dict[str, str]) -> html.Div:
    top = max([d["cases"] for d in days] or [0]) or 1
    every = max(1, len(days) // 8)
    cols = []
    for i, d in enumerate(days):
        cols.append(html.Div([
            html.Div(html.I(style={"height": f"{100 * d['cases'] / top:.1f}%"}), className="dr-col-bar",
                     title=f"{d['day']}: {d['cases']:,}"),
            html.Div(d["day"][5:] if len(d["day"]) == 10 else d["day"][:2], className="dr-col-label")
            if i % every == 0 else html.Div(className="dr-col-label"),
        ], className="dr-col"))
    total = sum(d["cases"] for d in days)
    return html.Div([html.Div(cols, className="dr-cols"),
                     html.Div(t["dr_trend_total"].format(n=f"{total:,}", peak=f"{top:,}"), className="dr-note")])


def problem(exc: drill.ViewError, t: dict[str, str], home: str) -> list:
    head = (t["dr_bad_area"].format(value=exc.value) if exc.parameter == "area"
            else t["dr_bad_path"] if exc.parameter == "path"
            else t["dr_bad_param"].format(name=exc.parameter[:40], value=exc.value))
    return [html.Strong(head), html.Div(exc.message, className="dr-detail"),
            dcc.Link(t["dr_go_home"], href=home, className="dr-button")]


def area_options(geo) -> list[dict[str, str]]:
    """The areas a viewer may pick (compare, briefings): the jurisdiction, then each street in it followed by its
    communities (indented); a community's or grid's jurisdiction lists itself."""
    def communities(street):
        return [{"label": f"\u2003{c.name}", "value": c.code} for c in geo.children(street.code)]

    home = geo.area(auth.scope() or geo.district.code)
    out = [{"label": home.name, "value": home.code}]
    if home.level == "district":
        for s in geo.areas("street"):
            out += [{"label": s.name, "value": s.code}, *communities(s)]
    elif home.level == "street":
        out += communities(home)
    return out


def map_bounds(geo, code: str | None) -> list[list[float]]:
    """[[south, west], [north, east]] of an area (None or the district: the whole city) for a Leaflet map."""
    x0, y0, x1, y1 = geo.geometry(code).bounds if code and code != geo.district.code else geo.bounds
    return [[y0, x0], [y1, x1]]


# --------------------------------------------------------------------------- 在线督办: the action form
# One small form per page (ids under a page's prefix): the fields an action needs, shown when its button is pressed.
# A fresh request id per opening, so a double click on 确定 acts once (the server answers the replay again).

def action_label(action: str, lang: str) -> str:
    try:
        return i18n.pick(ACTION_LABELS[Action(action)], lang)
    except ValueError:
        return action


def department_options(city) -> list[dict[str, str]]:
    """The city's departments for a picker: their Chinese short names (the name on hover), by code."""
    return [{"label": d.short or d.name, "value": d.code, "title": d.name} for d in city.departments.values()]


def picker_labels(t: dict[str, str]) -> dict[str, str]:
    """A department picker's own words (search, select all…) in the page's language."""
    return {k[3:]: v for k, v in t.items() if k.startswith("dd_")}


class FormIds:
    """The component ids of one page's action form (``prefix``: the page's)."""

    def __init__(self, prefix: str):
        p = f"{prefix}-act"
        self.form, self.title, self.choice, self.result = f"{p}-form", f"{p}-title", f"{p}-choice", f"{p}-result"
        self.depts_row, self.depts = f"{p}-depts-row", f"{p}-depts"
        self.note_row, self.note_label, self.note = f"{p}-note-row", f"{p}-note-label", f"{p}-note"
        self.due_row, self.due = f"{p}-due-row", f"{p}-due"
        self.submit, self.cancel = f"{p}-submit", f"{p}-cancel"


HIDE, SHOW = {"display": "none"}, {}


def action_form(ids: FormIds, city, t: dict[str, str]) -> html.Div:
    """The (hidden) form and the answer line below it."""
    return html.Div([
        dcc.Store(id=ids.choice),
        html.Div([
            html.H3(id=ids.title, className="act-title"),
            html.Label([html.Span(t["act_depts"], className="act-label"),
                        dcc.Dropdown(department_options(city), [], id=ids.depts, multi=True,
                                     placeholder=t["act_depts_hint"], className="act-depts",
                                     labels=picker_labels(t))],
                       id=ids.depts_row, className="act-row", style=HIDE),
            html.Label([html.Span(t["act_note"], id=ids.note_label, className="act-label"),
                        dcc.Textarea(id=ids.note, value="", maxLength=2000, className="act-text",
                                     placeholder=t["act_note_hint"])],
                       id=ids.note_row, className="act-row", style=HIDE),
            html.Label([html.Span(t["act_due"], className="act-label"),
                        dcc.Input(id=ids.due, type="datetime-local", value="", className="act-due"),
                        html.Span(t["act_due_hint"], className="act-hint")],
                       id=ids.due_row, className="act-row", style=HIDE),
            html.Div([html.Button(t["act_submit"], id=ids.submit, n_clicks=0, className="act-submit"),
                      html.Button(t["act_cancel"], id=ids.cancel, n_clicks=0, className="act-cancel")],
                     className="act-buttons"),
        ], id=ids.form, className="act-form", style=HIDE),
        html.Div(id=ids.result, className="act-result", role="status"),
    ], className="act-box")


def form_for(action: str, case_id: int | str, t: dict[str, str], lang: str) -> tuple:
    """What opening the form of ``action`` on case ``case_id`` sets: (the choice with a fresh request id, the form's
    style, its title, the departments / note / due rows' styles, the note's label and hint, cleared fields and answer)."""
    a = Action(action)
    supervise = a is Action.SUPERVISE
    choice = {"case": int(case_id), "action": a.value, "request_id": uuid.uuid4().hex}
    return (choice, SHOW, t["act_form_title"].format(action=action_label(a.value, lang)),
            SHOW if a in NEEDS_DEPARTMENTS else HIDE,
            SHOW if a in NEEDS_NOTE or a is Action.REMIND else HIDE,
            SHOW if a in MAY_DUE else HIDE,
            t["act_note_supervise" if supervise else "act_note"],
            t["act_note_supervise_hint" if supervise else "act_note_hint"], [], "", "", None)


def city_time(value: str | None) -> str | None:
    """A datetime-local input's value (the city's wall time) as ISO 8601 with the city's offset (+08:00)."""
    if not value:
        return None
    return datetime.fromisoformat(value).replace(tzinfo=CITY_TZ).isoformat()


def body_of(choice: dict[str, Any], departments, note: str | None, due: str | None) -> dict[str, Any]:
    """The request for dashboard.actions.perform from the form's fields (only those the action takes)."""
    a = Action(choice["action"])
    body: dict[str, Any] = {"action": a.value, "request_id": choice["request_id"]}
    if a in NEEDS_DEPARTMENTS:
        body["departments"] = [d for d in departments or [] if isinstance(d, str)]
    if note and note.strip():
        body["note"] = note
    if a in MAY_DUE and due:
        body["due_at"] = city_time(due)
    return body


def answer(outcome: actions.Outcome, action: str, t: dict[str, str], lang: str) -> html.Div:
    """The server's answer as a line on the page: done (with the new status), accepted, or its reason."""
    label = action_label(action, lang)
    if outcome.status == 200:
        status = outcome.body.get("status")
        shown = i18n.pick(STATUS_LABELS[Status(status)], lang) if status else "—"
        return html.Div(t["act_done"].format(action=label, status=shown), className="act-ok")
    if outcome.status == 202:
        return html.Div(t["act_accepted"].format(action=label), className="act-wait")
    return html.Div(t["act_refused"].format(error=actions.error_text(outcome.body, lang) or outcome.status),
                    className="act-bad")


def pressed(clicks) -> bool:
    """Whether a pattern of buttons (ALL) holds one really pressed: drawn again, they all start at 0."""
    return isinstance(clicks, list) and any(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in clicks)


def count_of(done) -> int:
    """A page's counter of actions taken (a store), whatever a crafted request put there."""
    return done if isinstance(done, int) and not isinstance(done, bool) and 0 <= done < 10**9 else 0


def _choice(choice: Any) -> dict[str, Any] | None:
    """The form's choice as opening it stored it, or None when it is not (a crafted request, a stale page)."""
    if not isinstance(choice, dict):
        return None
    case, action, rid = choice.get("case"), choice.get("action"), choice.get("request_id")
    if not isinstance(case, int) or isinstance(case, bool) or not isinstance(action, str) or not isinstance(rid, str):
        return None
    try:
        Action(action)
    except ValueError:
        return None
    return {"case": case, "action": action, "request_id": rid}


def act(choice: Any, departments, note, due, t: dict[str, str], lang: str) -> tuple[html.Div, bool]:
    """Take the form's action as the viewer of this request: (the answer, whether it was applied or accepted)."""
    choice = _choice(choice)
    if choice is None:
        return html.Div(t["act_pick_none"], className="act-bad"), False
    departments = departments if isinstance(departments, list) else []
    try:
        body = body_of(choice, departments, note if isinstance(note, str) else None, due if isinstance(due, str) else None)
    except ValueError:
        return html.Div(t["act_bad_due"], className="act-bad"), False
    outcome = actions.perform(auth.viewer(), choice["case"], body)
    return answer(outcome, body["action"], t, lang), outcome.status in (200, 202)


def action_buttons(actions_now, case_id: int, lang: str, kind: str) -> list[html.Button]:
    """A button per action (pattern ids ``{"type": kind, "case": id, "action": name}``)."""
    return [html.Button(action_label(a, lang), id={"type": kind, "case": case_id, "action": str(a)}, n_clicks=0,
                        className=f"act-button act-{a}") for a in actions_now]
