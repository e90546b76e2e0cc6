"""The risk model of the 实时风险预警图 (real-time risk warning map): one rule, used by the sweep, the API and the wall.

Every area gets a score from what is happening in it *now*, and the score maps to one of four levels,
蓝/黄/橙/红 (IV–I). The score is a sum of parts, each explainable on its own (``DEFINITIONS``):

- ``cases``     Σ over grades g of w_g × open cases of grade g (grade weights, default 蓝 1, 黄 3, 橙 6, 红 10);
- ``overdue``   Σ over grades g of w_g × (m − 1) × overdue open cases of grade g: with the overdue multiplier m
                (default 2) an overdue case counts m times its grade weight in ``cases`` + ``overdue``;
- ``alarms``    alarm weight × active sensor threshold alarms;
- ``offline``   offline weight × devices silent past their heartbeat (default weight 0: silence is not risk);
- ``hotspots``  repeat complaints: every recent report that belongs to a hotspot (≥ ``min_cases`` reports of the
                same category within ``radius_m`` metres, within the last ``window_hours``) adds
                weight × 0.5^(age / half-life) to the grid it lies in.

Areas aggregate: the score of a community, street or the district is the sum of its grids' scores. The case and
alarm parts are linear in the live counters, so an area's own counters (which already sum its grids) give the same
sum in O(1); an unlocated case or device counts in the district only (it has no grid, street or community), so the
district's score is the sum of its streets' plus what is unlocated. Hotspots need coordinates: unlocated reports
never form one.

Thresholds per area level (a street holds ~20 grids, so its thresholds are higher) map a score to a level: below
the first threshold 蓝 (IV), then 黄 (III), 橙 (II), and 红 (I) from the third on.

Pure: numbers in, numbers out. The live counters come from Redis (dashboard/live.py), the recent reports from the
sweep (ingest/scheduler.py), the configuration from config/risk.yaml (config/risk.py).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

GRADES = (1, 2, 3, 4)
AREA_LEVELS = ("grid", "community", "street", "district")
EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius (IUGG), metres
PART_NAMES = ("cases", "overdue", "alarms", "offline", "hotspots")
# The live counter fields (core.livestate, per area) the score is made of.
COUNTER_FIELDS = ("g1", "g2", "g3", "g4", "o1", "o2", "o3", "o4", "alarms", "offline")
HOTSPOT_CASES_SHOWN = 20  # a hotspot lists at most this many case ids (the newest); ``count`` has them all


@dataclass(frozen=True)
class RiskLevel:
    level: int  # 1..4
    name: str  # 蓝/黄/橙/红
    roman: str  # IV..I (I is the most severe)
    en: str
    color: str  # how maps draw it: the one table of risk colours (pages hand it to the browser)

    def as_dict(self) -> dict[str, Any]:
        return {"risk_level": self.level, "color_name": self.name, "roman": self.roman, "en": self.en}


RISK_LEVELS: dict[int, RiskLevel] = {
    1: RiskLevel(1, "蓝", "IV", "blue", "#1E88E5"),
    2: RiskLevel(2, "黄", "III", "yellow", "#FDD835"),
    3: RiskLevel(3, "橙", "II", "orange", "#FB8C00"),
    4: RiskLevel(4, "红", "I", "red", "#E53935"),
}


def css_colors(grade_colors: dict[int, str] | None = None) -> dict[str, str]:
    """CSS custom properties for a page's root: ``--gw-l1``..``--gw-l4`` the risk levels, ``--gw-g1``.. the city's
    grades (config/city/grades.yaml), so stylesheets never carry a colour of their own."""
    out = {f"--gw-l{lv}": r.color for lv, r in RISK_LEVELS.items()}
    out.update({f"--gw-g{g}": c for g, c in (grade_colors or {}).items() if c})
    return out

DEFINITIONS: dict[str, dict[str, str]] = {
    "score": {"zh": "风险分值", "en": "Risk score", "unit": "points",
              "definition": "cases + overdue + alarms + offline + hotspots; an area's score is the sum of its grids' "
                            "scores (the district's also holds unlocated cases and devices)"},
    "risk_level": {"zh": "风险等级", "en": "Risk level", "unit": "1–4",
                   "definition": "the score against the thresholds of the area's level: below the first 蓝 (IV, 1), "
                                 "then 黄 (III, 2), 橙 (II, 3), from the third on 红 (I, 4)"},
    "cases": {"zh": "在办案件", "en": "Open cases", "unit": "points",
              "definition": "Σ grade weight × open cases of that grade (weights per grade 蓝/黄/橙/红 in "
                            "config/risk.yaml)"},
    "overdue": {"zh": "超期加权", "en": "Overdue surcharge", "unit": "points",
                "definition": "Σ grade weight × (overdue multiplier − 1) × overdue open cases of that grade: an "
                              "overdue case counts the multiplier times its grade weight in all"},
    "alarms": {"zh": "感知告警", "en": "Sensor alarms", "unit": "points",
               "definition": "alarm weight × active sensor threshold alarms"},
    "offline": {"zh": "设备离线", "en": "Devices offline", "unit": "points",
                "definition": "offline weight × devices silent past their heartbeat (weight 0 by default)"},
    "hotspots": {"zh": "重复投诉热点", "en": "Repeat-complaint hotspots", "unit": "points",
                 "definition": "Σ over recent reports that belong to a hotspot (at least min_cases reports of one "
                               "category within radius_m metres of each other, within window_hours) of hotspot "
                               "weight × 0.5^(age / half_life_hours); updated by the risk sweep"},
}


# --------------------------------------------------------------------------- the configuration


@dataclass(frozen=True)
class HotspotRule:
    radius_m: float = 100.0
    window_hours: float = 24.0
    min_cases: int = 10
    weight: float = 1.0
    half_life_hours: float = 6.0


@dataclass(frozen=True)
class RiskModel:
    """Weights, the hotspot rule and the thresholds (config/risk.yaml says what each means and why the defaults)."""

    grade_weights: Mapping[int, float] = field(default_factory=lambda: {1: 1.0, 2: 3.0, 3: 6.0, 4: 10.0})
    overdue_multiplier: float = 2.0
    alarm_weight: float = 5.0
    offline_weight: float = 0.0
    hotspot: HotspotRule = field(default_factory=HotspotRule)
    # per area level: the lower bounds of 黄, 橙 and 红
    thresholds: Mapping[str, tuple[float, float, float]] = field(default_factory=lambda: {
        "grid": (75.0, 150.0, 300.0), "community": (350.0, 650.0, 1200.0),
        "street": (2000.0, 2800.0, 3600.0), "district": (10000.0, 13500.0, 16000.0),
    })

    # ---- scores

    def part_matrix(self) -> np.ndarray:
        """The rule as a matrix: live counters (``COUNTER_FIELDS``) @ this = cases, overdue, alarms, offline."""
        m = np.zeros((len(COUNTER_FIELDS), 4))
        for k, g in enumerate(GRADES):
            w = self.grade_weights.get(g, 0.0)
            m[k, 0] = w  # gN: open cases of grade N
            m[4 + k, 1] = w * (self.overdue_multiplier - 1.0)  # oN: of them overdue
        m[8, 2] = self.alarm_weight
        m[9, 3] = self.offline_weight
        return m

    def parts_many(self, counters: np.ndarray, hotspots: np.ndarray) -> np.ndarray:
        """The parts (columns in ``PART_NAMES`` order) of many areas at once: ``counters`` has one row per area and
        one column per ``COUNTER_FIELDS`` entry, ``hotspots`` one value per area."""
        counted = np.asarray(counters, dtype=float).reshape(-1, len(COUNTER_FIELDS)) @ self.part_matrix()
        return np.round(np.column_stack([counted, np.asarray(hotspots, dtype=float).reshape(-1)]), 3)

    def levels_many(self, scores: np.ndarray, area_level: str) -> np.ndarray:
        """The risk level (1..4) of each score for areas of ``area_level``: a threshold is where its level begins."""
        return np.searchsorted(np.asarray(self.thresholds[area_level], dtype=float), scores, side="right") + 1

    def parts(self, counters: Mapping[str, int], hotspots: float = 0.0) -> dict[str, float]:
        """The parts of the score of one area from its live counters.

        ``counters``: the area's live counter fields (``COUNTER_FIELDS``: ``gN`` open cases of grade N, ``oN`` of
        them overdue, ``alarms``, ``offline``; missing ones are 0). ``hotspots``: the area's hotspot part.
        """
        row = self.parts_many(np.array([[counters.get(f, 0) for f in COUNTER_FIELDS]]), np.array([hotspots]))[0]
        return dict(zip(PART_NAMES, row.tolist(), strict=True))

    @staticmethod
    def score(parts: Mapping[str, float]) -> float:
        return scores_of(np.array([[parts.get(p, 0.0) for p in PART_NAMES]]))[0].item()

    def level(self, score: float, area_level: str) -> RiskLevel:
        """The risk level of ``score`` for an area of ``area_level`` (grid, community, street, district)."""
        return RISK_LEVELS[int(self.levels_many(np.array([score]), area_level)[0])]

    def assess(self, counters: Mapping[str, int], area_level: str, hotspots: float = 0.0) -> dict[str, Any]:
        """Score, level and parts of one area."""
        parts = self.parts(counters, hotspots)
        score = self.score(parts)
        return {"score": score, **self.level(score, area_level).as_dict(), "parts": parts}

    def case_weight(self, grade: int, overdue: bool) -> float:
        """What one open case adds to the score (``cases`` + ``overdue``)."""
        return self.grade_weights.get(grade, 0.0) * (self.overdue_multiplier if overdue else 1.0)


def scores_of(parts: np.ndarray) -> np.ndarray:
    """Scores from rows of parts (``parts_many``): their sum."""
    return np.round(np.asarray(parts, dtype=float).sum(axis=1), 3)


def _round(x: float) -> float:
    return round(float(x), 3)


# --------------------------------------------------------------------------- hotspots


@dataclass(frozen=True)
class Report:
    """A recent located report: the case, its 小类, its grid, where (WGS84) and when (Unix seconds)."""

    case_id: int
    category: str
    grid: str
    lon: float
    lat: float
    reported: float


@dataclass
class Hotspot:
    category: str
    lon: float  # centre: the mean of the members
    lat: float
    count: int
    cases: list[int]  # every member, newest first (as_dict shows the newest HOTSPOT_CASES_SHOWN)
    grid: str  # the grid holding most members (lowest code on a tie)
    by_grid: dict[str, float]  # what its members add to each grid's score now
    first: float  # Unix seconds of the oldest and newest member
    last: float
    weight: float  # what its members add to the scores now

    def as_dict(self) -> dict[str, Any]:
        return {"category": self.category, "lon": round(self.lon, 6), "lat": round(self.lat, 6), "count": self.count,
                "cases": self.cases[:HOTSPOT_CASES_SHOWN], "grid": self.grid,
                "by_grid": {g: _round(v) for g, v in sorted(self.by_grid.items())},
                "first": self.first, "last": self.last, "weight": _round(self.weight)}


@dataclass
class HotspotResult:
    grid_parts: dict[str, float]  # grid code → hotspot part of its score
    hotspots: list[Hotspot]  # heaviest first


def haversine_m(lon1, lat1, lon2, lat2):
    """Great-circle distance in metres (numpy-vectorised)."""
    lon1, lat1, lon2, lat2 = (np.radians(np.asarray(v, dtype=float)) for v in (lon1, lat1, lon2, lat2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


PAIR_CHUNK = 2_000_000  # candidate pairs measured at once (bounds memory in a dense hotspot)


def _pairs_within(cat: np.ndarray, lon: np.ndarray, lat: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray,
                                                                                             np.ndarray]:
    """All ordered pairs (i, j), i ≠ j, of the same category within ``radius`` metres, with their distances.

    Points are bucketed into square cells of the radius on an equirectangular projection taken at the largest
    |latitude| present: there east-west distances shrink the most, so projected distances never exceed true ones
    (to first order) and every pair within the radius lies in the same or a neighbouring cell. Candidates from the
    3 × 3 cells around each cell are screened by projected distance and then measured by haversine: the decision is
    the exact great-circle distance.
    """
    n = len(lon)
    empty = np.empty(0, dtype=np.int64)
    if n < 2:
        return empty, empty, np.empty(0)
    lat0 = math.radians(float(np.max(np.abs(lat))))
    size = radius * 1.001
    px = EARTH_RADIUS_M * math.cos(lat0) * np.radians(lon)
    py = EARTH_RADIUS_M * np.radians(lat)
    x = np.floor(px / size).astype(np.int64)
    y = np.floor(py / size).astype(np.int64)
    x -= x.min() - 1
    y -= y.min() - 1
    span_y = int(y.max()) + 2
    span_x = int(x.max()) + 2
    key = (cat * span_x + x) * span_y + y  # one integer per (category, cell); neighbours are key ± span_y ± 1
    order = np.argsort(key, kind="stable")
    skey = key[order]
    change = np.ones(n, dtype=bool)
    change[1:] = skey[1:] != skey[:-1]
    starts = np.flatnonzero(change)
    ends = np.append(starts[1:], n)
    cells = skey[starts]
    a_list, b_list = [], []
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            want = cells + dx * span_y + dy
            at = np.minimum(np.searchsorted(cells, want), len(cells) - 1)
            hit = cells[at] == want
            a_list.append(np.flatnonzero(hit))
            b_list.append(at[hit])
    ac = np.concatenate(a_list)
    bc = np.concatenate(b_list)
    per = (ends[ac] - starts[ac]) * (ends[bc] - starts[bc])
    out_i, out_j, out_d = [], [], []
    # Cross products of the point ranges of (cell a, cell b), about PAIR_CHUNK candidates at a time.
    cum = np.cumsum(per)
    lo = 0
    while lo < len(ac):
        hi = max(int(np.searchsorted(cum, cum[lo] - per[lo] + PAIR_CHUNK, side="right")), lo + 1)
        a, b, cnt = ac[lo:hi], bc[lo:hi], per[lo:hi]
        nb = ends[b] - starts[b]
        block = np.repeat(np.arange(len(a)), cnt)
        offset = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        i = order[starts[a][block] + offset // nb[block]]
        j = order[starts[b][block] + offset % nb[block]]
        keep = (i != j) & ((px[i] - px[j]) ** 2 + (py[i] - py[j]) ** 2 <= (radius * 1.001) ** 2)
        i, j = i[keep], j[keep]
        d = haversine_m(lon[i], lat[i], lon[j], lat[j])
        near = d <= radius
        out_i.append(i[near])
        out_j.append(j[near])
        out_d.append(d[near])
        lo = hi
    if not out_i:
        return empty, empty, np.empty(0)
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_d)


def find_hotspots(reports: Sequence[Report], rule: HotspotRule, now: float) -> HotspotResult:
    """Hotspots among ``reports`` (the recent located reports) at ``now`` (Unix seconds).

    Per category, the rule of DBSCAN with eps = ``radius_m`` and min_samples = ``min_cases``: a report with at least
    ``min_cases`` reports of its category (itself included) within the radius is a core of a hotspot; cores within
    the radius of each other belong to one hotspot; a report within the radius of a core joins the hotspot of its
    nearest core. Reports older than the window are ignored. Each member adds
    ``weight × 0.5^(age / half_life_hours)`` to its grid (age 0 for a report timed after ``now``).
    """
    horizon = now - rule.window_hours * 3600
    reports = [p for p in reports if p.reported >= horizon]
    n = len(reports)
    if n < rule.min_cases:
        return HotspotResult({}, [])
    cat_codes: dict[str, int] = {}
    cat = np.fromiter((cat_codes.setdefault(p.category, len(cat_codes)) for p in reports), dtype=np.int64, count=n)
    lon = np.fromiter((p.lon for p in reports), dtype=float, count=n)
    lat = np.fromiter((p.lat for p in reports), dtype=float, count=n)
    when = np.fromiter((p.reported for p in reports), dtype=float, count=n)
    i, j, d = _pairs_within(cat, lon, lat, rule.radius_m)
    neighbours = np.bincount(i, minlength=n) + 1  # itself included
    core = neighbours >= rule.min_cases
    # Cores: connected components of the core-core pairs (label = smallest index in the component).
    label = np.where(core, np.arange(n), -1)
    cc = core[i] & core[j]
    ci, cj = i[cc], j[cc]
    cores = np.flatnonzero(core)
    while len(ci):
        new = label.copy()
        np.minimum.at(new, ci, label[cj])
        new[cores] = new[new[cores]]  # pointer jumping: a core takes its label's label
        if np.array_equal(new, label):
            break
        label = new
    # Border reports: the hotspot of the nearest core (lowest index on a tie).
    bj = core[j] & ~core[i]
    bi, bjj, bd = i[bj], j[bj], d[bj]
    if len(bi):
        pick = np.lexsort((bjj, bd, bi))
        bi, bjj = bi[pick], bjj[pick]
        first = np.ones(len(bi), dtype=bool)
        first[1:] = bi[1:] != bi[:-1]
        label[bi[first]] = label[bjj[first]]
    member = np.flatnonzero(label >= 0)
    if len(member) == 0:
        return HotspotResult({}, [])
    age_h = np.maximum(now - when, 0.0) / 3600.0
    contrib = rule.weight * np.power(0.5, age_h / rule.half_life_hours)
    grid_parts: dict[str, float] = {}
    groups: dict[int, list[int]] = {}
    for k in member.tolist():
        p = reports[k]
        grid_parts[p.grid] = grid_parts.get(p.grid, 0.0) + float(contrib[k])
        groups.setdefault(int(label[k]), []).append(k)
    hotspots: list[Hotspot] = []
    for ks in groups.values():
        ks.sort(key=lambda k: (-reports[k].reported, reports[k].case_id))
        grids = Counter(reports[k].grid for k in ks)
        top = max(grids.values())
        by_grid: dict[str, float] = {}
        for k in ks:
            by_grid[reports[k].grid] = by_grid.get(reports[k].grid, 0.0) + float(contrib[k])
        hotspots.append(Hotspot(
            category=reports[ks[0]].category,
            lon=float(np.mean(lon[ks])), lat=float(np.mean(lat[ks])), count=len(ks),
            cases=[reports[k].case_id for k in ks],
            grid=min(g for g, c in grids.items() if c == top), by_grid=by_grid,
            first=float(when[ks].min()), last=float(when[ks].max()), weight=float(contrib[ks].sum()),
        ))
    hotspots.sort(key=lambda h: (-h.weight, h.category, h.grid))
    return HotspotResult({g: _round(v) for g, v in grid_parts.items()}, hotspots)


def rollup(grid_parts: Mapping[str, float]) -> dict[str, float]:
    """Per-grid values summed into every ancestor: community (12-digit prefix), street (9), district (6)."""
    out: dict[str, float] = {}
    for grid, v in grid_parts.items():
        for n in (6, 9, 12, 15):
            code = grid[:n]
            out[code] = out.get(code, 0.0) + v
    return {k: _round(v) for k, v in out.items()}
