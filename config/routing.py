"""The routing rules (智能分拨) from config/routing.yaml, validated at start: errors name the file, the rule and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from config import settings as config_settings
from config.city import City
from config.files import ConfigFileError, read_yaml, shown
from core.geography import GRID_KINDS
from core.routing import STREET_UNIT, Config, Match, Rule, Tables

MATCH_KEYS = ("category", "area", "kind", "source", "grade", "office_hours")
RULE_KEYS = ("name", "when", "lead", "summon", "onsite", "manual")
TOP_KEYS = ("auto_sources", "rules")
DEFAULT_SOURCES = ("citizen", "sensor")


class RoutingConfigError(ConfigFileError):
    pass


def _list(value: Any) -> list:
    return [] if value is None else list(value) if isinstance(value, list | tuple) else [value]


def _unknown(at: str, values: list, known, message: str, problems: list[str]) -> None:
    problems.extend(f"{at}: {message.format(v=v)}" for v in values if v not in known)


def _match(when: Any, at: str, city: City, problems: list[str]) -> Match:
    if when is None:
        return Match()
    if not isinstance(when, dict):
        problems.append(f"{at}: when: expected a mapping of {', '.join(MATCH_KEYS)}")
        return Match()
    for key in sorted(set(when) - set(MATCH_KEYS)):
        problems.append(f"{at}: when: unknown key {key!r}; use {', '.join(MATCH_KEYS)}")
    cats = [str(c) for c in _list(when.get("category"))]
    areas = [str(a) for a in _list(when.get("area"))]
    kinds = [str(k) for k in _list(when.get("kind"))]
    grades = _list(when.get("grade"))
    _unknown(at, cats, set(city.categories) | {g.code for g in city.groups},
             "category {v!r} is neither a 小类 nor a 大类 of config/city/categories.yaml", problems)
    _unknown(at, areas, {a.code for level in ("street", "community", "grid") for a in city.geography.areas(level)},
             "area {v!r} is not a street, community or grid code of the city", problems)
    _unknown(at, kinds, GRID_KINDS, "kind {v!r} is not a grid kind; use one of " + ", ".join(GRID_KINDS), problems)
    _unknown(at, grades, city.grades, "grade {v!r} is not one of " + ", ".join(map(str, sorted(city.grades))),
             problems)
    office = when.get("office_hours")
    if office is not None and not isinstance(office, bool):
        problems.append(f"{at}: office_hours: true (in office hours only) or false (outside them only)")
        office = None
    return Match(frozenset(cats), tuple(areas), frozenset(kinds), frozenset(map(str, _list(when.get("source")))),
                 frozenset(g for g in grades if isinstance(g, int)), office)


def _departments(value: Any, key: str, at: str, city: City, problems: list[str]) -> tuple[str, ...]:
    codes = [str(c) for c in _list(value)]
    for c in codes:
        if c != STREET_UNIT and c not in city.departments:
            problems.append(f"{at}: {key}: unknown department {c!r}; use a code of config/city/departments.yaml "
                            f"or {STREET_UNIT} for the case's own street's unit")
    return tuple(codes)


def _rule(i: int, entry: Any, where: str, city: City, problems: list[str]) -> Rule | None:
    if not isinstance(entry, dict):
        problems.append(f"{where}: rules[{i}]: expected a mapping with {', '.join(RULE_KEYS)}")
        return None
    name = str(entry.get("name") or f"rule {i + 1}")
    at = f"{where}: rule {name!r}"
    for key in sorted(set(entry) - set(RULE_KEYS)):
        problems.append(f"{at}: unknown key {key!r}; use {', '.join(RULE_KEYS)}")
    match = _match(entry.get("when"), at, city, problems)
    lead = _departments(entry.get("lead"), "lead", at, city, problems)
    manual = entry.get("manual", False)
    if not isinstance(manual, bool):
        problems.append(f"{at}: manual: true (send what the rule matches to a dispatcher) or false")
        manual = False
    if manual and lead:
        problems.append(f"{at}: manual: a rule that sends cases to a dispatcher names no lead; remove one")
    elif not lead and not manual:
        problems.append(f"{at}: lead: name at least one department (or manual: true for a dispatcher)")
    summon = _departments(entry.get("summon"), "summon", at, city, problems)
    onsite = entry.get("onsite")
    if onsite is not None and not isinstance(onsite, bool):
        problems.append(f"{at}: onsite: true or false (omit it to follow the 小类)")
        onsite = None
    return Rule(name, match, lead, summon, onsite, manual)


def load_routing(city: City, path: Path | str | None = None) -> list[Rule]:
    """The rules in order; an absent file means none (every case goes to its 小类's department)."""
    return list(load_routing_config(city, path).rules)


def _sources(value: Any, where: str, problems: list[str]) -> frozenset[str]:
    if value is None:
        return frozenset(DEFAULT_SOURCES)
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        problems.append(f"{where}: auto_sources: a list of feed sources, e.g. [citizen, sensor]")
        return frozenset(DEFAULT_SOURCES)
    return frozenset(value)


def load_routing_config(city: City, path: Path | str | None = None) -> Config:
    """The whole routing file: the rules in order and the sources whose cases are routed (default: citizen and
    sensor); an absent file means no rules."""
    path = Path(path or config_settings.get_settings().routing_file)
    where = shown(path)
    data = read_yaml(path, RoutingConfigError)
    if data is None or data == {}:
        return Config((), frozenset(DEFAULT_SOURCES))
    if not isinstance(data, dict) or not isinstance(data.get("rules", []), list):
        raise RoutingConfigError([f"{where}: expected a mapping with a list of rules under 'rules'"])
    problems: list[str] = [f"{where}: unknown key {k!r}; use {', '.join(TOP_KEYS)}"
                           for k in sorted(set(data) - set(TOP_KEYS))]
    sources = _sources(data.get("auto_sources"), where, problems)
    rules = [_rule(i, e, where, city, problems) for i, e in enumerate(data.get("rules") or [])]
    names = [r.name for r in rules if r is not None]
    problems += [f"{where}: rule name {n!r} is used twice; names say which rule routed a case"
                 for n in sorted({n for n in names if names.count(n) > 1})]
    if problems:
        raise RoutingConfigError(problems)
    return Config(tuple(r for r in rules if r is not None), sources)


def tables_of(city: City) -> Tables:
    """The city's part of routing: each 小类's department and on-the-spot rule, and each street's unit."""
    return Tables({c.code: c.department for c in city.categories.values()},
                  {c.code: c.onsite for c in city.categories.values()},
                  {d.street: d.code for d in city.departments.values() if d.street})
