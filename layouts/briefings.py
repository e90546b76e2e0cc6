"""Briefings (``/briefings``): the archive of daily, weekly and monthly briefings with their downloads, and a form
that generates one on demand (dashboard.briefing_jobs) while the page shows how far it got.

    /briefings[?lang=en]                      the page (drawn on the server; the form and the progress are callbacks)
    /briefings/files/<kind>/<file name>       one archived file, as an attachment (404 for any other name)

A bad request says what to fix, a briefing being written already says so, a failure says why: never a traceback.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from dash import Input, Output, State, clientside_callback, dcc, html, no_update
from dash.exceptions import PreventUpdate
from flask import Blueprint, Response, request, send_file

from core.records import CITY_TZ
from dashboard import auth, briefing, briefing_jobs, context, i18n
from layouts import components as page

log = logging.getLogger(__name__)

FILES = "/briefings/files"  # the download route: FILES/<kind>/<file name>
POLL_MS = 700


class ID:
    """Component ids of this page (prefix ``br-``)."""

    lang = "br-lang"
    date = "br-date"
    kind = "br-kind"
    area = "br-area"
    go = "br-go"
    job = "br-job"
    poll = "br-poll"
    status = "br-status"
    archive = "br-archive"


def title(lang: str | None = None) -> str:
    return i18n.texts(lang)["br_title"]


def file_url(kind: str, name: str) -> str:
    return f"{FILES}/{kind}/{name}"


# --------------------------------------------------------------------------- drawing


def _mine(entries):
    """The archived briefings of areas within the viewer's jurisdiction."""
    return [e for e in entries if auth.in_scope(e.area)]


def _area_name(geo, code: str) -> str:
    a = geo.get(code)
    return a.name if a is not None else code


def _size(n: int) -> str:
    return f"{n / 1024:.0f} KB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.1f} MB"


def _links(kind: str, files: dict[str, tuple[str, int | None]]) -> list:
    return [html.A([f.upper(), html.Span(_size(size), className="br-size") if size is not None else None],
                   href=file_url(kind, name), className=f"br-file br-{f}", **{"data-format": f})
            for f, (name, size) in files.items()]


def _period(kind: str, label: str, t: dict[str, str]) -> list:
    """The period's label, and for a week its days."""
    p = briefing.labelled(kind, label) if kind == "week" else None
    if p is None:
        return [label]
    a, b = p.since.astimezone(CITY_TZ), p.until.astimezone(CITY_TZ) - timedelta(seconds=1)
    return [label, html.Span(t["br_week_days"].format(a=f"{a:%m-%d}", b=f"{b:%m-%d}"), className="br-days")]


def archive_view(rows: list[briefing.Archived], geo, t: dict[str, str]) -> list:
    """The archive as a table, newest first, with the downloads."""
    if not rows:
        return [html.Div(t["br_empty"], className="dr-empty")]
    count = t["br_count_max" if len(rows) >= briefing.LISTED else "br_count"].format(n=len(rows))
    head = html.Tr([html.Th(t[k]) for k in ("br_col_kind", "br_col_period", "br_col_area", "br_col_generated",
                                            "br_col_files")])
    body = [html.Tr([
        html.Td(html.Span(t[f"br_kind_{a.kind}"], className=f"br-kind br-kind-{a.kind}")),
        html.Td(_period(a.kind, a.label, t), className="br-label"),
        html.Td(_area_name(geo, a.area), title=a.area),
        html.Td(a.generated_at.astimezone(CITY_TZ).strftime("%Y-%m-%d %H:%M"), className="br-time"),
        html.Td(_links(a.kind, a.files), className="br-files"),
    ], **{"data-kind": a.kind, "data-label": a.label, "data-area": a.area}) for a in rows]
    return [html.Div(count, className="br-count"),
            html.Table([html.Thead(head), html.Tbody(body)], className="dr-list br-table")]


def status_view(state: dict[str, str] | None, geo, t: dict[str, str]) -> html.Div:
    """A job's progress (a bar and the step), its downloads when done, or what went wrong."""
    if state is None:
        return html.Div(t["br_lost"], className="br-note br-lost", **{"data-state": "lost"})
    s = state.get("state", "")
    if s in ("queued", "running"):
        share = float(state.get("share") or 0)
        return html.Div([
            html.Div(html.I(style={"width": f"{max(share, 0.03) * 100:.0f}%"}), className="br-bar"),
            html.Div(t.get(f"br_step_{state.get('step')}", state.get("step", "")), className="br-step"),
        ], className="br-progress", **{"data-state": s, "data-step": state.get("step", "")})
    if s == "done":
        names = [n for n in (state.get("files") or "").split(",") if n]
        found = {p.fmt: (n, None) for n in names if (p := briefing.parse_name(n)) is not None}
        first = briefing.parse_name(names[0]) if names else None
        made = t["br_made"].format(area=_area_name(geo, first.area), kind=t[f"br_kind_{first.kind}"],
                                   label=first.label) if first else ""
        return html.Div([
            html.Div([html.Div(html.I(style={"width": "100%"}), className="br-bar br-bar-done"),
                      html.Div(t["br_step_done"], className="br-step")], className="br-progress"),
            html.Div(made, className="br-made"),
            html.Div(_links(first.kind, found) if first else [], className="br-files"),
        ], className="br-done", **{"data-state": "done"})
    if s == "busy":
        return html.Div(t["br_busy"], className="br-note br-busy", **{"data-state": "busy"})
    reason = state.get("reason", "error")
    if reason == "stopped":
        return html.Div(t["br_stopped"], className="br-note br-lost", **{"data-state": "failed",
                                                                            "data-reason": reason})
    head = {"input": t["br_bad_input"], "font": t["br_no_font"]}.get(reason, t["br_failed"])
    return html.Div([html.Strong(head), html.Div(state.get("message", ""), className="dr-detail")],
                    className="dr-message br-error", **{"data-state": "failed", "data-reason": reason})


def layout(settings, city, query: dict[str, str]) -> html.Div:
    lang = i18n.lang_of(query.get("lang"))
    t = i18n.texts(lang)
    geo = city.geography
    en = "?lang=en" if lang == "en" else ""
    yesterday = (datetime.now(CITY_TZ).date() - timedelta(days=1)).isoformat()
    header = html.Header([
        html.H1(f"{geo.district.name} · {t['br_title']}"),
        html.Nav([
            dcc.Link(t["br_back"], href="/" + en, className="dr-link"),
            html.A(t["switch"], href="?lang=" + ("zh" if lang == "en" else "en"), className="dr-link"),
        ], className="dr-nav"),
    ], className="dr-header")
    make = html.Section([
        html.H3(t["br_make"]),
        html.Div([html.Label(t["br_date"], htmlFor=ID.date),
                  dcc.DatePickerSingle(id=ID.date, date=yesterday, display_format="YYYY-MM-DD", first_day_of_week=1,
                                       clearable=False, className="dr-dates")], className="dr-filter"),
        html.Div([html.Label(t["br_period"]),
                  dcc.RadioItems([{"label": t[f"br_kind_{k}"], "value": k} for k in briefing.KINDS], "day",
                                 id=ID.kind, inline=True, className="dr-range")], className="dr-filter"),
        html.Div([html.Label(t["br_area"]),
                  dcc.Dropdown(page.area_options(geo), auth.scope() or geo.district.code, id=ID.area, clearable=False,
                               className="dr-dd dr-dd-wide")], className="dr-filter"),
        html.Button(t["br_go"], id=ID.go, n_clicks=0, className="dr-button br-go"),
        html.P(t["br_hint"], className="dr-note"),
        html.Div(id=ID.status, className="br-status"),
    ], className="dr-panel br-make")
    archive = html.Section([
        html.H3(t["br_archive"]),
        html.Div(archive_view(_mine(briefing.archived(settings)), geo, t), id=ID.archive),
    ], className="dr-panel br-archive")
    return html.Div([
        dcc.Store(id=ID.lang, data=lang), dcc.Store(id=ID.job), dcc.Interval(id=ID.poll, interval=POLL_MS,
                                                                              disabled=True),
        header, html.Div([make, archive], className="br-body"),
    ], className="dr br", lang="zh-CN" if lang == "zh" else "en")


def skeleton() -> html.Div:
    """The components the callbacks use, for the app's validation layout (nothing is read)."""
    return html.Div([dcc.Store(id=ID.lang), dcc.Store(id=ID.job), dcc.Interval(id=ID.poll),
                     dcc.DatePickerSingle(id=ID.date), dcc.RadioItems([], id=ID.kind), dcc.Dropdown([], id=ID.area),
                     html.Button(id=ID.go), html.Div(id=ID.status), html.Div(id=ID.archive)])


# --------------------------------------------------------------------------- callbacks and the download route


def register(app) -> None:
    clientside_callback(  # at once in the browser, so a double click starts one job
        "function(n) { return true; }", Output(ID.go, "disabled"), Input(ID.go, "n_clicks"), prevent_initial_call=True)

    @app.callback(Output(ID.job, "data"), Output(ID.poll, "disabled"), Output(ID.status, "children"),
                  Output(ID.go, "disabled", allow_duplicate=True),
                  Input(ID.go, "n_clicks"), State(ID.date, "date"), State(ID.kind, "value"), State(ID.area, "value"),
                  State(ID.lang, "data"), prevent_initial_call=True)
    def generate(_n, day, kind, area, lang):
        """Start a job for the form's choice and follow it."""
        t = i18n.texts(lang)
        if area is not None and not isinstance(area, str) or not isinstance(kind, str):
            raise PreventUpdate  # not what the form's dropdowns send
        if area and not auth.in_scope(area):  # the dropdown offers none, but a request can name any
            return None, True, status_view({"state": "failed", "reason": "input",
                                            "message": f"area: {str(area)[:32]} is outside your jurisdiction"},
                                           None, t), False
        area = area or auth.scope()
        auth.audit("briefing_generate", f"{kind} {day} {area}")
        try:
            job = briefing_jobs.start(kind, day, area)
        except Exception as exc:  # noqa: BLE001 - Redis or SQL away: logged, and said on the page
            log.exception("briefings page: a job could not be started")
            return None, True, status_view({"state": "failed", "reason": "error",
                                            "message": f"{type(exc).__name__}: {exc}"}, None, t), False
        return job, False, status_view({"state": "queued", "step": "queued"}, None, t), True

    @app.callback(Output(ID.status, "children", allow_duplicate=True), Output(ID.poll, "disabled", allow_duplicate=True),
                  Output(ID.go, "disabled", allow_duplicate=True), Output(ID.archive, "children"),
                  Input(ID.poll, "n_intervals"), State(ID.job, "data"), State(ID.lang, "data"),
                  prevent_initial_call=True)
    def follow(_n, job, lang):
        """The job's progress; when it ends, its downloads or what went wrong, and the archive again."""
        t = i18n.texts(lang)
        settings = context.settings()
        geo = context.city().geography
        try:
            state = briefing_jobs.state(job)
        except Exception as exc:  # noqa: BLE001 - Redis away for a moment: keep polling
            log.warning("briefings page: reading job %s: %s", job, exc)
            return no_update, False, True, no_update
        if state is not None and state.get("state") not in briefing_jobs.FINISHED:
            return status_view(state, geo, t), False, True, no_update
        return status_view(state, geo, t), True, False, archive_view(_mine(briefing.archived(settings)), geo, t)


def blueprint() -> Blueprint:
    """The download route: FILES/<kind>/<file name> serves an archived briefing file as an attachment — only a name
    dashboard.briefing.parse_name accepts as a briefing of that kind, from that kind's folder. Every other path
    under FILES gets 404 here (a route's converters would let odd ones, such as a doubled slash, fall through to
    the pages)."""
    bp = Blueprint("briefings", __name__)

    @bp.before_app_request
    def download():
        path = request.path
        if path != FILES and not path.startswith(FILES + "/"):
            return None
        kind, _, name = path[len(FILES) + 1:].partition("/")
        found = briefing_jobs.download(kind, name)
        if found is not None:
            auth.audit("export", f"briefing {name}")
        if found is None:
            return Response("404 not found: no archived briefing by that name; the archive is listed at /briefings\n",
                            status=404, mimetype="text/plain")
        return send_file(found.absolute(), mimetype=briefing.MIMETYPES[name.rpartition(".")[2]], as_attachment=True,
                         download_name=name, max_age=0)

    return bp
