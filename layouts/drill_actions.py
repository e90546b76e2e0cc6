"""在线督办 in the drill-down: the overdue list's rows and the case table's rows can be selected, and 督办 (with its
批示) or 催办 taken on every selected case at once (dashboard.actions.perform_many), each case answered apart. The
drill-down's roles (leader, dispatcher, admin) may both; the server checks each case anyway."""

from __future__ import annotations

import uuid
from typing import Any

from dash import ALL, Input, Output, State, ctx, dcc, html
from dash.exceptions import PreventUpdate

from core import access
from dashboard import actions, auth, i18n
from layouts import components

PICK = "drill-pick"  # pattern type of an overdue row's checkbox
GRID = "drill-grid"  # the case table (layouts/drill.py)
LANG = "drill-lang"
NOTE, SUPERVISE, REMIND = "drill-act-note", "drill-act-supervise", "drill-act-remind"
RESULT, COUNT = "drill-act-result", "drill-act-count"
SELECTION = {"mode": "multiRow", "checkboxes": True, "headerCheckbox": False, "enableClickSelection": False}
MAX_SELECTED = 200


def desk_link(t: dict[str, str], lang: str) -> list:
    """The link to the dispatcher's desk (/dispatch), for the roles that may open it."""
    v = auth.viewer()
    if v is None or not access.may_open(v.role, v.area, "dispatch"):
        return []
    return [html.A(t["dp_title"], href="/dispatch" + ("?lang=en" if lang == "en" else ""), className="dr-link",
                   id="drill-desk")]


def pick(case_id: int) -> dcc.Checklist:
    """An overdue row's checkbox."""
    return dcc.Checklist([{"label": "", "value": case_id}], [], id={"type": PICK, "case": case_id},
                         className="drill-pick", inline=True)


def bar(t: dict[str, str], lang: str) -> html.Div:
    """督办 / 催办 for the selected cases, with the 批示."""
    return html.Div([
        html.Span(t["act_selected"].format(n=0), id=COUNT, className="drill-act-count"),
        dcc.Input(id=NOTE, type="text", value="", maxLength=500, placeholder=t["act_bar_note_hint"],
                  className="drill-act-note"),
        html.Button(components.action_label("supervise", lang), id=SUPERVISE,
                    n_clicks=0, className="act-button act-supervise"),
        html.Button(components.action_label("remind", lang), id=REMIND,
                    n_clicks=0, className="act-button act-remind"),
        html.Div(id=RESULT, className="act-result"),
    ], className="drill-act-bar", id="drill-act-bar")


def selected(picks, rows) -> list[int]:
    """The selected case ids: the overdue list's ticks and the table's selected rows, each once, in order."""
    picks = picks if isinstance(picks, list) else []
    rows = rows if isinstance(rows, list) else []
    ids = [v for p in picks if isinstance(p, list) for v in p if isinstance(v, int) and not isinstance(v, bool)]
    ids += [r["id"] for r in rows if isinstance(r, dict) and isinstance(r.get("id"), int)
            and not isinstance(r["id"], bool)]
    return list(dict.fromkeys(ids))[:MAX_SELECTED]


def outcome_text(outcomes: dict[int, actions.Outcome], t: dict[str, str], lang: str = "zh") -> list:
    ok = [c for c, o in outcomes.items() if o.status in (200, 202)]
    bad = [(c, o) for c, o in outcomes.items() if o.status not in (200, 202)]
    lines: list[Any] = [html.Div(t["act_many_done"].format(ok=len(ok), bad=len(bad)),
                                 className="act-ok" if not bad else "act-bad")]
    if bad:
        lines.append(html.Ul([html.Li(t["act_many_reason"].format(id=c, error=actions.error_text(o.body, lang)
                                                                  or o.status))
                              for c, o in bad[:10]], className="act-many"))
    return lines


def take(_s, _r, picks, rows, note, lang) -> list:
    which = ctx.triggered_id
    if which not in (SUPERVISE, REMIND) or not (_s if which == SUPERVISE else _r):
        raise PreventUpdate
    lang = i18n.lang_of(lang)
    t = i18n.texts(lang)
    ids = selected(picks, rows)
    if not ids:
        return [html.Div(t["act_pick_none"], className="act-bad")]
    body: dict[str, Any] = {"action": "supervise" if which == SUPERVISE else "remind",
                            "request_id": uuid.uuid4().hex[:24]}
    if isinstance(note, str) and note.strip():
        body["note"] = note
    return outcome_text(actions.perform_many(auth.viewer(), ids, body), t, lang)


def count(picks, rows, lang) -> str:
    return i18n.texts(i18n.lang_of(lang))["act_selected"].format(n=len(selected(picks, rows)))


def register(app) -> None:
    app.callback(Output(RESULT, "children"), Input(SUPERVISE, "n_clicks"), Input(REMIND, "n_clicks"),
                 State({"type": PICK, "case": ALL}, "value"), State(GRID, "selectedRows"), State(NOTE, "value"),
                 State(LANG, "data"), prevent_initial_call=True)(take)
    app.callback(Output(COUNT, "children"), Input({"type": PICK, "case": ALL}, "value"),
                 Input(GRID, "selectedRows"), State(LANG, "data"), prevent_initial_call=True)(count)
