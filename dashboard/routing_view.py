"""/api/v1/routing: the routing rules (智能分拨) as the router applies them, with departments' names."""

from __future__ import annotations

from typing import Any

from config.city import City
from config.routing import load_routing_config
from config.settings import Settings
from core.routing import DEFAULT_RULE, STREET_UNIT, Rule


def _who(codes: tuple[str, ...], city: City) -> list[dict[str, str]]:
    out = []
    for c in codes:
        if c == STREET_UNIT:
            out.append({"code": c, "name": "本街道综合行政执法队 (the case's own street's unit)"})
        else:
            d = city.departments.get(c)
            out.append({"code": c, "name": d.name if d else c})
    return out


def _rule(n: int, rule: Rule, city: City) -> dict[str, Any]:
    m = rule.match
    when: dict[str, Any] = {}
    for key, value in (("category", sorted(m.categories)), ("area", list(m.areas)), ("kind", sorted(m.kinds)),
                       ("source", sorted(m.sources)), ("grade", sorted(m.grades))):
        if value:
            when[key] = value
    if m.office_hours is not None:
        when["office_hours"] = m.office_hours
    return {"order": n, "name": rule.name, "when": when, "lead": _who(rule.lead, city),
            "summon": _who(rule.summon, city), "onsite": rule.onsite, "manual": rule.manual}


def describe(city: City, settings: Settings) -> dict[str, Any]:
    config = load_routing_config(city, settings.routing_file)
    return {
        "file": settings.routing_file.name,
        "auto_sources": sorted(config.sources),
        "rules": [_rule(n, r, city) for n, r in enumerate(config.rules, 1)],
        "default": {"name": DEFAULT_RULE, "description": "after the rules: each 小类's own department "
                                                        "(config/city/categories.yaml)"},
    }
