"""KPIs for an area and a period: one definition each, used by the API, the screens and the briefings.

Input is one row per case reported in the period (a pandas DataFrame, see ``CASE_COLUMNS``) with the times of its
first dispatch and of its evaluation; ``as_of`` is the end of the period (or now, if that is earlier). Every figure
is defined in ``DEFINITIONS`` — the API returns them, so a screen can show what a number means.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import pandas as pd

CASE_COLUMNS = ("reported_at", "dispatched_at", "resolved_at", "closed_at", "evaluated_at", "due_at", "status",
                "onsite", "escalated", "rating")
OPEN = ("reported", "registered", "dispatched", "accepted", "handling")
SATISFIED = 4  # a rating of 4 or 5 (of 5) counts as satisfied

DEFINITIONS: dict[str, dict[str, str]] = {
    "cases_total": {"zh": "案件总数", "en": "Cases", "unit": "cases",
                    "definition": "cases reported in the period"},
    "resolved": {"zh": "办结数", "en": "Resolved", "unit": "cases",
                 "definition": "of those, resolved (办结 or later) by the end of the period"},
    "resolution_rate": {"zh": "办结率", "en": "Resolution rate", "unit": "share",
                        "definition": "resolved / cases_total"},
    "on_time_rate": {"zh": "按期办结率", "en": "On-time resolution rate", "unit": "share",
                     "definition": "resolved no later than their deadline / resolved (a case without a deadline counts "
                                   "as on time)"},
    "overdue_open": {"zh": "超期在办", "en": "Overdue open", "unit": "cases",
                     "definition": "still open at the end of the period and past their deadline"},
    "onsite_rate": {"zh": "现场化解率", "en": "On-the-spot resolution rate", "unit": "share",
                    "definition": "resolved on the spot (巡办合一) / cases_total"},
    "grassroots_rate": {"zh": "基层化解率", "en": "Grassroots resolution rate", "unit": "share",
                        "definition": "resolved without escalation to the district (升级督办) / cases_total"},
    "handling_mean_s": {"zh": "平均办理时长", "en": "Mean handling time", "unit": "seconds",
                        "definition": "mean of resolved_at − reported_at over resolved cases"},
    "handling_median_s": {"zh": "办理时长中位数", "en": "Median handling time", "unit": "seconds",
                          "definition": "median of resolved_at − reported_at over resolved cases"},
    "satisfaction": {"zh": "满意率", "en": "Satisfaction", "unit": "share",
                     "definition": f"evaluations rated {SATISFIED} or 5 (of 5) / evaluations"},
    "rating_mean": {"zh": "平均评分", "en": "Mean rating", "unit": "1–5",
                    "definition": "mean rating of evaluated cases"},
    "moment_report_to_dispatch_s": {"zh": "上报→派遣", "en": "Report → dispatch", "unit": "seconds",
                                    "definition": "mean time from report to first dispatch, over dispatched cases"},
    "moment_dispatch_to_resolve_s": {"zh": "派遣→办结", "en": "Dispatch → resolve", "unit": "seconds",
                                     "definition": "mean time from first dispatch to resolution"},
    "moment_resolve_to_feedback_s": {"zh": "办结→反馈", "en": "Resolve → feedback", "unit": "seconds",
                                     "definition": "mean time from resolution to 核查结案 (the feedback to the reporter)"},
    "moment_feedback_to_evaluate_s": {"zh": "反馈→评价", "en": "Feedback → evaluation", "unit": "seconds",
                                      "definition": "mean time from 核查结案 to the evaluation"},
}
# The six "first moments" (发现、上报、派遣、处置、反馈、评价): Gridwatch records a case when it is reported, so
# discovery and report coincide; the four spans above are the measurable legs between the other five.


def _ratio(a: float, b: float) -> float | None:
    return None if not b else a / b


def _seconds(delta: pd.Series) -> pd.Series:
    return delta.dt.total_seconds()


def _mean(values: pd.Series) -> float | None:
    values = values.dropna()
    return None if values.empty else float(values.mean())


def compute(cases: pd.DataFrame, as_of: datetime) -> dict[str, Any]:
    """The KPIs of ``cases`` (one row per case reported in the period), judged at ``as_of``."""
    df = cases
    total = len(df)
    if total == 0:
        return {"cases_total": 0, **{k: (0 if DEFINITIONS[k]["unit"] == "cases" else None)
                                     for k in DEFINITIONS if k != "cases_total"}}
    as_of_ts = pd.Timestamp(as_of)
    resolved_mask = df["resolved_at"].notna() & (df["resolved_at"] <= as_of_ts)
    resolved = df[resolved_mask]
    on_time = resolved["due_at"].isna() | (resolved["resolved_at"] <= resolved["due_at"])
    open_mask = ~resolved_mask & df["status"].isin(OPEN)
    overdue_open = int((open_mask & df["due_at"].notna() & (df["due_at"] < as_of_ts)).sum())
    onsite = int((resolved_mask & df["onsite"].astype(bool)).sum())
    grassroots = int((resolved_mask & ~df["escalated"].astype(bool)).sum())
    handling = _seconds(resolved["resolved_at"] - resolved["reported_at"])
    rated = df["rating"].dropna()
    out = {
        "cases_total": total,
        "resolved": int(resolved_mask.sum()),
        "resolution_rate": _ratio(resolved_mask.sum(), total),
        "on_time_rate": _ratio(on_time.sum(), len(resolved)),
        "overdue_open": overdue_open,
        "onsite_rate": _ratio(onsite, total),
        "grassroots_rate": _ratio(grassroots, total),
        "handling_mean_s": _mean(handling),
        "handling_median_s": None if handling.empty else float(handling.median()),
        "satisfaction": _ratio((rated >= SATISFIED).sum(), len(rated)),
        "rating_mean": None if rated.empty else float(rated.mean()),
        "moment_report_to_dispatch_s": _mean(_seconds(df["dispatched_at"] - df["reported_at"])),
        "moment_dispatch_to_resolve_s": _mean(_seconds(resolved["resolved_at"] - resolved["dispatched_at"])),
        "moment_resolve_to_feedback_s": _mean(_seconds(df["closed_at"] - df["resolved_at"])),
        "moment_feedback_to_evaluate_s": _mean(_seconds(df["evaluated_at"] - df["closed_at"])),
    }
    out = {k: (v.item() if hasattr(v, "item") else v) for k, v in out.items()}  # plain numbers, not numpy's
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}


def change(current: dict[str, Any], previous: dict[str, Any]) -> dict[str, float | None]:
    """current − previous for every figure both periods have."""
    return {k: (current[k] - previous[k]) if current.get(k) is not None and previous.get(k) is not None else None
            for k in DEFINITIONS if k in current}
