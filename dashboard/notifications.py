"""The notifications' delivery log, for admins and dispatchers: ``GET /api/v1/notifications`` (JSON) and the page
``/notifications`` (drawn on the server, no script). Each reads only the messages of the viewer's jurisdiction; the
log holds no secret (targets and errors are masked when written, ingest/notify.py), so nothing is hidden here.

The page's texts are here (zh default, ``?lang=en`` English), apart from dashboard/i18n.py's pages.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request
from markupsafe import escape

from config.notify import NotifyConfigError, load_notify
from core.notify import REASON_LABELS, Reason
from core.records import CITY_TZ
from dashboard import context, i18n, params, viewers
from dashboard.api import json_response
from dashboard.params import ApiError
from store import notify as store

KIND = "notifications"  # core.access.ALLOWED: admin and dispatcher
PARAMS = ("delivery", "channel", "limit", "before")
MAX_BEFORE = 2**63 - 1

TEXTS = {
    "zh": {"title": "通知记录", "channels": "渠道状态", "ok": "正常", "failing": "故障", "none": "暂无通知",
           "at": "时间", "reason": "原因", "channel": "渠道", "target": "目标", "subject": "主题", "status": "状态",
           "attempts": "尝试", "error": "最后错误", "sent": "发送时间", "all": "全部", "older": "更早的记录",
           "queued": "待发送", "sent_s": "已发送", "failed": "发送失败", "folded": "已汇总", "summary": "汇总",
           "switch": "English", "forbidden": "无权查看通知记录（仅管理员和调度员）", "failures": "连续失败",
           "waiting": "尚未发送", "disabled": "未配置（设置其环境变量并重启通知进程，见 config/notify.yaml）",
           "no_channels": "未配置任何渠道：在 config/notify.yaml 中添加渠道"},
    "en": {"title": "Notifications", "channels": "Channels", "ok": "ok", "failing": "failing", "none": "No notifications",
           "at": "Created", "reason": "Reason", "channel": "Channel", "target": "Target", "subject": "Subject",
           "status": "Status", "attempts": "Tries", "error": "Last error", "sent": "Sent", "all": "All",
           "older": "Older", "queued": "queued", "sent_s": "sent", "failed": "failed", "folded": "folded",
           "summary": "Summary", "switch": "中文", "forbidden": "Notifications are for admins and dispatchers only",
           "failures": "failures in a row", "waiting": "nothing sent yet",
           "disabled": "not configured (set its environment variable and restart the notify job; see "
                       "config/notify.yaml)", "no_channels": "no channel configured: add one to config/notify.yaml"},
}
STATUS_TEXT = {"queued": "queued", "sent": "sent_s", "failed": "failed", "folded": "folded"}


def _filters(p: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"limit": params.limit(p.get("limit"))}
    if "delivery" in p:
        if p["delivery"] not in store.STATUSES:
            raise ApiError(400, f"delivery: {p['delivery'][:40]!r} is not a status; use one of "
                                f"{', '.join(store.STATUSES)}", "delivery")
        out["status"] = p["delivery"]
    if "channel" in p:
        if len(p["channel"]) > 100:
            raise ApiError(400, "channel: longer than any channel name (100 characters)", "channel")
        out["channel"] = p["channel"]
    if "before" in p:
        if not p["before"].isascii() or not p["before"].isdigit() or not 1 <= int(p["before"]) <= MAX_BEFORE:
            raise ApiError(400, f"before: {p['before'][:40]!r} is not a message id (a whole number from 1)", "before")
        out["before"] = int(p["before"])
    return out


def log_page(p: dict[str, str]) -> dict[str, Any]:
    """The newest messages of the viewer's jurisdiction, filtered, with the id to pass as ``before`` for older ones."""
    f = _filters(p)
    scope = viewers.scope() or context.city().geography.district.code
    items = store.read_log(context.engine(), scope, **f)
    return {"items": items, "next_before": items[-1]["id"] if len(items) == f["limit"] else None}


def channels() -> dict[str, dict[str, Any]]:
    """Each configured channel's state: its delivery health, "waiting" (nothing sent yet) or "disabled" (its URL's
    variable is unset, so the job leaves it out)."""
    health = store.channel_status(context.redis_client(), context.settings().stream_prefix)
    try:
        config = load_notify(context.city(), context.settings())
    except NotifyConfigError:
        return health
    out = {c.name: health.get(c.name, {"waiting": True}) for c in config.channels}
    out.update({name: {"disabled": True} for name in config.disabled})
    return {**health, **out}


def _channel_item(name: str, s: dict[str, Any], t: dict[str, str]) -> str:
    if s.get("disabled") or s.get("waiting"):
        return f'<li><b>{escape(name)}</b> <span class="idle">{escape(t["disabled" if s.get("disabled") else "waiting"])}</span></li>'
    state = f'<span class="{"good" if s.get("ok") else "bad"}">{escape(t["ok"] if s.get("ok") else t["failing"])}</span>'
    detail = "" if s.get("ok") else f' ({s.get("failures", 1)} {escape(t["failures"])}: {escape(s.get("error") or "")})'
    return f"<li><b>{escape(name)}</b> {state}{detail}</li>"


def _row(n: dict[str, Any], t: dict[str, str], lang: str) -> str:
    reason = REASON_LABELS.get(Reason(n["reason"])) if n["reason"] in Reason._value2member_map_ else None
    reason_text = i18n.pick(reason, lang) if reason else t["summary"]
    subject = escape(n["subject"])
    if n["case_id"]:
        subject = f'<a href="/case/{int(n["case_id"])}">{subject}</a>'
    cells = [n["created_at"].astimezone(CITY_TZ).strftime("%m-%d %H:%M:%S"), escape(reason_text),
             escape(n["channel"]), escape(n["target"]), subject,
             f'<span class="st st-{escape(n["status"])}">{escape(t[STATUS_TEXT[n["status"]]])}</span>',
             str(n["attempts"]), escape(n["last_error"] or ""),
             n["sent_at"].astimezone(CITY_TZ).strftime("%m-%d %H:%M:%S") if n["sent_at"] else ""]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


STYLE = """body{font-family:"Noto Sans CJK SC","Source Han Sans SC",sans-serif;margin:24px;color:#0f172a;background:#f8fafc}
h1{font-size:22px;color:#0b3a75}table{border-collapse:collapse;width:100%;background:#fff;font-size:13px}
td,th{border:1px solid #e2e8f0;padding:5px 7px;text-align:left;vertical-align:top}th{background:#f1f5f9}
.st-sent{color:#15803d}.st-failed{color:#b91c1c;font-weight:bold}.st-queued{color:#92400e}.st-folded{color:#64748b}
.bad{color:#b91c1c}.good{color:#15803d}.idle{color:#64748b}nav a{margin-right:12px}a{color:#1d4ed8}"""


def page_html(lang: str, p: dict[str, str]) -> str:
    t = TEXTS[lang]
    data, health = log_page(p), channels()
    suffix = "&lang=en" if lang == "en" else ""
    health_items = "".join(_channel_item(name, s, t) for name, s in health.items()) or f'<li>{escape(t["no_channels"])}</li>'

    nav = "".join(f'<a href="/notifications?delivery={s}{suffix}">{escape(t[STATUS_TEXT[s]])}</a>'
                  for s in store.STATUSES)
    rows = "".join(_row(n, t, lang) for n in data["items"])
    head = "".join(f"<th>{escape(t[k])}</th>" for k in ("at", "reason", "channel", "target", "subject", "status",
                                                       "attempts", "error", "sent"))
    older = (f'<p><a href="/notifications?before={data["next_before"]}{suffix}">{escape(t["older"])}</a></p>'
             if data["next_before"] else "")
    other = "en" if lang == "zh" else "zh"
    return f"""<!doctype html><html lang="{'zh-CN' if lang == 'zh' else 'en'}"><head><meta charset="utf-8">
<title>{escape(t["title"])} · Gridwatch</title><style>{STYLE}</style></head><body>
<h1>{escape(t["title"])}</h1><p><a href="/notifications?lang={other}">{escape(t["switch"])}</a></p>
<h2>{escape(t["channels"])}</h2><ul id="channels">{health_items}</ul>
<nav><a href="/notifications{'?lang=en' if lang == 'en' else ''}">{escape(t["all"])}</a>{nav}</nav>
{f'<table id="log"><tr>{head}</tr>{rows}</table>' if rows else f'<p>{escape(t["none"])}</p>'}{older}
</body></html>"""


def blueprint() -> Blueprint:
    bp = Blueprint("notifications", __name__)

    @bp.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        body = {"error": exc.message, **({"parameter": exc.parameter} if exc.parameter else {})}
        if request.path.startswith("/api/"):
            return json_response(body, exc.status)
        return Response(str(escape(exc.message)), status=exc.status, mimetype="text/plain")

    @bp.get("/api/v1/notifications")
    def notifications_api():
        if not viewers.may_see(KIND):
            raise ApiError(403, "the delivery log is for the admin and dispatcher roles")
        return json_response(log_page(params.query(PARAMS)))

    @bp.get("/notifications")
    def notifications_page():
        lang = i18n.lang_of(request.args.get("lang"))
        if not viewers.may_see(KIND):
            return Response(TEXTS[lang]["forbidden"], status=403, mimetype="text/plain")
        p = {k: v for k, v in request.args.items() if k != "lang"}
        return Response(page_html(lang, {k: p[k] for k in PARAMS if k in p}), mimetype="text/html")

    return bp
