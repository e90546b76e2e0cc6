"""config/city.py: the shipped city loads; broken copies fail with messages that name file, entry and fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from config.city import City, CityConfigError, Limit, get_city, load_city
from core.geography import GRID_KINDS

ROOT = Path(__file__).resolve().parents[1]
CITY = ROOT / "config" / "city"


@pytest.fixture()
def city_copy(tmp_path: Path) -> Path:
    """A fresh copy of the shipped city to break."""
    dest = tmp_path / "city"
    shutil.copytree(CITY, dest)
    return dest


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"fixture text {old!r} not found exactly once in {path.name}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def _edit_features(path: Path, edit) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data["features"])
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def _error(city_dir: Path) -> str:
    with pytest.raises(CityConfigError) as info:
        load_city(city_dir)
    message = str(info.value)
    assert str(city_dir.parent) not in message, "messages must not carry absolute machine paths"
    return message


# --------------------------------------------------------------------------- the shipped city


def test_shipped_city_loads():
    city = load_city(CITY)
    assert isinstance(city, City)
    assert city.county_code == "440311" and city.name == "光明区"
    assert load_city(CITY) is city  # cached
    assert get_city() is load_city()  # both follow CITY_DIR
    geo = city.geography
    assert [len(geo.areas(level)) for level in ("district", "street", "community", "grid")] == [1, 6, 31, 126]
    assert sorted(city.grades) == [1, 2, 3, 4]
    assert [city.grades[i].color_name for i in (1, 2, 3, 4)] == ["蓝", "黄", "橙", "红"]
    assert city.grades[4].en == "especially major"
    assert len(city.departments) >= 15
    assert {f"zf-00{i}" for i in range(1, 7)} <= set(city.departments)
    assert city.departments["zf-001"].street == "440311001"
    assert 8 <= len(city.groups) <= 14 and 35 <= len(city.categories) <= 60
    for group in city.groups:
        for cat in group.children:
            assert city.categories[cat.code] is cat
            assert cat.parent == group.code and cat.parent_name == group.name
            assert cat.department in city.departments
            assert isinstance(cat.accept_limit, Limit) and isinstance(cat.complete_limit, Limit)
            assert set(cat.kinds or {}) <= set(GRID_KINDS)
    assert city.categories["0102"].name == "乱堆物料"
    assert city.group_of("0102").name == "市容环境"
    assert str(city.categories["0101"].accept_limit) == "2wh"
    assert set(city.sensor_types) == {"smoke", "gas", "water_level", "manhole_tilt", "elevator_entrapment", "camera_ai"}
    for st in city.sensor_types.values():
        assert city.categories[st.category].sensor_only
        assert st.clear_below <= st.threshold
    assert city.sensor_types["gas"].threshold == 20
    assert city.categories["1301"].weight("村宅小区") == 0.0
    assert city.categories["0101"].weight("村宅小区") > city.categories["0101"].weight("山湖林田水") > 0


def test_sources_are_relative():
    city = load_city(CITY)
    assert city.sources["grids.geojson"] == "config/city/grids.geojson"
    assert all(not Path(p).is_absolute() for p in city.sources.values())


def test_city_dir_without_yaml_falls_back_to_default_reference_data(tmp_path):
    dest = tmp_path / "geo-only"
    dest.mkdir()
    for name in ("district", "streets", "communities", "grids"):
        shutil.copy(CITY / f"{name}.geojson", dest)
    city = load_city(dest)
    assert city.sources["categories.yaml"] == "config/city/categories.yaml"
    assert len(city.categories) == len(load_city(CITY).categories)


# --------------------------------------------------------------------------- broken copies


def test_unknown_department(city_copy):
    _replace(
        city_copy / "categories.yaml",
        "name: 乱堆物料, en: Piled materials, default_grade: 1, department: cg,",
        "name: 乱堆物料, en: Piled materials, default_grade: 1, department: cgx,",
    )
    msg = _error(city_copy)
    assert "categories.yaml: category 0102 (乱堆物料): department 'cgx' is not defined in departments.yaml" in msg
    assert "use one of: cg, " in msg


def test_bad_limit(city_copy):
    _replace(
        city_copy / "categories.yaml",
        "department: cg, accept_limit: 2wh, complete_limit: 1wd, onsite: true,\n         kinds: {村宅小区: 8",
        "department: cg, accept_limit: 2x, complete_limit: 1wd, onsite: true,\n         kinds: {村宅小区: 8",
    )
    msg = _error(city_copy)
    assert "categories.yaml: category 0101 (暴露垃圾): accept_limit: bad limit '2x'" in msg
    assert "wh = working hours" in msg and "'30m'" in msg


def test_duplicate_codes(city_copy):
    _replace(city_copy / "categories.yaml", '{code: "0103", name: 占道经营', '{code: "0102", name: 占道经营')
    _replace(city_copy / "departments.yaml", "{code: sw, name: 区水务局", "{code: cg, name: 区水务局")
    msg = _error(city_copy)
    assert "categories.yaml: category 0102 (占道经营): duplicate category code '0102'" in msg
    assert "departments.yaml: department cg (区水务局): duplicate code 'cg'" in msg


def test_all_problems_are_listed(city_copy):
    _replace(city_copy / "sensors.yaml", 'category: "1302"', 'category: "9999"')
    _replace(city_copy / "grades.yaml", 'color: "#FDD835"', 'color: "yellow"')
    _replace(city_copy / "categories.yaml", "name: 火情, en: Fire, default_grade: 3,", "name: 火情, en: Fire, default_grade: 5,")
    err = None
    try:
        load_city(city_copy)
    except CityConfigError as exc:
        err = exc
    assert err is not None and len(err.problems) == 3
    msg = str(err)
    assert "sensors.yaml: sensor type gas (可燃气体): category '9999' is not defined in categories.yaml" in msg
    assert "grades.yaml: grade 2 (较大): color:" in msg
    assert "categories.yaml: category 0702 (火情): default_grade:" in msg


def test_missing_grids_file(city_copy):
    (city_copy / "grids.geojson").unlink()
    msg = _error(city_copy)
    assert "city/grids.geojson: file not found" in msg
    assert "scripts/generate_city.py" in msg


def test_grid_code_does_not_nest(city_copy):
    def edit(features):
        features[0]["properties"]["code"] = "440311001999001"  # parent still says 440311001001

    _edit_features(city_copy / "grids.geojson", edit)
    msg = _error(city_copy)
    assert "grids.geojson: grid 440311001999001" in msg
    assert "does not match the code" in msg and "expected parent '440311001999'" in msg


def test_grid_in_unknown_community(city_copy):
    def edit(features):
        features[0]["properties"]["code"] = "440311001999001"
        features[0]["properties"]["parent"] = "440311001999"

    _edit_features(city_copy / "grids.geojson", edit)
    msg = _error(city_copy)
    assert "grids.geojson: grid 440311001999001" in msg
    assert "community 440311001999 is not in communities.geojson" in msg


def test_bad_grid_kind_and_bad_code(city_copy):
    def edit(features):
        features[1]["properties"]["kind"] = "工厂"
        features[2]["properties"]["code"] = "4403110010010"

    _edit_features(city_copy / "grids.geojson", edit)
    msg = _error(city_copy)
    assert "kind '工厂' is not a grid kind — use one of: 村宅小区, 企业园区, 商贸, 公共设施, 山湖林田水" in msg
    assert "grid 4403110010010" in msg and "6 (district), 9 (street), 12 (community) or 15 (grid) digits" in msg


def test_unknown_field_and_broken_yaml(city_copy):
    _replace(city_copy / "sensors.yaml", "heartbeat_s: 300, category: \"1301\"", "heartbeat: 300, category: \"1301\"")
    (city_copy / "departments.yaml").write_text("departments: [\n", encoding="utf-8")
    msg = _error(city_copy)
    assert "sensors.yaml: sensor type smoke (烟感): heartbeat_s: required field is missing" in msg
    assert "sensors.yaml: sensor type smoke (烟感): heartbeat: unknown field" in msg
    assert "departments.yaml: not valid YAML" in msg
