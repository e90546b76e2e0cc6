"""What one briefing holds (dashboard.briefing builds it; the PDF and the spreadsheet lay it out)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass
class Briefing:
    kind: str
    label: str
    area: dict[str, str]
    since: datetime
    until: datetime
    generated_at: datetime
    as_of: datetime  # the figures are judged at this instant: the period's end, or now for a running period
    headline: list[dict[str, Any]] = field(default_factory=list)  # figure, value, previous, last week's
    moments: list[dict[str, Any]] = field(default_factory=list)
    by_area: list[dict[str, Any]] = field(default_factory=list)
    by_category: list[dict[str, Any]] = field(default_factory=list)
    by_source: list[dict[str, Any]] = field(default_factory=list)
    overdue: list[dict[str, Any]] = field(default_factory=list)
    ranking: dict[str, Any] = field(default_factory=dict)
    hottest: list[dict[str, Any]] = field(default_factory=list)
    notable: list[dict[str, Any]] = field(default_factory=list)
    trend: dict[str, Any] = field(default_factory=dict)  # labels, current, previous: per hour (a day) or per day
    history: list[dict[str, Any]] = field(default_factory=list)  # weeks and months: the last HISTORY periods' KPIs
    score_history: dict[str, Any] = field(default_factory=dict)  # labels, series: department → scores (or None)
    shapes: list[dict[str, Any]] = field(default_factory=list)  # the area's grids: code, level, rings (lon, lat)
