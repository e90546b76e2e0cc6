"""The generated demo city (config/city/*.geojson) and core.geography on it."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import box, shape

from config.city import load_city
from core.geography import (
    GRID_KINDS,
    Area,
    Geography,
    ancestors,
    is_within,
    level_of,
    parent_of,
    usable_point,
)

ROOT = Path(__file__).resolve().parents[1]
CITY = ROOT / "config" / "city"
FILES = {"district": "district.geojson", "street": "streets.geojson", "community": "communities.geojson", "grid": "grids.geojson"}


def _read(level: str) -> list[tuple[dict, shapely.Geometry]]:
    data = json.loads((CITY / FILES[level]).read_text(encoding="utf-8"))
    return [(f["properties"], shape(f["geometry"])) for f in data["features"]]


@pytest.fixture(scope="module")
def layers() -> dict[str, list[tuple[dict, shapely.Geometry]]]:
    return {level: _read(level) for level in FILES}


@pytest.fixture(scope="module")
def geo() -> Geography:
    return load_city(CITY).geography


# --------------------------------------------------------------------------- the generated files


def test_counts(layers):
    assert [len(layers[k]) for k in FILES] == [1, 6, 31, 126]


def test_properties_and_codes_nest(layers):
    codes = {k: {p["code"] for p, _ in layers[k]} for k in FILES}
    assert codes["district"] == {"440311"}
    for level, parent_level in (("street", "district"), ("community", "street"), ("grid", "community")):
        for props, _ in layers[level]:
            assert props["level"] == level
            assert props["parent"] == props["code"][:-3]
            assert props["parent"] in codes[parent_level]
            assert props["synthetic"] is True
            assert (props["kind"] in GRID_KINDS) if level == "grid" else props["kind"] is None
    assert layers["district"][0][0]["synthetic"] is False
    for props, _ in layers["community"]:
        n = sum(1 for p, _ in layers["grid"] if p["parent"] == props["code"])
        assert 3 <= n <= 6, props
    names = [p["name"] for p, _ in layers["street"]]
    assert names == ["光明街道", "公明街道", "新湖街道", "凤凰街道", "玉塘街道", "马田街道"]
    for street, _ in layers["street"]:
        community_names = [p["name"] for p, _ in layers["community"] if p["parent"] == street["code"]]
        assert len(community_names) == len(set(community_names))
    assert {p["kind"] for p, _ in layers["grid"]} == set(GRID_KINDS)


def test_geometries_valid_and_rounded(layers):
    for level in FILES:
        for props, g in layers[level]:
            assert g.is_valid and not g.is_empty and g.geom_type in ("Polygon", "MultiPolygon"), props
            coords = shapely.get_coordinates(g)
            assert np.allclose(coords, np.round(coords, 6), rtol=0, atol=1e-12)


@pytest.mark.parametrize(("parent_level", "child_level"), [("district", "street"), ("street", "community"), ("community", "grid")])
def test_children_tile_their_parent(layers, parent_level, child_level):
    for props, parent in layers[parent_level]:
        children = [g for p, g in layers[child_level] if p["parent"] == props["code"]]
        assert children
        total = sum(g.area for g in children)
        assert math.isclose(total, parent.area, rel_tol=1e-6), props
        union = shapely.union_all(children)
        assert union.symmetric_difference(parent).area <= 1e-9 * parent.area, props
        for a, b in itertools.combinations(children, 2):
            assert a.intersection(b).area <= 1e-9


def test_district_is_the_real_outline(layers):
    district = layers["district"][0][1]
    streets = shapely.union_all([g for _, g in layers["street"]])
    assert math.isclose(streets.area, district.area, rel_tol=1e-6)
    # ~156 km² at 22.76°N: 1 deg² ≈ 111.32² · cos(lat) km²
    km2 = district.area * 111.32 * 110.57 * math.cos(math.radians(22.76))
    assert 150 < km2 < 162
    outline = ROOT.parent / "shared" / "data" / "geo" / "guangming_district_wgs84.geojson"
    if outline.is_file():
        real = shape(json.loads(outline.read_text(encoding="utf-8"))["features"][0]["geometry"])
        assert real.symmetric_difference(district).area < 1e-4 * real.area  # rounding to 6 decimals


def test_generator_is_deterministic(tmp_path):
    """Re-running the generator reproduces the committed files byte for byte."""
    outline = ROOT.parent / "shared" / "data" / "geo" / "guangming_district_wgs84.geojson"
    if not outline.is_file():
        pytest.skip("the real outline is not available in this checkout")
    from scripts.generate_city import main

    assert main(["--outline", str(outline), "--out", str(tmp_path)]) == 0
    for name in FILES.values():
        assert (tmp_path / name).read_bytes() == (CITY / name).read_bytes(), name


# --------------------------------------------------------------------------- Geography on the demo city


def test_geography_tree(geo):
    assert geo.district.code == "440311" and geo.district.name == "光明区"
    assert [len(geo.areas(level)) for level in ("district", "street", "community", "grid")] == [1, 6, 31, 126]
    streets = geo.children("440311")
    assert [a.code for a in streets] == sorted(a.code for a in streets)
    assert sum(len(geo.children(s.code)) for s in streets) == 31
    grid = geo.areas("grid")[0]
    assert geo.area(grid.code) is grid and geo.get(grid.code) is grid
    assert grid.kind in GRID_KINDS and grid.parent == grid.code[:12]
    assert geo.get("440311999") is None
    with pytest.raises(KeyError):
        geo.area("440311999")
    for a in geo.areas("community"):
        assert geo.geometry(a.code).covers(shapely.Point(a.centroid))
    x0, y0, x1, y1 = geo.bounds
    assert 113.8 < x0 < x1 < 114.1 and 22.6 < y0 < y1 < 22.9
    assert len(geo.grids_within("440311001")) == sum(len(geo.children(c.code)) for c in geo.children("440311001"))


def test_locate_representative_points(geo, layers):
    for props, g in layers["grid"]:
        p = g.point_on_surface()
        assert geo.locate(p.x, p.y) == props["code"]


def test_locate_many_matches_brute_force(geo, layers):
    rng = np.random.default_rng(20240601)
    x0, y0, x1, y1 = geo.bounds
    lons = rng.uniform(x0, x1, 2000)
    lats = rng.uniform(y0, y1, 2000)
    grids = sorted(layers["grid"], key=lambda pg: pg[0]["code"])
    expected = []
    for lon, lat in zip(lons, lats, strict=True):
        pt = shapely.Point(lon, lat)
        expected.append(next((p["code"] for p, g in grids if g.covers(pt)), None))
    assert any(e is None for e in expected) and sum(e is not None for e in expected) > 1000
    assert geo.locate_many(lons, lats) == expected
    assert [geo.locate(x, y) for x, y in zip(lons[:300], lats[:300], strict=True)] == expected[:300]


def test_locate_outside_and_unusable(geo):
    assert geo.locate(113.0, 22.0) is None  # in the sea, far from the district
    assert geo.locate(113.93, 22.50) is None  # Shenzhen Bay
    assert geo.locate(0, 0) is None
    assert geo.locate(float("nan"), 22.7) is None
    assert geo.locate_many([113.0, float("nan"), 0.0], [22.0, 22.7, 0.0]) == [None, None, None]
    assert geo.locate_many([], []) == []


def test_shared_border_point_goes_to_lowest_code(geo, layers):
    grids = sorted(layers["grid"], key=lambda pg: pg[0]["code"])
    checked = 0
    for (_, a), (_, b) in itertools.combinations(grids, 2):
        edge = a.intersection(b)
        if edge.length == 0:
            continue
        mid = edge.interpolate(0.5, normalized=True)
        covering = sorted(p["code"] for p, g in grids if g.covers(mid))
        assert geo.locate(mid.x, mid.y) == covering[0]
        assert geo.locate_many([mid.x], [mid.y]) == [covering[0]]
        checked += 1
        if checked >= 25:
            break
    assert checked == 25


# --------------------------------------------------------------------------- pure functions


def test_codes():
    assert level_of("440311") == "district"
    assert level_of("440311001") == "street"
    assert level_of("440311001002") == "community"
    assert level_of("440311001002003") == "grid"
    assert ancestors("440311001002003") == ["440311", "440311001", "440311001002", "440311001002003"]
    assert ancestors("440311") == ["440311"]
    assert parent_of("440311001002003") == "440311001002"
    assert parent_of("440311001") == "440311"
    assert parent_of("440311") is None
    assert is_within("440311001002003", "440311001") and not is_within("440311002002003", "440311001")
    for bad in ("", "4403", "4403110010", "44031100100200300", "44031a", "４４０３１１", None, 440311):
        with pytest.raises(ValueError, match="area code"):
            level_of(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            ancestors(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            parent_of(bad)  # type: ignore[arg-type]


def test_usable_point():
    assert usable_point(113.93, 22.77)
    assert usable_point(2.35, 48.85)  # usable, just not in this city
    assert usable_point("113.93", "22.77")
    for lon, lat in [
        (0, 0), (0.0, 22.7), (113.9, 0.0), (1e-9, 22.7), (1, 1), (-1, -1), (999, 999),
        (float("nan"), 22.7), (113.9, float("inf")), (None, 22.7), (113.9, None),
        (113.9, 91), (181, 22.7), (-181, 22.7), (113.9, -90.5), ("x", 22.7), (True, True),
    ]:
        assert not usable_point(lon, lat), (lon, lat)


def test_geography_border_rule_on_squares():
    """Two unit squares sharing an edge, plus a corner square: border points go to the lowest code."""
    district = Area("110101", "区", "district")
    street = Area("110101001", "街道", "street", parent="110101")
    community = Area("110101001001", "社区", "community", parent="110101001")
    g1 = Area("110101001001002", "网格2", "grid", parent="110101001001", kind="商贸")
    g2 = Area("110101001001001", "网格1", "grid", parent="110101001001", kind="商贸")
    everything = box(10, 10, 12, 11)
    geo = Geography(
        [
            (district, everything), (street, everything), (community, everything),
            (g1, box(10, 10, 11, 11)), (g2, box(11, 10, 12, 11)),
        ]
    )
    assert geo.locate(10.5, 10.5) == "110101001001002"
    assert geo.locate(11.5, 10.5) == "110101001001001"
    assert geo.locate(11.0, 10.5) == "110101001001001"  # the shared edge: lowest code
    assert geo.locate(10.0, 10.5) == "110101001001002"  # outer edge belongs to its grid
    assert geo.locate(12.5, 10.5) is None
    assert geo.locate_many([11.0, 10.5, 13], [10.5, 10.5, 10.5]) == ["110101001001001", "110101001001002", None]
    assert [a.code for a in geo.children("110101001001")] == ["110101001001001", "110101001001002"]
    with pytest.raises(ValueError, match="twice"):
        Geography([(district, everything), (district, everything)])
    with pytest.raises(ValueError, match="parent"):
        Geography([(district, everything), (Area("110101001", "街道", "street", parent="110102"), everything)])
