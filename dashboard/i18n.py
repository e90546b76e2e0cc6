"""Every UI text, in Simplified Chinese (default) and English. Look texts up with :func:`texts`."""

from __future__ import annotations

DEFAULT_LANG = "zh"
LANGS = ("zh", "en")

TEXTS: dict[str, dict[str, str]] = {
    "zh": {
        "page_title": "实时运行概览",
        "switch": "English",
        "cases_total": "案件总数",
        "cases_open": "在办案件",
        "overdue_open": "超期在办",
        "alarms": "感知告警",
        "dead_letters": "异常数据",
        "streets_heading": "各街道在办案件（按等级）",
        "street": "街道",
        "open": "在办",
        "overdue": "超期",
        "total": "累计",
        "unlocated": "未定位",
        "district_total": "全区合计",
        "last_event": "最新事件",
        "stream_lag": "队列积压",
        "stream_cases": "案件流",
        "stream_sensors": "感知流",
        "pending": "待确认",
        "none_yet": "暂无",
        "seconds_ago": "{n} 秒前",
        "minutes_ago": "{n} 分钟前",
        "hours_ago": "{n} 小时前",
        "unavailable": "实时数据暂不可用",
        "updated": "刷新于",
    },
    "en": {
        "page_title": "Live operations overview",
        "switch": "中文",
        "cases_total": "Cases total",
        "cases_open": "Open cases",
        "overdue_open": "Overdue (open)",
        "alarms": "Active sensor alarms",
        "dead_letters": "Dead letters",
        "streets_heading": "Open cases by street and grade",
        "street": "Street",
        "open": "Open",
        "overdue": "Overdue",
        "total": "Total",
        "unlocated": "Unlocated",
        "district_total": "District total",
        "last_event": "Last event",
        "stream_lag": "Stream lag",
        "stream_cases": "cases",
        "stream_sensors": "sensors",
        "pending": "pending",
        "none_yet": "none yet",
        "seconds_ago": "{n} s ago",
        "minutes_ago": "{n} min ago",
        "hours_ago": "{n} h ago",
        "unavailable": "Live data unavailable",
        "updated": "Updated",
    },
}


def lang_of(value: object) -> str:
    """A supported language code (anything else → the default)."""
    return value if value in LANGS else DEFAULT_LANG  # type: ignore[return-value]


def texts(lang: object) -> dict[str, str]:
    return TEXTS[lang_of(lang)]


def pick(pair: tuple[str, str], lang: object) -> str:
    """The (zh, en) pair's text for ``lang`` (as in core.lifecycle.STATUS_LABELS)."""
    return pair[0] if lang_of(lang) == "zh" else pair[1]
