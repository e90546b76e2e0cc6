"""Notifications (alarms that reach people): which trigger goes to which channel, what the message says, when a
failed delivery is tried again, how many a channel takes per minute, and how secrets are kept out of sight.

Pure: the caller supplies the triggers (store/notify.py finds them), the rules and channels (config/notify.py reads
them) and the clock; ingest/notify.py delivers. A trigger is one reason about one case or area; its ``key`` is the
same every time the same thing is found again, so each reaches each channel once.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from urllib.parse import parse_qsl, unquote, urlsplit


class Reason(StrEnum):
    RED_RISK = "red_risk"  # a street or grid at risk level 红
    ALARM = "alarm"  # a new sensor alarm (threshold or device offline)
    OVERDUE = "overdue"  # SLA breach: the case became overdue (超期)
    ESCALATE = "escalate"  # 升级督办
    WHISTLE_MISSED = "whistle_missed"  # 报到 missed after a 吹哨
    SUPERVISE = "supervise"  # a 督办 order for departments
    UNROUTED = "unrouted"  # a case no routing rule could give a department (待分拨)
    FEED_SILENT = "feed_silent"  # a feed failing or quiet


REASON_LABELS = {
    Reason.RED_RISK: ("红色风险预警", "Red risk"),
    Reason.ALARM: ("传感器告警", "Sensor alarm"),
    Reason.OVERDUE: ("案件超期", "Case overdue"),
    Reason.ESCALATE: ("升级督办", "Escalated"),
    Reason.WHISTLE_MISSED: ("吹哨未报到", "Whistle check-in missed"),
    Reason.SUPERVISE: ("督办指令", "Supervision order"),
    Reason.UNROUTED: ("案件待分拨", "Case routed to nobody"),
    Reason.FEED_SILENT: ("数据源中断", "Feed silent"),
}

# The default message of each reason (subject, body); a rule may give its own with the same placeholders.
TEMPLATES: dict[Reason, tuple[str, str]] = {
    Reason.RED_RISK: ("【红色预警】{area_name}", "{area_name}（{area_code}）风险等级升至红色，请立即研判处置。\n查看：{link}"),
    Reason.ALARM: ("【传感器告警】{area_name} {detail}",
                   "{area_name}（{area_code}）{detail}，请核查现场。\n查看：{link}"),
    Reason.OVERDUE: ("【超期】案件 {case_id} {title}", "案件 {case_id}「{title}」已超过办理时限（{area_name}，"
                     "责任单位：{departments}）。\n查看：{link}"),
    Reason.ESCALATE: ("【升级督办】案件 {case_id} {title}", "案件 {case_id}「{title}」超期未办结，已升级督办（{area_name}，"
                      "责任单位：{departments}）。\n查看：{link}"),
    Reason.WHISTLE_MISSED: ("【报到超时】{departments} 未报到：案件 {case_id}",
                            "吹哨后 {departments} 未在时限（{deadline}）内报到：案件 {case_id}「{title}」，"
                            "{area_name}。\n查看：{link}"),
    Reason.SUPERVISE: ("【督办】案件 {case_id} {title}", "督办指令：{note}\n督办单位：{departments}；督办时限：{deadline}。\n"
                       "案件 {case_id}「{title}」，{area_name}。\n查看：{link}"),
    Reason.UNROUTED: ("【待分拨】案件 {case_id} {title}", "案件 {case_id}「{title}」（{area_name}）无匹配的分拨规则，"
                      "请调度员人工分拨。\n查看：{link}"),
    Reason.FEED_SILENT: ("【数据源中断】{detail}", "数据源 {detail} 已中断或长时间无数据，请检查接入。\n查看：{link}"),
}
FIELDS = ("reason", "reason_name", "case_id", "title", "area_code", "area_name", "departments", "deadline", "note",
          "detail", "link", "at")
SUMMARY = ("【汇总】另有 {n} 条通知", "另有 {n} 条通知因频率限制未逐条发送：{counts}。\n查看全部：{link}")


@dataclass(frozen=True)
class Trigger:
    """One reason about one case or area, as found; ``key`` names it for good (the de-duplication key)."""

    reason: Reason
    key: str
    at: datetime
    case_id: int | None = None
    title: str = ""
    area_code: str | None = None
    area_name: str = ""
    departments: tuple[str, ...] = ()
    deadline: datetime | None = None
    note: str = ""
    detail: str = ""


@dataclass(frozen=True)
class Channel:
    """Where messages go: an Apprise URL, with whom it reaches (an area, a role, a department) for rules to pick."""

    name: str
    url: str = field(repr=False)
    area: str | None = None  # an area code: reached by triggers within it (``@area``)
    role: str | None = None  # reached by ``role:NAME``
    department: str | None = None  # reached by triggers naming it (``@departments``)
    rate_per_minute: int = 20


@dataclass(frozen=True)
class Rule:
    """On ``reason``, for triggers within ``areas`` (code prefixes; none: anywhere) naming one of ``departments``
    (none: any), send to ``to``: channel names, ``role:NAME``, ``@area`` or ``@departments``."""

    name: str
    reason: Reason
    to: tuple[str, ...]
    areas: tuple[str, ...] = ()
    departments: frozenset[str] = frozenset()
    levels: frozenset[str] = frozenset()  # red_risk only: street, grid …; none: any level
    subject: str | None = None
    body: str | None = None


def applies(rule: Rule, t: Trigger, level: str | None = None) -> bool:
    """Whether ``rule`` speaks about ``t`` (``level``: the level of the trigger's area, for red_risk)."""
    if rule.reason != t.reason:
        return False
    if rule.areas and not (t.area_code and t.area_code.startswith(rule.areas)):
        return False
    if rule.departments and not rule.departments & set(t.departments):
        return False
    return not rule.levels or level in rule.levels


def targets(rule: Rule, t: Trigger, channels: Sequence[Channel]) -> list[Channel]:
    """The channels ``rule`` sends ``t`` to, in the order it names them, each once."""
    out: dict[str, Channel] = {}
    for target in rule.to:
        if target == "@area":
            found = [c for c in channels if c.area and t.area_code and t.area_code.startswith(c.area)]
        elif target == "@departments":
            found = [c for c in channels if c.department and c.department in t.departments]
        elif target.startswith("role:"):
            found = [c for c in channels if c.role == target[5:]]
        else:
            found = [c for c in channels if c.name == target]
        out.update((c.name, c) for c in found)
    return list(out.values())


def route(rules: Sequence[Rule], channels: Sequence[Channel], t: Trigger,
          level: str | None = None) -> list[tuple[Rule, Channel]]:
    """Every channel ``t`` goes to, with the first rule that sends it there: one message per trigger and channel."""
    out: dict[str, tuple[Rule, Channel]] = {}
    for rule in rules:
        if applies(rule, t, level):
            for c in targets(rule, t, channels):
                out.setdefault(c.name, (rule, c))
    return list(out.values())


# --------------------------------------------------------------------------- messages


def _shown(value: datetime | None, tz) -> str:
    return value.astimezone(tz).strftime("%Y-%m-%d %H:%M") if value else "未设定"


def fields_of(t: Trigger, link: str, tz, names: Mapping[str, str] | None = None) -> dict[str, str]:
    """The placeholders a template may use. ``names``: department code → name."""
    names = names or {}
    return {
        "reason": t.reason.value, "reason_name": REASON_LABELS[t.reason][0],
        "case_id": str(t.case_id or ""), "title": t.title, "area_code": t.area_code or "",
        "area_name": t.area_name or t.area_code or "未定位",
        "departments": "、".join(names.get(d, d) for d in t.departments) or "未指定",
        "deadline": _shown(t.deadline, tz), "note": t.note or "（无）", "detail": t.detail,
        "link": link, "at": _shown(t.at, tz),
    }


def link_of(t: Trigger, base_url: str) -> str:
    """The page a message points at: the case, the area's drill-down, or the health page for a feed."""
    base = base_url.rstrip("/")
    if t.case_id is not None:
        return f"{base}/case/{t.case_id}"
    if t.area_code:
        return f"{base}/area/{t.area_code}"
    return f"{base}/healthz"


def render(rule: Rule, t: Trigger, base_url: str, tz, names: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(subject, body) of ``t`` by ``rule``'s templates, else the reason's own."""
    subject, body = TEMPLATES[t.reason]
    values = fields_of(t, link_of(t, base_url), tz, names)
    return (rule.subject or subject).format_map(values), (rule.body or body).format_map(values)


def summary(counts: Mapping[str, int], base_url: str) -> tuple[str, str]:
    """The message that stands for ``sum(counts)`` folded ones (counts by reason)."""
    n = sum(counts.values())
    shown = "，".join(f"{REASON_LABELS[Reason(r)][0]} {c} 条" for r, c in sorted(counts.items()))
    return (SUMMARY[0].format(n=n), SUMMARY[1].format(n=n, counts=shown, link=base_url.rstrip("/") + "/notifications"))


def template_problem(text: str) -> str | None:
    """Why ``text`` is not a usable template (an unknown or malformed placeholder), or None."""
    try:
        named = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as exc:
        return f"not a template ({exc}); write placeholders as {{name}} and braces as {{{{ }}}}"
    unknown = sorted({f for f in named if f not in FIELDS})
    if unknown:
        return f"unknown placeholder {unknown[0]!r}; use {', '.join(FIELDS)}"
    return None


# --------------------------------------------------------------------------- retries and the rate limit


@dataclass(frozen=True)
class Retry:
    attempts: int = 8  # tries before giving up
    first_s: float = 10.0  # wait after the first failure; doubled after each further one
    max_s: float = 900.0


def next_try(policy: Retry, attempts: int, now: datetime) -> datetime | None:
    """When a delivery that failed ``attempts`` times is tried again (exponential backoff), or None: give up."""
    if attempts >= policy.attempts:
        return None
    return now + timedelta(seconds=min(policy.first_s * 2 ** (attempts - 1), policy.max_s))


def plan(waiting: int, used: int, limit: int) -> tuple[int, int]:
    """(send one by one, fold into a summary) of ``waiting`` messages for a channel that took ``used`` of its
    ``limit`` in the last minute. When not all fit, the last free place goes to one summary of the rest."""
    free = max(0, limit - used)
    if waiting <= free:
        return waiting, 0
    if free == 0:
        return 0, 0  # wait for the next minute
    return free - 1, waiting - (free - 1)


# --------------------------------------------------------------------------- secrets


MASK = "****"
_MIN_SECRET = 6  # shorter parts of a URL (a port, "hook") are not worth masking and would garble text


def secrets_of(url: str) -> set[str]:
    """The parts of a channel URL that may be credentials: the user's password, and every path segment, query value
    and the user name of a URL without a host part worth keeping (robot tokens sit there: dingtalk://TOKEN)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return {url}
    found = {parts.password} if parts.password else set()
    if parts.username and not parts.password:
        found.add(parts.username)  # scheme://TOKEN@… : a token, not a name
    if parts.scheme not in ("mailto", "mailtos", "json", "jsons", "form", "forms", "xml", "xmls"):
        host = parts.netloc.rsplit("@", 1)[-1].split(":")[0]  # as written: a token's case matters
        found.add(host)  # dingtalk://TOKEN, wecombot://KEY, feishu://TOKEN: the "host" is the secret
    found |= {unquote(s) for s in parts.path.split("/")}
    found |= {v for _, v in parse_qsl(parts.query)}
    found = {s for s in found if s and len(s) >= _MIN_SECRET}
    return found | {s.replace("%", "%25") for s in found}


def scrub(text: str | None, secrets: Iterable[str]) -> str | None:
    """``text`` with every secret replaced by ``****`` (longest first, so no part of one is left)."""
    if not text:
        return text
    for s in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(s, MASK)
    return _USERINFO.sub(r"\1" + MASK + "@", text)


_USERINFO = re.compile(r"(\w+://[^/\s:@]*:)[^@\s/]+@")  # any scheme://user:password@ left in a library's text
