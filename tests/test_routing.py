"""智能分拨: routing rules matched in order (core/routing.py), their file (config/routing.py), the dry run."""

from __future__ import annotations

import orjson
import pytest

from config.routing import RoutingConfigError, load_routing, tables_of
from core.routing import STREET_UNIT, Facts, Match, Rule, Tables, route
from ingest.__main__ import main

T = Tables(category_department={"0101": "cg", "0702": "xiaofang", "0601": "yj"},
           category_onsite={"0101": True, "0702": False, "0601": False},
           street_units={"440311001": "zf-001"})
STREET1_GRID, STREET5_GRID = "440311001002003", "440311005001001"


def facts(category="0101", grid=STREET1_GRID, kind="村宅小区", source="citizen", grade=1, office=True) -> Facts:
    return Facts(category, grid, kind, source, grade, office)


RULES = [
    Rule("fire-at-night", Match(categories=frozenset({"0702"}), office_hours=False), ("xiaofang",), ("ga",)),
    Rule("appearance-to-street", Match(categories=frozenset({"01"}), sources=frozenset({"citizen"})), (STREET_UNIT,)),
    Rule("parks-safety", Match(categories=frozenset({"06"}), kinds=frozenset({"企业园区"}), grades=frozenset({1, 2})),
         ("yj",), (STREET_UNIT, "yj"), onsite=True),
    Rule("street-five", Match(areas=("440311005",)), ("cg",)),
]


@pytest.mark.parametrize(("f", "rule", "lead", "summon", "onsite"), [
    (facts(), "appearance-to-street", ("zf-001",), (), True),  # 大类 01 holds 0101; the street's own unit
    (facts(source="hotline12345"), "default", ("cg",), (), True),  # source not matched: the 小类's department
    (facts(grid=STREET5_GRID), "street-five", ("cg",), (), True),  # street 5 has no unit: the next rule applies
    (facts(category="0702", office=False), "fire-at-night", ("xiaofang",), ("ga",), False),
    (facts(category="0702", office=True), "default", ("xiaofang",), (), False),
    (facts(category="0601", kind="企业园区", grade=2), "parks-safety", ("yj",), ("zf-001",), True),  # lead not summoned
    (facts(category="0601", kind="企业园区", grade=3), "default", ("yj",), (), False),
    (facts(grid=None), "default", ("cg",), (), True),  # unlocated: no street, no area
])
def test_the_first_rule_that_can_name_departments_routes_the_case(f, rule, lead, summon, onsite):
    r = route(RULES, f, T)
    assert (r.rule, r.lead, r.summon, r.onsite, r.routed) == (rule, lead, summon, onsite, True)


def test_each_rule_passed_over_says_why():
    r = route(RULES, facts(grid=STREET5_GRID, source="hotline12345", category="0702"), T)
    assert r.rule == "street-five"
    assert r.why == ("fire-at-night: it arrived in office hours",
                     "appearance-to-street: category 0702 is not one of 01",
                     "parks-safety: category 0702 is not one of 06")
    r = route(RULES, facts(grid=STREET5_GRID[:9] + "999999", source="citizen"), T)
    assert "appearance-to-street: street 440311005 has no street-level unit for @street" in r.why


def test_a_case_nothing_can_route_waits_for_a_dispatcher():
    r = route(RULES, facts(category="9999", grid=None), T)
    assert not r.routed and r.lead == () and r.why[-1] == "default: category 9999 names no department"


def test_the_shipped_rules_load_and_name_real_departments(city):
    rules = load_routing(city)
    assert rules and len({r.name for r in rules}) == len(rules)
    known = set(city.departments) | {STREET_UNIT}
    assert all(set(r.lead) | set(r.summon) <= known for r in rules)
    # every street of the demo city has its unit, so @street always resolves there
    assert set(tables_of(city).street_units) == {a.code for a in city.geography.areas("street")}


@pytest.mark.parametrize(("text", "expected"), [
    ("rules: [{name: a, when: {category: '7777'}, lead: [cg]}]", "rule 'a': category '7777' is neither a 小类 nor a 大类"),
    ("rules: [{name: a, lead: [nobody]}]", "rule 'a': lead: unknown department 'nobody'"),
    ("rules: [{name: a, when: {kind: 工厂}, lead: [cg]}]", "rule 'a': kind '工厂' is not a grid kind"),
    ("rules: [{name: a, when: {area: '440311999'}, lead: [cg]}]", "rule 'a': area '440311999' is not a street"),
    ("rules: [{name: a, when: {grade: 7}, lead: [cg]}]", "rule 'a': grade 7 is not one of 1, 2, 3, 4"),
    ("rules: [{name: a, when: {office_hours: maybe}, lead: [cg]}]", "rule 'a': office_hours: true"),
    ("rules: [{name: a, when: {colour: red}, lead: [cg]}]", "rule 'a': when: unknown key 'colour'"),
    ("rules: [{name: a}]", "rule 'a': lead: name at least one department"),
    ("rules: [{name: a, lead: [cg]}, {name: a, lead: [ga]}]", "rule name 'a' is used twice"),
    ("rules: {a: 1}", "expected a mapping with a list of rules under 'rules'"),
    ("rules: [oops", "not valid YAML"),
])
def test_a_broken_rules_file_names_the_file_the_rule_and_the_fix(tmp_path, city, text, expected):
    f = tmp_path / "routing.yaml"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(RoutingConfigError) as err:
        load_routing(city, f)
    assert any(p.startswith("routing.yaml: ") and expected in p for p in err.value.problems), err.value.problems


def test_the_dry_run_explains_each_record(tmp_path, city, capsys):
    grid = city.geography.areas("grid")[0]
    unit = tables_of(city).street_units[grid.code[:9]]
    f = tmp_path / "cases.json"
    f.write_bytes(b"\n".join(orjson.dumps(r) for r in [
        {"external_id": "c1", "category": "0101", "source": "citizen", "lon": grid.centroid[0], "lat": grid.centroid[1]},
        {"external_id": "c2", "category": "9999"},
        {"external_id": "c3"},
    ]))
    assert main(["route", "--explain", str(f)]) == 0
    out = capsys.readouterr().out
    assert f"c1: rule '市容街面-街道执法队' → lead {city.departments[unit].short} ({unit})" in out
    assert "c2: 待分拨 — no rule can route it" in out
    assert "c3: cannot route: a record is a JSON object with at least a category" in out
    f.write_text("{not json\n", encoding="utf-8")
    assert main(["route", "--explain", str(f)]) == 2
    assert "cases.json: line 1 is not JSON" in capsys.readouterr().err
