"""The risk model's configuration (config/risk.yaml), validated at start into a core.risk.RiskModel."""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Any

from config.files import ConfigFileError, read_yaml, shown
from config.settings import get_settings
from core.livestate import RECENT_HORIZON_HOURS
from core.risk import AREA_LEVELS, GRADES, HotspotRule, RiskModel

TOP_KEYS = ("grade_weights", "overdue_multiplier", "alarm_weight", "offline_weight", "hotspot", "thresholds")
HOTSPOT_KEYS = ("radius_m", "window_hours", "min_cases", "weight", "half_life_hours")
MAX_RADIUS_M = 5000


class RiskConfigError(ConfigFileError):
    pass


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


class _Reader:
    """The file's name for messages and the problems found so far."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.problems: list[str] = []

    def add(self, msg: str) -> None:
        self.problems.append(f"{self.where}: {msg}")

    def positive(self, key: str, value: Any, fallback: float, minimum: float = 0.0, strict: bool = False) -> float:
        if value is None:
            return fallback
        x = _number(value)
        if x is None or x < minimum or (strict and x == minimum):
            bound = f"greater than {minimum:g}" if strict else f"at least {minimum:g}"
            self.add(f"{key}: {value!r} is not a number {bound}; write e.g. {fallback:g}")
            return fallback
        return x


def _grade_weights(r: _Reader, raw: Any, weights: dict[int, float]) -> dict[int, float]:
    weights = dict(weights)
    if raw is None:
        return weights
    if not isinstance(raw, dict):
        r.add("grade_weights: must map each grade 1..4 to a weight, e.g. {1: 1, 2: 3, 3: 6, 4: 10}")
        return weights
    for g, v in raw.items():
        if g not in GRADES:
            r.add(f"grade_weights.{g}: not a grade; the grades are 1, 2, 3, 4 (蓝/黄/橙/红, config/city/grades.yaml)")
            continue
        weights[g] = r.positive(f"grade_weights.{g}", v, weights[g])
    missing = [g for g in GRADES if g not in raw]
    if missing:
        r.add(f"grade_weights: no weight for grade(s) {', '.join(map(str, missing))}; give all four grades a weight")
    return weights


def _hotspot(r: _Reader, raw: Any, rule: HotspotRule) -> HotspotRule:
    if raw is None:
        return rule
    if not isinstance(raw, dict):
        r.add(f"hotspot: must be a mapping with the keys {', '.join(HOTSPOT_KEYS)}")
        raw = {}
    for key in raw:
        if key not in HOTSPOT_KEYS:
            r.add(f"hotspot.{key}: unknown key — use only {', '.join(HOTSPOT_KEYS)}")
    radius = r.positive("hotspot.radius_m", raw.get("radius_m"), rule.radius_m, strict=True)
    if radius > MAX_RADIUS_M:
        r.add(f"hotspot.radius_m: {radius:g} m is not one spot; use at most {MAX_RADIUS_M} m")
    window = r.positive("hotspot.window_hours", raw.get("window_hours"), rule.window_hours, strict=True)
    if window > RECENT_HORIZON_HOURS:
        r.add(f"hotspot.window_hours: {window:g} is longer than the {RECENT_HORIZON_HOURS} hours of reports the "
              "live state keeps; use at most that")
    min_cases = raw.get("min_cases", rule.min_cases)
    if isinstance(min_cases, bool) or not isinstance(min_cases, int) or min_cases < 2:
        r.add(f"hotspot.min_cases: {min_cases!r} is not a whole number of at least 2; write e.g. 3")
        min_cases = rule.min_cases
    weight = r.positive("hotspot.weight", raw.get("weight"), rule.weight)
    half_life = r.positive("hotspot.half_life_hours", raw.get("half_life_hours"), rule.half_life_hours, strict=True)
    return HotspotRule(radius_m=radius, window_hours=window, min_cases=min_cases, weight=weight,
                       half_life_hours=half_life)


def _thresholds(r: _Reader, raw: Any, thresholds: dict[str, tuple[float, float, float]]) -> dict:
    thresholds = dict(thresholds)
    if raw is None:
        return thresholds
    if not isinstance(raw, dict):
        r.add(f"thresholds: must map each area level ({', '.join(AREA_LEVELS)}) to three scores [黄, 橙, 红]")
        raw = {}
    for level, value in raw.items():
        if level not in AREA_LEVELS:
            r.add(f"thresholds.{level}: not an area level; use {', '.join(AREA_LEVELS)}")
            continue
        nums = [_number(v) for v in value] if isinstance(value, list) else []
        if len(nums) != 3 or any(x is None or x <= 0 for x in nums) or not nums[0] < nums[1] < nums[2]:
            r.add(f"thresholds.{level}: {value!r} is not three rising positive scores [黄, 橙, 红]; write e.g. [10, 25, 50]")
            continue
        thresholds[level] = (nums[0], nums[1], nums[2])
    missing = [lv for lv in AREA_LEVELS if lv not in raw]
    if missing:
        r.add(f"thresholds: no thresholds for {', '.join(missing)}; give every area level its three scores")
    return thresholds


def load_risk_model(path: Path | str | None = None) -> RiskModel:
    """The model in the file; every key may be left out (its default applies). RiskConfigError names the file,
    the key and the fix, for every problem at once."""
    path = Path(path or get_settings().risk_file)
    where = shown(path)
    data = read_yaml(path, RiskConfigError)
    if data is None:
        raise RiskConfigError([f"{where}: file not found — restore config/risk.yaml or point RISK_FILE at a copy"])
    if not isinstance(data, dict):
        raise RiskConfigError([f"{where}: expected a mapping with the keys {', '.join(TOP_KEYS)}"])
    r = _Reader(where)
    default = RiskModel()
    for key in data:
        if key not in TOP_KEYS:
            r.add(f"{key}: unknown key — use only {', '.join(TOP_KEYS)} (see the comments in the file)")
    weights = _grade_weights(r, data.get("grade_weights"), default.grade_weights)
    multiplier = r.positive("overdue_multiplier", data.get("overdue_multiplier"), default.overdue_multiplier, 1.0)
    alarm = r.positive("alarm_weight", data.get("alarm_weight"), default.alarm_weight)
    offline = r.positive("offline_weight", data.get("offline_weight"), default.offline_weight)
    rule = _hotspot(r, data.get("hotspot"), default.hotspot)
    thresholds = _thresholds(r, data.get("thresholds"), default.thresholds)
    if r.problems:
        raise RiskConfigError(r.problems)
    return RiskModel(grade_weights=weights, overdue_multiplier=multiplier, alarm_weight=alarm, offline_weight=offline,
                     hotspot=rule, thresholds=thresholds)


@lru_cache(maxsize=4)
def _cached(path: str) -> RiskModel:
    return load_risk_model(path)


def get_risk_model(path: Path | str | None = None) -> RiskModel:
    return _cached(str(Path(path or get_settings().risk_file).resolve()))
