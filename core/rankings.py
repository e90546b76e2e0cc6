"""Department rankings (吹哨报到 accountability): periods, metric definitions, the composite score, rank and lists.

The figures per department come from its assignment rows (core/assignments.py), aggregated in SQL by
store/queries.py ``department_metrics`` following ``DEFINITIONS`` here; this module turns them into scores,
ranks, rank changes and the red and black lists. One rule, used by the API, the wall and the briefings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

PERIODS = ("day", "week", "month", "quarter", "custom")
SATISFIED = 4  # a rating of 4 or 5 (of 5) counts as satisfied (as in core/kpis.py)

# Each metric: what it counts, and (for the composite) whether higher is better.
DEFINITIONS: dict[str, dict[str, Any]] = {
    "received": {"zh": "受理案件数", "en": "Cases received", "unit": "cases",
                 "definition_zh": "期内派给本部门的主办任务数（退回或重办后再次派遣的另计一次）",
                 "definition": "lead (主办) assignments received in the period: dispatches to the department (a case "
                               "dispatched to it again after a return or a reopen counts again)"},
    "accepted_on_time_rate": {"zh": "按时签收率", "en": "Accepted on time", "unit": "share", "better": "higher",
                              "definition_zh": "期内受理、签收已有结果（已签收或已过签收时限）的任务中，在签收时限内签收的比例",
                              "definition": "of the lead assignments received in the period whose 签收 is decided by "
                                            "the end of the period (accepted, or the deadline passed unaccepted), the "
                                            "share accepted by the case's 签收 deadline"},
    "resolved": {"zh": "办结数", "en": "Resolved", "unit": "cases",
                 "definition_zh": "期内本部门办结（含现场处置）的主办任务数",
                 "definition": "lead assignments the department resolved (办结 or 现场处置) in the period"},
    "resolved_on_time_rate": {"zh": "按期办结率", "en": "Resolved on time", "unit": "share", "better": "higher",
                              "definition_zh": "上述办结中，在当时有效的办理时限内办结的比例",
                              "definition": "of those, the share resolved by the case's deadline in force at the time"},
    "open_at_end": {"zh": "在办数", "en": "Open at period end", "unit": "cases",
                    "definition_zh": "期末尚未办结且未退回的主办任务数",
                    "definition": "lead assignments still unresolved and not returned at the end of the period"},
    "overdue_open": {"zh": "超期在办", "en": "Overdue open", "unit": "cases",
                     "definition_zh": "其中期末已超过办理时限的任务数",
                     "definition": "of those, past the case's deadline at the end of the period"},
    "overdue_share": {"zh": "超期在办占比", "en": "Overdue share of open", "unit": "share", "better": "lower",
                      "definition_zh": "超期在办 ÷ 在办数",
                      "definition": "overdue_open / open_at_end"},
    "handling_median_s": {"zh": "办理时长中位数", "en": "Median handling time", "unit": "seconds",
                          "definition_zh": "期内办结任务“派遣→办结”用时的中位数",
                          "definition": "median of resolved_at − dispatched_at over the resolutions in the period"},
    "handling_p90_s": {"zh": "办理时长P90", "en": "90th percentile handling time", "unit": "seconds",
                       "definition_zh": "同一用时的第 90 百分位数（线性插值）",
                       "definition": "90th percentile (linear interpolation) of the same durations"},
    "returned_rate": {"zh": "退回率", "en": "Returned", "unit": "share", "better": "lower",
                      "definition_zh": "期内受理的任务中，期末前被本部门退回的比例",
                      "definition": "of the assignments received in the period, the share the department returned "
                                    "(退回) by the end of the period"},
    "reopened_rate": {"zh": "重办率", "en": "Reopened", "unit": "share", "better": "lower",
                      "definition_zh": "期内办结中，期末前被要求重新办理的比例",
                      "definition": "of the resolutions in the period, the share reopened (重新办理) by the end of "
                                    "the period"},
    "whistles": {"zh": "应哨次数", "en": "Whistles answered", "unit": "times",
                 "definition_zh": "期内被“吹哨”召集的次数",
                 "definition": "times the department was summoned by a whistle (吹哨) in the period"},
    "whistle_on_time_rate": {"zh": "按时报到率", "en": "Reported on time", "unit": "share", "better": "higher",
                             "definition_zh": "期内应哨、报到已有结果的召集中，在时限内报到的比例",
                             "definition": "of the summons in the period whose 报到 is decided by the end of the period "
                                           "(checked in, or the limit passed), the share checked in within the limit"},
    "evaluations": {"zh": "评价数", "en": "Evaluations", "unit": "cases",
                    "definition_zh": "期内对本部门办结案件的评价数",
                    "definition": "evaluations in the period of cases the department resolved"},
    "satisfaction": {"zh": "满意率", "en": "Satisfaction", "unit": "share", "better": "higher",
                     "definition_zh": f"评分为 {SATISFIED} 分及以上（满分 5 分）的评价 ÷ 评价数",
                     "definition": f"evaluations rated {SATISFIED} or 5 (of 5) / evaluations"},
    "score": {"zh": "综合得分", "en": "Composite score", "unit": "0–100",
              "definition_zh": "100 × Σ 权重 × 指标值（越低越好的指标取 1 − 指标值）÷ Σ 权重；本期无可计量数据的指标连同其权重不计入",
              "definition": "100 × Σ weight × (the rate, or 1 − the rate where lower is better) / Σ weight, over the "
                            "weighted rates the department has in the period (a rate with nothing to measure leaves "
                            "the sum, and its weight with it)"},
    "rank": {"zh": "排名", "en": "Rank", "unit": "",
             "definition_zh": "受理数达到最低量的部门按综合得分由高到低排名，得分相同者名次相同",
             "definition": "by score, highest first, among departments with at least the minimum volume received; "
                           "equal scores share a rank"},
    "rank_change": {"zh": "名次变化", "en": "Rank change", "unit": "places",
                    "definition_zh": "上期名次 − 本期名次（正数为上升）；两期均未排名则为空",
                    "definition": "rank in the previous period of the same kind − rank now (positive: moved up); "
                                  "empty if not ranked in either"},
}

DEFAULT_WEIGHTS: dict[str, float] = {
    "accepted_on_time_rate": 0.15, "resolved_on_time_rate": 0.25, "overdue_share": 0.15, "returned_rate": 0.10,
    "reopened_rate": 0.10, "whistle_on_time_rate": 0.10, "satisfaction": 0.15,
}
WEIGHTABLE = tuple(k for k, d in DEFINITIONS.items() if "better" in d)


@dataclass(frozen=True)
class RankingRules:
    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    min_volume: int = 15  # below this many cases received, a department is shown but not ranked
    list_size: int = 5  # red list (红榜) and black list (黑榜)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.weights) - set(WEIGHTABLE))
        if unknown:
            raise ValueError(f"weights: unknown metric(s) {', '.join(unknown)}; use {', '.join(WEIGHTABLE)}")
        bad = [k for k, w in self.weights.items() if not isinstance(w, int | float) or isinstance(w, bool)
               or not math.isfinite(w) or w < 0]
        if bad:
            raise ValueError(f"weights: {', '.join(bad)} must be a number ≥ 0")
        if not any(self.weights.values()):
            raise ValueError("weights: at least one weight must be above 0")
        if not isinstance(self.min_volume, int) or self.min_volume < 1:
            raise ValueError("min_volume: must be a whole number ≥ 1")
        if not isinstance(self.list_size, int) or self.list_size < 1:
            raise ValueError("list_size: must be a whole number ≥ 1")


@dataclass(frozen=True)
class Period:
    kind: str
    since: datetime  # aware, the first instant
    until: datetime  # aware, the first instant after
    label: str

    def previous(self, tz: ZoneInfo) -> Period:
        if self.kind == "custom":
            length = self.until - self.since
            return Period("custom", self.since - length, self.since, f"{(self.since - length).isoformat()}/"
                                                                       f"{self.since.isoformat()}")
        day = self.since.astimezone(tz).date() - timedelta(days=1)
        return period(self.kind, day, tz)


def _midnight(d: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(d, time(0), tzinfo=tz)


def period(kind: str, day: date, tz: ZoneInfo, since: datetime | None = None, until: datetime | None = None) -> Period:
    """The day, ISO week (Monday–Sunday), month or quarter holding ``day`` in the city's zone; or since/until."""
    if kind == "day":
        start, end = day, day + timedelta(days=1)
        label = day.isoformat()
    elif kind == "week":
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
        iso = start.isocalendar()
        label = f"{iso.year}-W{iso.week:02d}"
    elif kind == "month":
        start = day.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
        label = start.strftime("%Y-%m")
    elif kind == "quarter":
        q = (day.month - 1) // 3
        start = date(day.year, 3 * q + 1, 1)
        end = date(day.year + (q == 3), (3 * q + 3) % 12 + 1, 1)
        label = f"{day.year}-Q{q + 1}"
    elif kind == "custom":
        if since is None or until is None:
            raise ValueError("custom: give both since and until")
        if until <= since:
            raise ValueError("custom: until must be after since")
        return Period("custom", since, until, f"{since.isoformat()}/{until.isoformat()}")
    else:
        raise ValueError(f"unknown period {kind!r}; use one of: {', '.join(PERIODS)}")
    return Period(kind, _midnight(start, tz), _midnight(end, tz), label)


def ratio(a: float | None, b: float | None) -> float | None:
    return None if not b else (a or 0) / b


def score(metrics: Mapping[str, Any], weights: Mapping[str, float]) -> float | None:
    """The composite score (0–100) of one department's metrics, or None if no weighted rate can be measured."""
    total = weight = 0.0
    for k, w in weights.items():
        v = metrics.get(k)
        if v is None or not w:
            continue
        total += w * (v if DEFINITIONS[k]["better"] == "higher" else 1 - v)
        weight += w
    return None if weight == 0 else 100 * total / weight


def rank(rows: list[dict[str, Any]], rules: RankingRules, previous: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Score and rank departments (rows: one dict per department with ``department`` and the metrics).

    Adds ``score``, ``ranked`` (False: insufficient volume), ``rank``, ``rank_change`` to each row (in place) and
    returns ``{"departments": rows by rank, then unranked by volume, "red_list": [...], "black_list": [...]}``.
    """
    for row in rows:
        row["score"] = score(row, rules.weights)
        row["ranked"] = row.get("received", 0) >= rules.min_volume and row["score"] is not None
        row["rank"] = None
        row["rank_change"] = None
    ranked = sorted((r for r in rows if r["ranked"]), key=lambda r: (-r["score"], r["department"]))
    prev_score = None
    for i, row in enumerate(ranked, start=1):
        s = round(row["score"], 9)
        row["rank"] = ranked[i - 2]["rank"] if prev_score is not None and s == prev_score else i
        prev_score = s
        if previous and row["department"] in previous:
            row["rank_change"] = previous[row["department"]] - row["rank"]
    unranked = sorted((r for r in rows if not r["ranked"]), key=lambda r: (-r.get("received", 0), r["department"]))
    k = min(rules.list_size, len(ranked) // 2)
    return {"departments": ranked + unranked,
            "red_list": [r["department"] for r in ranked[:k]],
            "black_list": [r["department"] for r in ranked[::-1][:k]]}
