"""Chinese coordinate systems: GCJ-02 ("Mars", AMap/Tencent) and BD-09 (Baidu) to WGS84.

Every feed declares the system its coordinates are in; conversion to WGS84 happens at the edge,
in the feed, before anything is published (and so before grid assignment). The arithmetic is the
public-domain ``prcoords`` library; its iterative inverse ("bored") is accurate to well under a
metre, where the one-step inverse is off by up to a few metres.
"""

from __future__ import annotations

from typing import Literal

import prcoords

CRS = Literal["wgs84", "gcj02", "bd09"]
CRS_NAMES: tuple[str, ...] = ("wgs84", "gcj02", "bd09")
_ALIASES = {
    "wgs84": "wgs84", "wgs-84": "wgs84", "epsg:4326": "wgs84", "4326": "wgs84", "gps": "wgs84",
    "gcj02": "gcj02", "gcj-02": "gcj02", "mars": "gcj02", "amap": "gcj02", "tencent": "gcj02",
    "bd09": "bd09", "bd-09": "bd09", "baidu": "bd09",
}


def crs_name(value: str) -> str:
    """The canonical name of a coordinate system (ValueError naming the accepted ones)."""
    name = _ALIASES.get(str(value).strip().lower())
    if name is None:
        raise ValueError(f"unknown coordinate system {value!r}; use one of: {', '.join(CRS_NAMES)}")
    return name


def in_china(lon: float, lat: float) -> bool:
    """Whether GCJ-02 and BD-09 offsets apply at (lon, lat): prcoords' box around China. Outside it the offset
    formulas mean nothing, and near the poles they fail (math domain errors), so points there are left as they are."""
    return prcoords.sanity_in_china_p(prcoords.Coords(lat, lon))


def to_wgs84(lon: float, lat: float, crs: str) -> tuple[float, float]:
    """(lon, lat) in WGS84. Points outside China (``in_china``) are returned unchanged (the offsets only apply
    inside)."""
    crs = crs_name(crs)
    if crs == "wgs84" or not in_china(lon, lat):
        return lon, lat
    if crs == "gcj02":
        c = prcoords.gcj_wgs_bored(prcoords.Coords(lat, lon), check_china=False)
    else:
        c = prcoords.bd_wgs_bored(prcoords.Coords(lat, lon), check_china=False)
    return c.lon, c.lat


def from_wgs84(lon: float, lat: float, crs: str) -> tuple[float, float]:
    """(lon, lat) in ``crs`` from WGS84 (for tests and for drawing on GCJ-02 tile servers); unchanged outside China."""
    crs = crs_name(crs)
    if crs == "wgs84" or not in_china(lon, lat):
        return lon, lat
    c = prcoords.Coords(lat, lon)
    out = prcoords.wgs_gcj(c, check_china=False) if crs == "gcj02" else prcoords.wgs_bd(c, check_china=False)
    return out.lon, out.lat
