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
        "scr_title": "光明区党建引领基层治理 · 实时风险预警图",
        "scr_today": "今日态势",
        "scr_vs": "较昨日",
        "scr_cases": "事件总数",
        "scr_resolution": "办结率",
        "scr_on_time": "按期办结率",
        "scr_onsite": "现场化解率",
        "scr_overdue": "超期未办结",
        "scr_alarms": "物联告警",
        "scr_categories": "事件分类（今日）",
        "scr_sources": "来源渠道（今日）",
        "scr_trend": "24小时趋势",
        "scr_trend_today": "今日",
        "scr_trend_yesterday": "昨日",
        "scr_ticker": "最新事件",
        "scr_sla": "办理时限倒计时",
        "scr_sla_case": "事件",
        "scr_sla_dept": "责任部门",
        "scr_sla_left": "剩余",
        "scr_depts": "吹哨报到 · 部门应哨排名（本周）",
        "scr_rank": "#",
        "scr_dept": "部门",
        "scr_rate": "按期办结",
        "scr_overdue_short": "超期",
        "scr_change": "变化",
        "scr_red": "红榜",
        "scr_black": "黑榜",
        "scr_min_volume": "少于{n}件不参与排名",
        "scr_updated": "数据更新于",
        "scr_stale": "数据更新中断",
        "scr_no_data": "暂无数据",
        "scr_waiting": "等待数据…",
        "scr_onsite_handled": "现场处置",
        "scr_unlocated": "未定位",
        "scr_feed_late": "延迟",
        "scr_bad_param": "参数 {name}={value} 无效，已使用默认视图",
        "scr_unknown_area": "未知区域 {value}，已显示全区",
        "scr_weekdays": "星期一,星期二,星期三,星期四,星期五,星期六,星期日",
        "scr_grades": "一般,较大,重大,特别重大",
        "scr_levels": "蓝 IV,黄 III,橙 II,红 I",
        "scr_district": "全区",
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
        "scr_title": "Guangming District · Live Risk Warning Map",
        "scr_today": "Today",
        "scr_vs": "vs yesterday",
        "scr_cases": "Cases",
        "scr_resolution": "Resolved",
        "scr_on_time": "On time",
        "scr_onsite": "On the spot",
        "scr_overdue": "Overdue open",
        "scr_alarms": "Sensor alarms",
        "scr_categories": "Categories (today)",
        "scr_sources": "Sources (today)",
        "scr_trend": "24-hour trend",
        "scr_trend_today": "today",
        "scr_trend_yesterday": "yesterday",
        "scr_ticker": "Newest cases",
        "scr_sla": "Deadlines",
        "scr_sla_case": "Case",
        "scr_sla_dept": "Department",
        "scr_sla_left": "Left",
        "scr_depts": "Department ranking (this week)",
        "scr_rank": "#",
        "scr_dept": "Department",
        "scr_rate": "On time",
        "scr_overdue_short": "Overdue",
        "scr_change": "Change",
        "scr_red": "Best",
        "scr_black": "Worst",
        "scr_min_volume": "fewer than {n} cases: not ranked",
        "scr_updated": "Updated",
        "scr_stale": "Data stale since",
        "scr_no_data": "No data",
        "scr_waiting": "Waiting for data…",
        "scr_onsite_handled": "on the spot",
        "scr_unlocated": "unlocated",
        "scr_feed_late": "late",
        "scr_bad_param": "{name}={value} is not valid: showing the default view",
        "scr_unknown_area": "unknown area {value}: showing the district",
        "scr_weekdays": "Monday,Tuesday,Wednesday,Thursday,Friday,Saturday,Sunday",
        "scr_grades": "General,Serious,Major,Especially major",
        "scr_levels": "Blue IV,Yellow III,Orange II,Red I",
        "scr_district": "District",
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


# Feed and source names as the wall shows them (a source not listed shows its own code).
SOURCES: dict[str, dict[str, str]] = {
    "hotline12345": {"zh": "12345热线", "en": "12345 hotline"},
    "citymgmt": {"zh": "数字城管", "en": "City management"},
    "patrol": {"zh": "网格巡查", "en": "Grid patrol"},
    "citizen": {"zh": "随手拍", "en": "Citizen reports"},
    "iot": {"zh": "物联感知", "en": "IoT sensors"},
    "sensor": {"zh": "传感网关", "en": "Sensor gateway"},
    "open311": {"zh": "Open311", "en": "Open311"},
}
INTERNAL_SOURCES = frozenset({"watch"})  # the scheduler's own device watch: not a feed


def source_label(code: str, lang: object) -> str:
    return SOURCES.get(code, {}).get(lang_of(lang), code)

