"""KPIs for an area and a period: one definition each, used by the API, the screens and the briefings.

The store sums a period's cases in one SQL statement (``SUMS``, store.queries.kpis), judged at ``as_of`` (the
end of the period, or now if that is earlier); ``figures`` turns the sums into the KPIs. Every figure is defined in
``DEFINITIONS`` — the API returns them, so a screen can show what a number means.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

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


SUMS = ("cases_total", "resolved", "on_time", "overdue_open", "onsite", "grassroots", "evaluations", "satisfied",
        "rating_sum", "dispatched", "dispatch_s", "dispatch_resolved", "dispatch_resolve_s", "fed_back",
        "feedback_s", "evaluated_after", "evaluate_s", "handling_s")
# What the store sums for a period (store.queries.kpis, one SQL statement), judged at ``as_of``:
#   cases_total   cases reported in the period
#   resolved      of those, resolved_at ≤ as_of ("resolved"); on_time: resolved with no deadline or by it
#   overdue_open  not resolved, in an open status, due_at < as_of
#   onsite / grassroots   resolved on the spot / resolved without escalation
#   evaluations, satisfied, rating_sum   rated cases, rated ≥ SATISFIED, the sum of ratings
#   dispatched, dispatch_s                  cases with a first dispatch, Σ(dispatched_at − reported_at)
#   dispatch_resolved, dispatch_resolve_s   resolved cases with a dispatch, Σ(resolved_at − dispatched_at)
#   fed_back, feedback_s                    cases with resolved_at and closed_at, Σ(closed_at − resolved_at)
#   evaluated_after, evaluate_s             cases with closed_at and evaluated_at, Σ(evaluated_at − closed_at)
#   handling_s    every resolved case's resolved_at − reported_at, in seconds (for the mean and the median)
# Without the detail (a quicker read): no spans and no handling times, but handling_sum_s, their sum (the mean).


def _ratio(a: float, b: float) -> float | None:
    return None if not b else a / b


def figures(sums: dict[str, Any]) -> dict[str, Any]:
    """The KPIs (DEFINITIONS) from the period's sums (SUMS)."""
    handling = np.asarray(sums.get("handling_s") or [], dtype=float)
    n = int(sums.get("cases_total") or 0)
    detail = "dispatched" in sums  # without the detail: the handling mean from its sum, no median, no moments
    if n == 0:
        return {"cases_total": 0, **{k: (0 if DEFINITIONS[k]["unit"] == "cases" else None)
                                     for k in DEFINITIONS if k != "cases_total"}}
    resolved = int(sums["resolved"])
    out = {
        "cases_total": n,
        "resolved": resolved,
        "resolution_rate": _ratio(resolved, n),
        "on_time_rate": _ratio(sums["on_time"], resolved),
        "overdue_open": int(sums["overdue_open"]),
        "onsite_rate": _ratio(sums["onsite"], n),
        "grassroots_rate": _ratio(sums["grassroots"], n),
        "handling_mean_s": (float(handling.mean()) if handling.size else None) if detail
        else _ratio(sums.get("handling_sum_s", 0.0), resolved),
        "handling_median_s": float(np.median(handling)) if handling.size else None,
        "satisfaction": _ratio(sums["satisfied"], sums["evaluations"]),
        "rating_mean": _ratio(sums["rating_sum"], sums["evaluations"]),
        "moment_report_to_dispatch_s": _ratio(sums.get("dispatch_s", 0), sums.get("dispatched", 0)),
        "moment_dispatch_to_resolve_s": _ratio(sums.get("dispatch_resolve_s", 0), sums.get("dispatch_resolved", 0)),
        "moment_resolve_to_feedback_s": _ratio(sums.get("feedback_s", 0), sums.get("fed_back", 0)),
        "moment_feedback_to_evaluate_s": _ratio(sums.get("evaluate_s", 0), sums.get("evaluated_after", 0)),
    }
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}


def change(current: dict[str, Any], previous: dict[str, Any]) -> dict[str, float | None]:
    """current − previous for every figure both periods have."""
    return {k: (current[k] - previous[k]) if current.get(k) is not None and previous.get(k) is not None else None
            for k in DEFINITIONS if k in current}
