"""GCJ-02 / BD-09 input converted at the edge lands in the right grid — checked against the two published outlines."""

from __future__ import annotations

import json

import pytest
from shapely.geometry import Point, shape

from config.settings import ROOT
from core.coords import crs_name, from_wgs84, to_wgs84

SHARED = ROOT.parent / "shared" / "data" / "geo"


def test_round_trips_are_sub_metre():
    for lon, lat in [(113.90, 22.70), (113.95, 22.78), (114.00, 22.75)]:
        for crs in ("gcj02", "bd09"):
            back = to_wgs84(*from_wgs84(lon, lat, crs), crs)
            assert abs(back[0] - lon) < 1e-5 and abs(back[1] - lat) < 1e-5  # ~1 m
        assert to_wgs84(lon, lat, "WGS-84") == (lon, lat)


def test_points_outside_china_are_left_as_they_are():
    """No offset applies there; near the poles the formulas failed (a push with crs=gcj02 and lat -90 was a 500)."""
    for lon, lat in [(0.0, -90.0), (0.0, 89.99999999999999), (5.43, 59.6), (-180.0, 0.0), (180.0, 90.0)]:
        for crs in ("gcj02", "bd09"):
            assert to_wgs84(lon, lat, crs) == (lon, lat) == from_wgs84(lon, lat, crs)


def test_crs_names():
    assert crs_name("AMap") == "gcj02" and crs_name("baidu") == "bd09" and crs_name("epsg:4326") == "wgs84"
    with pytest.raises(ValueError, match="unknown coordinate system 'utm'.*gcj02"):
        crs_name("utm")


def test_edge_point_from_gcj02_lands_in_the_right_grid(city):
    """A point just inside the district edge, as an AMap user would send it (GCJ-02).

    Expected values come from the published outlines themselves, not from our conversion: the point
    is inside the GCJ-02 outline in GCJ-02 coordinates, and its WGS84 conversion must be inside the
    WGS84 outline and in the grid that holds it. Read raw (without conversion) it falls outside.
    """
    gcj_file = SHARED / "guangming_district_gcj02.geojson"
    wgs_file = SHARED / "guangming_district_wgs84.geojson"
    if not gcj_file.exists():
        pytest.skip(f"{gcj_file.name} not found beside the project (shared/data/geo)")
    gcj_outline = shape(json.loads(gcj_file.read_text())["features"][0]["geometry"])
    wgs_outline = shape(json.loads(wgs_file.read_text())["features"][0]["geometry"])
    geo = city.geography
    checked = 0
    # Walk the GCJ-02 boundary; take points 100 m inside it where the raw numbers fall outside the WGS84 outline.
    ring = max(gcj_outline.geoms, key=lambda p: p.area).exterior if hasattr(gcj_outline, "geoms") else gcj_outline.exterior
    inner = gcj_outline.buffer(-0.001)  # ~100 m
    for i in range(400):
        p = ring.interpolate(i / 400, normalized=True)
        q = inner.exterior.interpolate(inner.exterior.project(p)) if inner.geom_type == "Polygon" else None
        if q is None or not gcj_outline.contains(q):
            continue
        raw_outside = not wgs_outline.contains(Point(q.x, q.y))
        if not raw_outside:
            continue
        lon, lat = to_wgs84(q.x, q.y, "gcj02")
        assert wgs_outline.contains(Point(lon, lat)), (q.x, q.y)
        grid = geo.locate(lon, lat)
        assert grid is not None
        assert geo.geometry(grid).covers(Point(lon, lat))
        assert geo.locate(q.x, q.y) is None  # unconverted: outside the city
        checked += 1
    assert checked >= 5
