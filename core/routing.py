"""智能分拨: which departments a case without departments goes to, by rules matched in order.

A rule matches on the case's 小类 or 大类, its area (a street, community or grid code prefix), its grid's kind, its
source, its grade and whether it arrived in office hours; every condition a rule leaves out matches anything. The
first rule that matches and can name its departments routes the case. Lead departments may be ``@street``: the
street-level unit (街道综合执法队) of the case's own street; a rule whose street has none does not apply. After the
configured rules, each 小类's own department is the default. Pure: the caller supplies the facts and the tables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

STREET_UNIT = "@street"  # in a rule's lead or summon: the case's own street's unit
DEFAULT_RULE = "default"  # the name of the fallback: the 小类's own department


@dataclass(frozen=True)
class Match:
    """What a rule asks of a case; an empty condition asks nothing."""

    categories: frozenset[str] = frozenset()  # 小类 (4 digits) or 大类 (2 digits)
    areas: tuple[str, ...] = ()  # street, community or grid code: the case's grid lies within one
    kinds: frozenset[str] = frozenset()  # grid kinds (村宅小区 …)
    sources: frozenset[str] = frozenset()
    grades: frozenset[int] = frozenset()
    office_hours: bool | None = None  # True: in office hours only; False: outside them only


@dataclass(frozen=True)
class Rule:
    name: str
    match: Match
    lead: tuple[str, ...]
    summon: tuple[str, ...] = ()
    onsite: bool | None = None  # may the grid worker handle it on the spot (巡办合一); None: the 小类's own rule
    manual: bool = False  # the rule sends what it matches to a dispatcher (待分拨) instead of a department


@dataclass(frozen=True)
class Config:
    """The routing file: its rules, and the sources whose cases arriving without departments Gridwatch routes (the
    others dispatch their own, as a 12345 system that routes its cases does)."""

    rules: tuple[Rule, ...]
    sources: frozenset[str]


AUTO_ACTOR = "gridwatch"  # the actor of the events the router publishes
AUTO_KEY = "auto:"  # their event ids start so: register, dispatch, whistle, unrouted
UNROUTED_KEY = f"{AUTO_KEY}unrouted"  # the note on a case no rule routes: it waits for a dispatcher (待分拨)
_NOTE_HEAD = "智能分拨 · 规则「"


def auto_note(rule: str) -> str:
    """The note of an automatic dispatch: which rule routed the case (rule_of reads it back)."""
    return f"{_NOTE_HEAD}{rule}」"


def rule_of(note: str | None) -> str | None:
    """The rule an automatic dispatch's note names, or None for any other note."""
    if not note or not note.startswith(_NOTE_HEAD) or not note.endswith("」"):
        return None
    return note[len(_NOTE_HEAD):-1]


@dataclass(frozen=True)
class Facts:
    """What routing looks at in a case."""

    category: str
    grid_code: str | None
    grid_kind: str | None
    source: str
    grade: int
    office_hours: bool


@dataclass(frozen=True)
class Routing:
    rule: str
    lead: tuple[str, ...]
    summon: tuple[str, ...]
    onsite: bool
    why: tuple[str, ...] = field(default_factory=tuple)  # each rule tried before it, and why it did not fire

    @property
    def routed(self) -> bool:
        """False: no rule could name a department, the case waits for a dispatcher (待分拨)."""
        return bool(self.lead)


@dataclass(frozen=True)
class Tables:
    """The city's part: each 小类's department and on-the-spot rule, and each street's unit."""

    category_department: Mapping[str, str]
    category_onsite: Mapping[str, bool]
    street_units: Mapping[str, str]  # 9-digit street code → department code


def mismatch(m: Match, f: Facts) -> str | None:
    """Why ``f`` does not meet ``m`` (the first condition it fails), or None when it does."""
    if m.categories and f.category not in m.categories and f.category[:2] not in m.categories:
        return f"category {f.category} is not one of {', '.join(sorted(m.categories))}"
    if m.areas and not (f.grid_code and any(f.grid_code.startswith(a) for a in m.areas)):
        return f"grid {f.grid_code or '(unlocated)'} lies in none of {', '.join(m.areas)}"
    if m.kinds and f.grid_kind not in m.kinds:
        return f"grid kind {f.grid_kind or '(none)'} is not one of {', '.join(sorted(m.kinds))}"
    if m.sources and f.source not in m.sources:
        return f"source {f.source} is not one of {', '.join(sorted(m.sources))}"
    if m.grades and f.grade not in m.grades:
        return f"grade {f.grade} is not one of {', '.join(map(str, sorted(m.grades)))}"
    if m.office_hours is not None and m.office_hours != f.office_hours:
        return "it arrived outside office hours" if m.office_hours else "it arrived in office hours"
    return None


def _resolve(codes: Sequence[str], f: Facts, t: Tables) -> tuple[tuple[str, ...], str | None]:
    """The department codes with ``@street`` replaced by the case's street's unit, or why that cannot be done."""
    out: list[str] = []
    for code in codes:
        if code != STREET_UNIT:
            out.append(code)
            continue
        street = f.grid_code[:9] if f.grid_code else None
        unit = t.street_units.get(street) if street else None
        if unit is None:
            return (), f"street {street or '(unlocated)'} has no street-level unit for {STREET_UNIT}"
        out.append(unit)
    return tuple(dict.fromkeys(out)), None


def route(rules: Sequence[Rule], f: Facts, t: Tables) -> Routing:
    """The first rule that routes ``f``, else the 小类's own department; unrouted (待分拨) when nothing can."""
    why: list[str] = []
    for rule in rules:
        reason = mismatch(rule.match, f)
        if reason is None and rule.manual:
            why.append(f"{rule.name}: sends it to a dispatcher")
            return Routing(rule.name, (), (), False, tuple(why))
        if reason is None:
            lead, reason = _resolve(rule.lead, f, t)
        if reason is None:
            summon, reason = _resolve(rule.summon, f, t)
        if reason is None:
            onsite = rule.onsite if rule.onsite is not None else t.category_onsite.get(f.category, False)
            return Routing(rule.name, lead, tuple(d for d in summon if d not in lead), onsite, tuple(why))
        why.append(f"{rule.name}: {reason}")
    department = t.category_department.get(f.category)
    if department is None:
        why.append(f"{DEFAULT_RULE}: category {f.category} names no department")
        return Routing("", (), (), False, tuple(why))
    return Routing(DEFAULT_RULE, (department,), (), t.category_onsite.get(f.category, False), tuple(why))


def auto_events(source: str, external_id: str, r: Routing, at: datetime) -> list[dict[str, Any]]:
    """The case events that carry out routing ``r`` for the case (source, external_id) at ``at``: 立案 register,
    派遣 dispatch to the lead and 吹哨 whistle to the summoned (the dispatch's note naming the rule), or, for a case
    nothing routes, a note saying why it waits for a dispatcher. Fixed event ids: publishing them again changes
    nothing."""
    base = {"source": source, "external_id": external_id, "occurred_at": at.isoformat(), "actor": AUTO_ACTOR}
    if not r.routed:
        why = r.why[-1] if r.why else "no rule applies"
        return [{**base, "event": "note", "event_id": UNROUTED_KEY,
                 "note": f"待分拨：智能分拨未能确定承办部门（{why}），请人工分拨"}]
    out = [{**base, "event": "register", "event_id": f"{AUTO_KEY}register"},
           {**base, "event": "dispatch", "event_id": f"{AUTO_KEY}dispatch", "departments": list(r.lead),
            "note": auto_note(r.rule)}]
    if r.summon:
        out.append({**base, "event": "whistle", "event_id": f"{AUTO_KEY}whistle", "departments": list(r.summon),
                    "note": auto_note(r.rule)})
    return out
