"""The case page (/case/<id>): fields, map pin, timeline, stages against their limits, departments, whistles,
extensions, suspensions and evaluation, drawn on the server from dashboard/casepage.py's view model; and 在线督办:
the actions the viewer's role may take now (core.actions.allowed_for), each with a small form, taken through
dashboard.actions.perform. After an action (and every few seconds while the page is open, when the case changed)
the page draws the case again without a reload.

A bad or unknown id, or a case outside the viewer's jurisdiction, shows a message with a way back; ``?lang=en``.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import dash_leaflet as dl
from dash import ALL, Input, Output, State, ctx, dcc, html
from dash.exceptions import PreventUpdate

from core.actions import allowed_for, may_act
from core.lifecycle import ACTION_LABELS, STATUS_LABELS, Action, Status
from core.records import CITY_TZ, case_id_of
from dashboard import auth, casepage, context, i18n
from layouts import components

log = logging.getLogger(__name__)

LEVELS = ("district", "street", "community", "grid")


class ID:
    """Component ids of this page (prefix ``case-``)."""

    page = "case-page"
    map = "case-map"
    pin = "case-pin"
    stages = "case-stages"
    timeline = "case-timeline"
    departments = "case-departments"
    whistles = "case-whistles"
    extensions = "case-extensions"
    suspensions = "case-suspensions"
    evaluation = "case-evaluation"
    message = "case-message"
    live = "case-live"  # the header and the actions: drawn again after an action
    detail = "case-detail"  # the rest: drawn again with them
    acting = "case-acting"
    auto = "case-auto"
    supervised = "case-supervised"
    button = "case-act"  # the action buttons' pattern type
    case = "case-id"
    lang = "case-lang-store"
    version = "case-version"
    done = "case-done"
    tick = "case-tick"


FORM = components.FormIds("case")
TICK_MS = 5000  # how often an open page looks whether its case changed


def title(lang: str = i18n.DEFAULT_LANG) -> str:
    return i18n.texts(lang)["case_page"]


# --------------------------------------------------------------------------- formatting


class _Fmt:
    """Times, durations, names and labels in one language."""

    def __init__(self, city, lang: str):
        self.city, self.lang, self.t = city, lang, i18n.texts(lang)

    def time(self, value: datetime | None) -> str:
        return value.astimezone(CITY_TZ).strftime("%Y-%m-%d %H:%M:%S") if value is not None else "—"

    def duration(self, seconds: float | None) -> str:
        if seconds is None:
            return "—"
        s = int(round(abs(seconds)))
        d, rest = divmod(s, 86400)
        h, rest = divmod(rest, 3600)
        m, sec = divmod(rest, 60)
        parts = [(d, "case_u_d"), (h, "case_u_h"), (m, "case_u_m")] if s >= 60 else [(sec, "case_u_s")]
        shown = [self.t[k].format(n=n) for n, k in parts if n][:2] or [self.t["case_u_m"].format(n=0)]
        return ("" if self.lang == "zh" else " ").join(shown)

    def limit(self, limit) -> str:
        return self.t[f"case_lim_{limit.unit}"].format(n=limit.amount) if limit is not None else "—"

    def status(self, code: str | None) -> str:
        return i18n.pick(STATUS_LABELS[Status(code)], self.lang) if code else "—"

    def action(self, code: str) -> str:
        try:
            return i18n.pick(ACTION_LABELS[Action(code)], self.lang)
        except ValueError:
            return code

    def department(self, code: str) -> str:
        d = self.city.departments.get(code)
        return d.name if d is not None else code

    def departments(self, codes) -> str:
        return "、".join(self.department(c) for c in codes or []) or "—"

    def yes(self, value: bool | None) -> str:
        return "—" if value is None else self.t["case_yes" if value else "case_no"]


def _lang_href(case_id: str, lang: str) -> str:
    return f"/case/{case_id}" + ("" if lang == "en" else "?lang=en")


def _top(t: dict[str, str], crumbs: list, switch_href: str) -> html.Div:
    return html.Div([
        html.Nav(crumbs, className="case-crumbs"),
        html.A(t["case_switch"], href=switch_href, className="case-lang", id="case-lang"),
    ], className="case-top")


def _section(heading: str, body, section_id: str | None = None, cls: str = "") -> html.Section:
    kw = {"id": section_id} if section_id else {}
    return html.Section([html.H2(heading), body], className=f"case-section {cls}".strip(), **kw)


def _table(head: list[str], rows: list[list[Any]], row_classes: list[str] | None = None, table_id: str | None = None):
    kw = {"id": table_id} if table_id else {}
    return html.Table([
        html.Thead(html.Tr([html.Th(h) for h in head])),
        html.Tbody([html.Tr([html.Td(c) for c in row], className=(row_classes or [""] * len(rows))[i])
                    for i, row in enumerate(rows)]),
    ], className="case-table", **kw)


def _ink(background: str) -> str:
    """Dark or white text, whichever reads on ``background`` (#RRGGBB): yellow takes dark text."""
    r, g, b = (int(background[i:i + 2], 16) for i in (1, 3, 5))
    return "#1b2430" if 0.299 * r + 0.587 * g + 0.114 * b > 160 else "#fff"


def _badge(text: str, kind: str, style: dict | None = None) -> html.Span:
    return html.Span(text, className=f"case-badge case-{kind}", style=style or {})


def _verdict(f: _Fmt, ok: bool | None, word_ok: str | None = None, word_bad: str | None = None):
    if ok is None:
        return "—"
    return _badge(word_ok or f.t["case_met"], "ok") if ok else _badge(word_bad or f.t["case_missed"], "bad")


# --------------------------------------------------------------------------- parts


def _message(t: dict[str, str], lang: str, text: str, hint: str, value: str) -> html.Div:
    home = "/" + ("?lang=en" if lang == "en" else "")
    switch = "?lang=en" if lang != "en" else "?"
    return html.Div([
        _top(t, [html.A(t["case_back"], href=home)], switch),
        html.Div([html.H1(text), html.P(hint), html.A(t["case_back"], href=home, className="case-back")],
                 id=ID.message, className="case-message"),
    ], id=ID.page, className="case-page", lang="zh-CN" if lang == "zh" else "en", **{"data-case": value})


def _crumbs(f: _Fmt, geo, case: dict[str, Any]) -> list:
    suffix = "?lang=en" if f.lang == "en" else ""
    out: list = [html.A(geo.district.name, href="/" + suffix, className="case-crumb")]
    for level in LEVELS[1:]:
        code = case.get(f"{level}_code")
        area = geo.get(code) if code else None
        if area is None:
            continue
        out += [html.Span("›", className="case-sep"),
                html.A(area.name, href=f"/area/{area.code}{suffix}", className="case-crumb")]
    return out


def _header(f: _Fmt, city, view: dict[str, Any]) -> html.Header:
    c, t = view["case"], f.t
    grade = city.grades.get(c["grade"])
    cat = city.categories.get(c["category"])
    if cat is not None:
        group = city.group_of(cat.code)
        category = f"{group.name} › {cat.name}" if f.lang == "zh" else f"{group.en} › {cat.en}"
    else:
        category = c["category"]
    badges = []
    if grade is not None:
        badges.append(_badge(grade.name if f.lang == "zh" else grade.en.capitalize(), "grade",
                             {"background": grade.color, "color": _ink(grade.color)}))
    badges.append(_badge(category, "category"))
    badges.append(_badge(f.status(c["status"]), "status"))
    if view["overdue"]:
        badges.append(_badge(t["case_overdue"], "bad"))
    elif view["resolved_late"]:
        badges.append(_badge(t["case_resolved_late"], "bad"))
    if c["suspended_at"] is not None:
        badges.append(_badge(t["case_suspended"], "warn"))
    if c["escalated"]:
        badges.append(_badge(t["case_escalated"], "bad"))
    return html.Header([
        html.Div([html.Span(t["case_heading"].format(id=c["id"]), className="case-id"),
                  html.Span(f"{i18n.source_label(c['source'], f.lang)} · {c['external_id']}", className="case-ext")],
                 className="case-idline"),
        html.H1(c["title"], className="case-title"),
        html.Div(badges, className="case-badges"),
    ], className="case-header", style={"borderLeftColor": grade.color if grade else "#90a4ae"})


def _fields(f: _Fmt, city, view: dict[str, Any]) -> html.Dl:
    c, t = view["case"], f.t
    cat = city.categories.get(c["category"])
    grid = city.geography.get(c["grid_code"]) if c["grid_code"] else None
    provisional = t["case_provisional"] if c["due_provisional"] else ""
    rows = [
        ("case_f_source", f"{i18n.source_label(c['source'], f.lang)} · {c['external_id']}"),
        ("case_f_reported", f.time(c["reported_at"])),
        ("case_f_accept_due", f.time(c["accept_due_at"]) + (provisional if c["accept_due_at"] else "")),
        ("case_f_due", f.time(c["due_at"]) + (provisional if c["due_at"] else "")),
        ("case_f_limits", t["case_limits"].format(accept=f.limit(cat.accept_limit), complete=f.limit(cat.complete_limit))
         if cat is not None else "—"),
        ("case_f_accepted", f.time(c["accepted_at"])),
        ("case_f_resolved", f.time(c["resolved_at"])),
        ("case_f_closed", f.time(c["closed_at"])),
        ("case_f_departments", f.departments(c["departments"])),
        ("case_f_onsite", f.yes(c["onsite"])),
        ("case_f_escalated", f.yes(c["escalated"])),
        ("case_f_grid", f"{grid.name} ({grid.code})" if grid else t["unlocated"]),
        ("case_f_address", c["address"] or "—"),
        ("case_f_reporter", " · ".join(x for x in (view["reporter"]["name"], view["reporter"]["phone"]) if x) or "—"),
        ("case_f_location", f"{c['lon']:.6f}, {c['lat']:.6f}" if c["lon"] is not None else t["case_unlocated"]),
        ("case_f_updated", f.time(c["updated_at"])),
    ]
    items = []
    for key, value in rows:
        items += [html.Dt(t[key]), html.Dd(value)]
    items += [html.Dt(t["case_f_description"], className="case-desc-label"),
              html.Dd(c["description"] or "—", className="case-desc")]
    return html.Dl(items, className="case-fields")


def _map(f: _Fmt, settings, city, view: dict[str, Any]):
    from shapely.geometry import mapping

    c = view["case"]
    if c["lon"] is None or c["lat"] is None:
        return html.Div(f.t["case_unlocated"], className="case-unlocated")
    geo = city.geography
    code = c["grid_code"] if c["grid_code"] in geo else None
    shape = geo.geometry(code) if code else None
    layers: list = []
    if settings.map_tile_url:
        layers.append(dl.TileLayer(url=settings.map_tile_url, attribution=""))
    if shape is not None:
        layers.append(dl.GeoJSON(data={"type": "Feature", "properties": {"code": code}, "geometry": mapping(shape)},
                                 style={"color": "#1565c0", "weight": 2, "fillColor": "#90caf9", "fillOpacity": 0.25},
                                 interactive=False))
    grade = city.grades.get(c["grade"])
    layers.append(dl.CircleMarker(center=[c["lat"], c["lon"]], radius=9, className=ID.pin, id=ID.pin,
                                  color="#fff", weight=3, fillColor=grade.color if grade else "#64748b",
                                  fillOpacity=1, children=dl.Tooltip(c["title"])))
    x0, y0, x1, y1 = shape.bounds if shape is not None else (c["lon"], c["lat"], c["lon"], c["lat"])
    pad = 0.0008
    bounds = [[min(y0, c["lat"]) - pad, min(x0, c["lon"]) - pad], [max(y1, c["lat"]) + pad, max(x1, c["lon"]) + pad]]
    note = None if shape is not None else html.Div(f.t["case_outside"], className="case-note")
    return html.Div([
        dl.MapContainer(layers, id=ID.map, bounds=bounds, zoomControl=True, attributionControl=False,
                        scrollWheelZoom=False, trackViewport=False, className="case-leaflet", style={"width": "100%", "height": "100%"}),
        note,
    ], className="case-mapbox")


def _stage_result(f: _Fmt, s: dict[str, Any]):
    t = f.t
    if s["deadline"] is None:
        return html.Span(t["case_running"] if s["running"] else t["case_no_limit"], className="case-muted")
    margin = s["margin_s"]
    if not s["running"]:
        text = t["case_spare" if s["met"] else "case_late_by"].format(d=f.duration(margin))
        return html.Span([_verdict(f, s["met"]), html.Span(text, className="case-margin")])
    if s["state"] == "suspended":
        return _badge(t["case_paused"], "warn")
    if s["state"] == "overdue":
        return html.Span([_badge(t["case_missed"], "bad"),
                          html.Span(t["case_over"].format(d=f.duration(margin)), className="case-margin")])
    kind = "warn" if s["state"] == "warning" else "run"
    word = t["case_near"] if s["state"] == "warning" else t["case_running"]
    return html.Span([_badge(word, kind), html.Span(t["case_left"].format(d=f.duration(margin)), className="case-margin")])


def _stages(f: _Fmt, view: dict[str, Any]) -> html.Table:
    t = f.t
    rows, classes = [], []
    for s in view["stages"]:
        start = f.action(s["from_action"]) if s["from_action"] == Action.REOPEN else f.status(s["from"])
        end = f.action(s["to_action"]) if s["to_action"] == Action.REOPEN else f.status(s["to"])
        name = f"{start} → {end}"
        rows.append([name, f.time(s["start"]), t["case_running"] if s["running"] else f.time(s["end"]),
                     f.duration(s["duration_s"]), f.duration(s["suspended_s"]) if s["suspended_s"] else "—",
                     f.time(s["deadline"]) if s["deadline"] else "—", _stage_result(f, s)])
        classes.append("case-stage" + (" case-row-running" if s["running"] else ""))
    for w in view["whistles"]:
        end = w["reported_at"]
        took = ((end or view["now"]) - w["whistled_at"]).total_seconds()
        margin = (w["due_at"] - (end or view["now"])).total_seconds()
        if w["status"] == "pending":
            result = html.Span([_badge(t["case_w_pending"], "run"),
                                html.Span(t["case_left"].format(d=f.duration(margin)), className="case-margin")])
        else:
            ok = w["status"] == "on_time"
            word = t["case_spare" if ok else ("case_late_by" if end else "case_over")].format(d=f.duration(margin))
            result = html.Span([_badge(t[f"case_w_{w['status']}"], "ok" if ok else "bad"),
                                html.Span(word, className="case-margin")])
        rows.append([t["case_whistle_stage"].format(dept=f.department(w["department"])), f.time(w["whistled_at"]),
                     f.time(end) if end else t["case_running"], f.duration(took), "—", f.time(w["due_at"]), result])
        classes.append("case-stage case-stage-whistle" + ("" if end else " case-row-running"))
    head = [t[k] for k in ("case_s_stage", "case_s_start", "case_s_end", "case_s_duration", "case_s_held",
                           "case_s_deadline", "case_s_result")]
    return _table(head, rows, classes, ID.stages)


def _timeline(f: _Fmt, view: dict[str, Any]) -> html.Ol:
    t = f.t
    items = []
    for e in view["events"]:
        detail = []
        if e["departments"]:
            detail.append(html.Span(f.departments(e["departments"]), className="case-ev-depts"))
        if e["actor"]:
            detail.append(html.Span(f"{t['case_t_actor']}：{e['actor']}" if f.lang == "zh"
                                    else f"{t['case_t_actor']}: {e['actor']}", className="case-ev-actor"))
        if e["rating"] is not None:
            detail.append(html.Span(f"{t['case_t_rating']} {e['rating']}/5", className="case-ev-rating"))
        if e["due_at"] is not None and e["action"] != Action.REPORT:
            detail.append(html.Span(f"{t['case_t_due']} {f.time(e['due_at'])}", className="case-ev-due"))
        status = ""
        if e["status_before"] != e["status_after"]:
            status = f"{f.status(e['status_before'])} → {f.status(e['status_after'])}" if e["status_before"] \
                else f.status(e["status_after"])
        items.append(html.Li([
            html.Span(f.time(e["occurred_at"]), className="case-ev-time"),
            html.Span(f.action(e["action"]), className=f"case-ev-action case-act-{e['action']}"),
            html.Span(status, className="case-ev-status"),
            html.Div(detail, className="case-ev-detail"),
            html.Div(e["note"], className="case-ev-note") if e["note"] else None,
        ], className="case-ev"))
    return html.Ol(items, id=ID.timeline, className="case-timeline")


def _departments(f: _Fmt, view: dict[str, Any]):
    t = f.t
    if not view["departments"]:
        return html.P(t["case_nothing"], className="case-muted")
    rows = []
    for d in view["departments"]:
        lead = d["role"] == "lead"
        accepted = (html.Span([f.time(d["accepted_at"]), " ", _verdict(f, d["accepted_on_time"])])
                    if d["accepted_at"] else "—") if lead else "—"
        resolved = (html.Span([f.time(d["resolved_at"]), " ", _verdict(f, d["resolved_on_time"])])
                    if d["resolved_at"] else (t["case_ended"] if d["ended_at"] and not d["returned_at"] else "—")) \
            if lead else "—"
        if lead:
            checkin = "—"
        else:
            st = d["checkin_status"]
            word = t[f"case_w_{st}"] if st else "—"
            badge = _badge(word, {"on_time": "ok", "pending": "run"}.get(st, "bad")) if st else "—"
            checkin = html.Span([f.time(d["checked_in_at"]) + " " if d["checked_in_at"] else "", badge])
        rows.append([f.department(d["department"]), t["case_role_lead" if lead else "case_role_whistle"],
                     f.time(d["assigned_at"]), f.time(d["due_at"]), accepted, resolved,
                     f.time(d["returned_at"]) if d["returned_at"] else "—", checkin,
                     f"{d['rating']}/5" if d["rating"] is not None else "—"])
    head = [t[k] for k in ("case_d_department", "case_d_role", "case_d_assigned", "case_d_due", "case_d_accepted",
                           "case_d_resolved", "case_d_returned", "case_d_checkin", "case_d_rating")]
    return _table(head, rows, table_id=ID.departments)


def _whistles(f: _Fmt, view: dict[str, Any]):
    t = f.t
    note = html.P(t["case_w_limit"].format(d=f.duration(view["whistle_limit_s"])), className="case-muted")
    if not view["whistles"]:
        return html.P(t["case_nothing"], className="case-muted")
    rows = []
    for w in view["whistles"]:
        st = w["status"]
        rows.append([f.department(w["department"]), f.time(w["whistled_at"]), f.time(w["due_at"]),
                     f.time(w["reported_at"]), _badge(t[f"case_w_{st}"], {"on_time": "ok", "pending": "run"}.get(st, "bad"))])
    head = [t[k] for k in ("case_d_department", "case_w_whistled", "case_w_due", "case_w_reported", "case_w_status")]
    return html.Div([note, _table(head, rows, table_id=ID.whistles)])


def _extensions(f: _Fmt, view: dict[str, Any]):
    t = f.t
    if not view["extensions"]:
        return html.P(t["case_nothing"], className="case-muted")
    rows = [[f.time(x["at"]), f.time(x["old_due"]), f.time(x["new_due"]), x["actor"] or "—", x["note"] or "—"]
            for x in view["extensions"]]
    head = [t[k] for k in ("case_e_at", "case_e_old", "case_e_new", "case_e_actor", "case_e_note")]
    return _table(head, rows, table_id=ID.extensions)


def _suspensions(f: _Fmt, view: dict[str, Any]):
    t = f.t
    if not view["suspensions"]:
        return html.P(t["case_nothing"], className="case-muted")
    rows = [[f.time(s["start"]), f.time(s["end"]) if s["end"] else _badge(t["case_suspended"], "warn"),
             f.duration(s["held_s"]), s["actor"] or "—", s["note"] or "—"] for s in view["suspensions"]]
    head = [t[k] for k in ("case_h_start", "case_h_end", "case_h_held", "case_h_actor", "case_h_note")]
    return _table(head, rows, table_id=ID.suspensions)


def _evaluation(f: _Fmt, view: dict[str, Any]):
    t = f.t
    ev = view["evaluation"]
    if ev is None:
        return html.P(t["case_v_none"], className="case-muted", id=ID.evaluation)
    rating = ev["rating"]
    stars = html.Span(["★" * rating, html.Span("★" * (5 - rating), className="case-star-off")], className="case-stars") \
        if rating is not None else "—"
    verdict = _verdict(f, ev["satisfied"], t["case_v_satisfied"], t["case_v_unsatisfied"])
    return html.Dl([
        html.Dt(t["case_v_rating"]), html.Dd([stars, f" {rating}/5 " if rating is not None else " ", verdict]),
        html.Dt(t["case_v_comment"]), html.Dd(ev["note"] or "—"),
        html.Dt(t["case_v_at"]), html.Dd(f.time(ev["at"])),
    ], className="case-fields case-eval", id=ID.evaluation)


def _acting(f: _Fmt, view: dict[str, Any], role: str | None) -> html.Section | None:
    """在线督办: where 智能分拨 routed the case, the newest 督办 with its 批示, and the actions the role may take now."""
    t, c = f.t, view["case"]
    lines: list = []
    auto = view.get("auto_route")
    if auto is not None:
        said = t["act_rule"].format(rule=auto["rule"]) if auto["rule"] else (auto["note"] or "—")
        where = "" if auto["unrouted"] else f"→ {f.departments(auto['departments'])} · "
        if auto.get("summoned"):
            where += f"{t['act_summoned']} {f.departments(auto['summoned'])} · "
        lines.append(html.Div([_badge(t["act_auto"], "warn" if auto["unrouted"] else "run"),
                               html.Span(said, className="case-auto-note"),
                               html.Span(where + f.time(auto["at"]), className="case-muted")],
                              id=ID.auto, className="case-act-line"))
    if c.get("supervised_at") is not None:
        due = c.get("supervise_due_at")
        lines.append(html.Div([
            _badge(f.action(Action.SUPERVISE), "bad"),
            html.Span(f"{t['act_supervised']}：{c.get('supervise_note') or '—'}" if f.lang == "zh"
                      else f"{t['act_supervised']}: {c.get('supervise_note') or '—'}", className="case-sup-note"),
            html.Span(f"{t['act_supervised_at']} {f.time(c['supervised_at'])}", className="case-muted"),
            html.Span(f"{t['act_supervised_due']} {f.time(due)}", className="case-sup-due") if due else None,
        ], id=ID.supervised, className="case-act-line"))
    held = c.get("suspended_at") is not None  # 挂起 while running, 恢复 while held
    may = [a for a in allowed_for(role, c["status"]) if a != (Action.SUSPEND if held else Action.RESUME)]
    if role is not None and any(may_act(role, a) for a in Action):
        buttons = components.action_buttons(may, c["id"], f.lang, ID.button) or [
            html.Span(t["act_none"], className="case-muted")]
        lines.append(html.Div(buttons, className="case-act-buttons"))
    if not lines:
        return None
    return html.Section([html.H2(t["act_heading"]), *lines], id=ID.acting, className="case-section case-acting")


def _live(f: _Fmt, city, view: dict[str, Any], role: str | None) -> list:
    return [_header(f, city, view), _acting(f, view, role)]


def _detail(f: _Fmt, settings, city, view: dict[str, Any]) -> list:
    t = f.t
    return [
        html.Div([
            _section(t["case_fields"], _fields(f, city, view), cls="case-fields-section"),
            _section(t["case_map"], _map(f, settings, city, view), cls="case-map-section"),
        ], className="case-row"),
        _section(t["case_stages"], _stages(f, view)),
        _section(t["case_departments"], _departments(f, view)),
        html.Div([
            _section(t["case_timeline"], _timeline(f, view), cls="case-timeline-section"),
            html.Div([
                _section(t["case_whistles"], _whistles(f, view)),
                _section(t["case_extensions"], _extensions(f, view)),
                _section(t["case_suspensions"], _suspensions(f, view)),
                _section(t["case_evaluation"], _evaluation(f, view)),
            ], className="case-side"),
        ], className="case-row case-row-lower"),
    ]


def render(view: dict[str, Any], settings, city, lang: str, role: str | None = None) -> html.Div:
    """The page for one case's view model (dashboard/casepage.py), with the actions ``role`` may take."""
    f = _Fmt(city, lang)
    t = f.t
    c = view["case"]
    case_id = str(c["id"])
    acts = role is not None and any(may_act(role, a) for a in Action)
    return html.Div([
        dcc.Store(id=ID.case, data=c["id"]), dcc.Store(id=ID.lang, data=lang),
        dcc.Store(id=ID.version, data=casepage.version(view)), dcc.Store(id=ID.done, data=0),
        dcc.Interval(id=ID.tick, interval=TICK_MS),
        _top(t, _crumbs(f, city.geography, c), _lang_href(case_id, lang)),
        html.Div(_live(f, city, view, role), id=ID.live),
        components.action_form(FORM, city, t) if acts else None,
        html.Div(_detail(f, settings, city, view), id=ID.detail),
    ], id=ID.page, className="case-page", lang="zh-CN" if lang == "zh" else "en", **{"data-case": case_id})


def layout(settings, city, case_id: str, query: dict[str, str]) -> html.Div:
    """The page for ``/case/<case_id>`` with its query parameters (``lang``); a message for a bad or unknown id."""
    lang = i18n.lang_of(query.get("lang"))
    t = i18n.texts(lang)
    raw = case_id if isinstance(case_id, str) else str(case_id or "")
    shown = raw[:40] + ("…" if len(raw) > 40 else "")
    number = case_id_of(raw)
    if number is None:
        return _message(t, lang, t["case_bad_id"].format(value=shown), t["case_bad_id_hint"], "")
    try:
        view = casepage.page_view(number, personal=auth.personal())
    except Exception:  # the store is away: say so on the page, keep the traceback in the log
        log.exception("case page: reading case %s failed", number)
        return _message(t, lang, t["case_unavailable"], "", str(number))
    if view is None or not auth.in_scope(view["case"]["grid_code"]):  # outside the jurisdiction: as if absent
        return _message(t, lang, t["case_not_found"].format(id=number), t["case_not_found_hint"], str(number))
    auth.audit("case_view", str(number), {"via": "page"})
    v = auth.viewer()
    return render(view, settings, city, lang, v.role if v is not None else None)


# --------------------------------------------------------------------------- callbacks: acting, and drawing again


def skeleton(city) -> html.Div:
    """The page's controls, for the app's validation layout (the page itself is drawn per case)."""
    t = i18n.texts(i18n.DEFAULT_LANG)
    return html.Div([dcc.Store(id=ID.case), dcc.Store(id=ID.lang), dcc.Store(id=ID.version), dcc.Store(id=ID.done),
                     dcc.Interval(id=ID.tick), html.Div(id=ID.live), html.Div(id=ID.detail),
                     html.Button(id={"type": ID.button, "case": 0, "action": "note"}),
                     components.action_form(FORM, city, t)])


def open_form(clicks, lang) -> tuple:
    """A button pressed: its action's form, with a fresh request id."""
    trig = ctx.triggered_id
    if not isinstance(trig, dict) or not components.pressed(clicks):
        raise PreventUpdate  # buttons drawn again, not pressed
    lang = i18n.lang_of(lang)
    try:
        return components.form_for(trig.get("action"), trig.get("case"), i18n.texts(lang), lang)
    except (ValueError, TypeError):
        raise PreventUpdate from None


def submit(_n, choice, departments, note, due, lang, done) -> tuple:
    """确定: the action taken as the viewer of this request; the answer shown, the case drawn again."""
    if not _n:
        raise PreventUpdate
    lang = i18n.lang_of(lang)
    shown, ok = components.act(choice, departments, note, due, i18n.texts(lang), lang)
    return shown, components.HIDE if ok else components.SHOW, components.count_of(done) + (1 if ok else 0)


def redraw(_done, _tick, case_id, lang, version) -> tuple:
    """The header, actions and details drawn again when the case changed since the page last drew it."""
    if not isinstance(case_id, int) or isinstance(case_id, bool):
        raise PreventUpdate
    view = casepage.page_view(case_id, personal=auth.personal())
    if view is None or not auth.in_scope(view["case"]["grid_code"]):
        raise PreventUpdate
    now = casepage.version(view)
    if now == version and ctx.triggered_id != ID.done:
        raise PreventUpdate
    f = _Fmt(context.city(), i18n.lang_of(lang))
    v = auth.viewer()
    return _live(f, f.city, view, v.role if v else None), _detail(f, context.settings(), f.city, view), now


def register(app) -> None:
    app.callback(Output(FORM.choice, "data"), Output(FORM.form, "style"), Output(FORM.title, "children"),
                 Output(FORM.depts_row, "style"), Output(FORM.note_row, "style"), Output(FORM.due_row, "style"),
                 Output(FORM.note_label, "children"), Output(FORM.note, "placeholder"), Output(FORM.depts, "value"),
                 Output(FORM.note, "value"), Output(FORM.due, "value"), Output(FORM.result, "children"),
                 Input({"type": ID.button, "case": ALL, "action": ALL}, "n_clicks"), State(ID.lang, "data"),
                 prevent_initial_call=True)(open_form)
    app.callback(Output(FORM.form, "style", allow_duplicate=True), Input(FORM.cancel, "n_clicks"),
                 prevent_initial_call=True)(lambda n: components.HIDE if n else components.SHOW)
    app.callback(Output(FORM.result, "children", allow_duplicate=True),
                 Output(FORM.form, "style", allow_duplicate=True), Output(ID.done, "data"),
                 Input(FORM.submit, "n_clicks"), State(FORM.choice, "data"), State(FORM.depts, "value"),
                 State(FORM.note, "value"), State(FORM.due, "value"), State(ID.lang, "data"), State(ID.done, "data"),
                 prevent_initial_call=True)(submit)
    app.callback(Output(ID.live, "children"), Output(ID.detail, "children"), Output(ID.version, "data"),
                 Input(ID.done, "data"), Input(ID.tick, "n_intervals"), State(ID.case, "data"),
                 State(ID.lang, "data"), State(ID.version, "data"), prevent_initial_call=True)(redraw)
