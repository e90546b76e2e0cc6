"""The dispatcher's work queue (/dispatch, 分拨工作台): 待分拨, 待签收, 超期 and 报到未到, newest first with their
counts, within the viewer's jurisdiction (dashboard/dispatch.py). Each row links to its case and carries the main
actions inline: 派遣 with a department picker where nothing is dispatched yet, 催办 at once, 督办 and 转派 through
the action form. The lists look for changes every few seconds and are drawn again only when something changed (a
picker being used is not reset by a poll that found nothing new). ``?lang=en``."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Any

import orjson
from dash import ALL, Input, Output, State, clientside_callback, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from core.records import CITY_TZ
from dashboard import actions, auth, context, i18n
from dashboard import dispatch as queue_model
from layouts import components

LISTS = ("unrouted", "unaccepted", "overdue", "no_checkin")
HEADINGS = {"unrouted": "dp_unrouted", "unaccepted": "dp_unaccepted", "overdue": "dp_overdue",
            "no_checkin": "dp_no_checkin"}
TICK_MS = 4000
DIRECT = ("register", "dispatch", "remind")  # taken from the row itself; the others open the form


class ID:
    page = "dp-page"
    lang = "dp-lang"
    tick = "dp-tick"
    digest = "dp-digest"
    done = "dp-done"
    updated = "dp-updated"
    do = "dp-do"  # pattern type of a row's direct action button
    form = "dp-form"  # pattern type of a row's button that opens the form
    dept = "dp-dept"  # pattern type of a row's department picker

    @staticmethod
    def body(name: str) -> str:
        return f"dp-list-{name}"

    @staticmethod
    def count(name: str) -> str:
        return f"dp-count-{name}"


FORM = components.FormIds("dp")


def title(lang: str | None = None) -> str:
    return i18n.texts(lang)["dp_title"]


def _time(v: datetime | None) -> str:
    return "—" if v is None else v.astimezone(CITY_TZ).strftime("%m-%d %H:%M")


def _when(r: dict[str, Any], name: str, now: datetime, t: dict[str, str]) -> str:
    if name == "unrouted":
        return t["dp_reported"].format(t=_time(r["reported_at"]))
    if name == "unaccepted":
        return t["dp_dispatched"].format(t=_time(r["dispatched_at"]))
    if name == "overdue":
        return t["dp_late"].format(d=components.dur((now - r["due_at"]).total_seconds(), t))
    return t["dp_whistled"].format(t=_time(r["checkin_due_at"]))


def _acts(r: dict[str, Any], city, lang: str) -> list:
    out: list = []
    t = i18n.texts(lang)
    token = uuid.uuid4().hex[:12]  # one per drawing: a double click on a drawn button acts once
    for a in r["actions"]:
        label = components.action_label(a, lang)
        if a == "dispatch":
            out.append(dcc.Dropdown(components.department_options(city), [], id={"type": ID.dept, "case": r["id"]},
                                    multi=True, placeholder=t["dp_pick"], className="dp-picker",
                                    labels=components.picker_labels(t)))
        kind = ID.do if a in DIRECT else ID.form
        out.append(html.Button(label, id={"type": kind, "case": r["id"], "action": a, "rid": token}, n_clicks=0,
                               className=f"act-button act-{a}"))
    return out


def _row(r: dict[str, Any], name: str, city, now: datetime, t: dict[str, str], lang: str) -> html.Tr:
    depts = r.get("department_name") if name == "no_checkin" else "、".join(r["department_names"])
    sup = html.Span(t["scr_sup"], className="dp-sup", title=r.get("supervise_note") or "") \
        if r.get("supervised_at") else None
    return html.Tr([
        html.Td(dcc.Link(f"#{r['id']}", href=f"/case/{r['id']}" + ("?lang=en" if lang == "en" else ""),
                         className="dp-case")),
        html.Td([html.Span(className=f"dr-dot dr-l{r['grade']}"), sup, html.Span(r["title"], className="dp-title")],
                className="dp-title-cell", title=r["title"]),
        html.Td(r.get("place") or t["unlocated"], className="dp-place"),
        html.Td(_when(r, name, now, t), className="dp-late" if name in ("overdue", "no_checkin") else "dp-when"),
        html.Td(depts or "—", className="dp-depts"),
        html.Td(_acts(r, city, lang), className="dp-acts"),
    ], className="dp-row", **{"data-case": str(r["id"])})


def _list(rows: list[dict[str, Any]], count: int, name: str, city, now, t, lang) -> list:
    if not rows:
        return [html.Div(t["dp_empty"], className="dr-empty")]
    head = html.Thead(html.Tr([html.Th(t[k]) for k in ("dp_col_case", "dp_col_title", "dp_col_place", "dp_col_time",
                                                         "dp_col_dept", "dp_col_act")]))
    more = [html.Div(t["dp_more"].format(n=len(rows)), className="dp-more")] if count > len(rows) else []
    return [html.Table([head, html.Tbody([_row(r, name, city, now, t, lang) for r in rows])],
                       className="dp-table"), *more]


def _section(name: str, t: dict[str, str]) -> html.Section:
    return html.Section([
        html.H2([t[HEADINGS[name]], html.Span("…", id=ID.count(name), className="dp-count")]),
        html.Div(id=ID.body(name), className="dp-body"),
    ], className=f"dp-section dp-{name}", id=f"dp-{name}")


def layout(settings, city, query: dict[str, str]) -> html.Div:
    lang = i18n.lang_of(query.get("lang"))
    t = i18n.texts(lang)
    return html.Div([
        dcc.Store(id=ID.lang, data=lang), dcc.Store(id=ID.digest), dcc.Store(id=ID.done, data=0),
        dcc.Interval(id=ID.tick, interval=TICK_MS),
        html.Header([
            html.H1(t["dp_heading"].format(district=city.geography.district.name)),
            html.Span(id=ID.updated, className="dp-updated"),
            html.A(t["dp_home"], href="/" + ("?lang=en" if lang == "en" else ""), className="dr-link"),
            html.A(t["switch"], href="?lang=" + ("zh" if lang == "en" else "en"), className="dr-link", id="dp-lang-switch"),
        ], className="dp-header"),
        components.action_form(FORM, city, t),
        html.Div([_section(name, t) for name in LISTS], className="dp-grid"),
    ], id=ID.page, className="dp", lang="zh-CN" if lang == "zh" else "en")


def skeleton(city) -> html.Div:
    """The page's controls for the app's validation layout."""
    return html.Div([layout(None, city, {}),
                     html.Button(id={"type": ID.do, "case": 0, "action": "remind", "rid": "x"}),
                     html.Button(id={"type": ID.form, "case": 0, "action": "supervise", "rid": "x"}),
                     dcc.Dropdown(id={"type": ID.dept, "case": 0})])


# --------------------------------------------------------------------------- callbacks


def _digest(view: dict[str, Any]) -> str:
    return hashlib.blake2b(orjson.dumps(view["lists"], default=str), digest_size=8).hexdigest()


def refresh(_tick, _done, lang, digest) -> tuple:
    """The four lists and their counts, drawn again when the queue changed."""
    lang = i18n.lang_of(lang)
    t = i18n.texts(lang)
    view = queue_model.queue()
    new = _digest(view)
    updated = t["dp_updated"].format(t=view["as_of"].astimezone(CITY_TZ).strftime("%H:%M:%S"))
    if new == digest and ctx.triggered_id == ID.tick:
        return (*([no_update] * (2 * len(LISTS))), updated, digest)
    city = context.city()
    bodies = [_list(view["lists"][n]["rows"], view["lists"][n]["count"], n, city, view["as_of"], t, lang)
              for n in LISTS]
    counts = [str(view["lists"][n]["count"]) for n in LISTS]
    return (*bodies, *counts, updated, new)


def _picked(case_id, picked) -> list[str]:
    """The departments picked in the row of ``case_id`` (the pickers' states, matched by their ids)."""
    states = ctx.states_list[0] if ctx.states_list and isinstance(ctx.states_list[0], list) else []
    values = picked if isinstance(picked, list) else []
    for s, v in zip(states, values, strict=False):
        if isinstance(s, dict) and isinstance(s.get("id"), dict) and s["id"].get("case") == case_id:
            return [d for d in v if isinstance(d, str)] if isinstance(v, list) else []
    return []


def _trigger() -> dict[str, Any]:
    trig = ctx.triggered_id
    if not isinstance(trig, dict) or not isinstance(trig.get("case"), int) or not isinstance(trig.get("action"), str):
        raise PreventUpdate
    return trig


def direct(clicks, picked, lang, done) -> tuple:
    """立案, 派遣 (with the row's departments) or 催办, straight from a row."""
    if not components.pressed(clicks):
        raise PreventUpdate
    trig = _trigger()
    if trig["action"] not in DIRECT:
        raise PreventUpdate
    lang = i18n.lang_of(lang)
    body: dict[str, Any] = {"action": trig["action"], "request_id": f"dp{trig.get('rid')}{trig['case']}"[:64]}
    if trig["action"] == "dispatch":
        body["departments"] = _picked(trig["case"], picked)
    outcome = actions.perform(auth.viewer(), trig["case"], body)
    return components.answer(outcome, trig["action"], i18n.texts(lang), lang), components.count_of(done) + 1


def open_form(clicks, lang) -> tuple:
    """督办 or 转派 from a row: the action form for its case, with a fresh request id (and a 批示 to start from)."""
    if not components.pressed(clicks):
        raise PreventUpdate
    trig = _trigger()
    lang = i18n.lang_of(lang)
    t = i18n.texts(lang)
    try:
        out = list(components.form_for(trig["action"], trig["case"], t, lang))
    except ValueError:
        raise PreventUpdate from None
    out[2] = f"{out[2]} · #{trig['case']}"
    if trig["action"] == "supervise":
        out[9] = t["dp_supervise_note"]
    return tuple(out)


def submit(n, choice, departments, note, due, lang, done) -> tuple:
    if not n:
        raise PreventUpdate
    lang = i18n.lang_of(lang)
    shown, ok = components.act(choice, departments, note, due, i18n.texts(lang), lang)
    return shown, components.HIDE if ok else components.SHOW, components.count_of(done) + 1


def register(app) -> None:
    app.callback(*[Output(ID.body(n), "children") for n in LISTS], *[Output(ID.count(n), "children") for n in LISTS],
                 Output(ID.updated, "children"), Output(ID.digest, "data"),
                 Input(ID.tick, "n_intervals"), Input(ID.done, "data"), State(ID.lang, "data"),
                 State(ID.digest, "data"))(refresh)
    app.callback(Output(FORM.result, "children"), Output(ID.done, "data"),
                 Input({"type": ID.do, "case": ALL, "action": ALL, "rid": ALL}, "n_clicks"),
                 State({"type": ID.dept, "case": ALL}, "value"), State(ID.lang, "data"), State(ID.done, "data"),
                 prevent_initial_call=True)(direct)
    app.callback(Output(FORM.choice, "data"), Output(FORM.form, "style"), Output(FORM.title, "children"),
                 Output(FORM.depts_row, "style"), Output(FORM.note_row, "style"), Output(FORM.due_row, "style"),
                 Output(FORM.note_label, "children"), Output(FORM.note, "placeholder"), Output(FORM.depts, "value"),
                 Output(FORM.note, "value"), Output(FORM.due, "value"),
                 Output(FORM.result, "children", allow_duplicate=True),
                 Input({"type": ID.form, "case": ALL, "action": ALL, "rid": ALL}, "n_clicks"), State(ID.lang, "data"),
                 prevent_initial_call=True)(open_form)
    app.callback(Output(FORM.form, "style", allow_duplicate=True), Input(FORM.cancel, "n_clicks"),
                 prevent_initial_call=True)(lambda n: components.HIDE if n else components.SHOW)
    app.callback(Output(FORM.result, "children", allow_duplicate=True),
                 Output(FORM.form, "style", allow_duplicate=True), Output(ID.done, "data", allow_duplicate=True),
                 Input(FORM.submit, "n_clicks"), State(FORM.choice, "data"), State(FORM.depts, "value"),
                 State(FORM.note, "value"), State(FORM.due, "value"), State(ID.lang, "data"), State(ID.done, "data"),
                 prevent_initial_call=True)(submit)
    clientside_callback(  # the form opens at the top of the desk: bring it into view from a row far below
        "function(s) { var f = document.getElementById('dp-act-form');"
        " if (f && s && s.display !== 'none') { f.scrollIntoView({block: 'nearest'}); }"
        " return window.dash_clientside.no_update; }",
        Output(FORM.form, "title"), Input(FORM.form, "style"), prevent_initial_call=True)
