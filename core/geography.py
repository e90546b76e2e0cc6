"""The city's areas: codes, the district → street → community → grid tree, and point location.

Area codes follow the unit-grid coding practice: a 6-digit county code (GB/T 2260), then 3 digits
for the street, 3 for the community and 3 for the grid. The 6/9/12-digit prefixes of a grid code
are its district, street and community.

Pure domain code: depends only on the standard library, numpy and shapely.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry
from shapely.strtree import STRtree

Level = Literal["district", "street", "community", "grid"]

LEVELS: tuple[Level, ...] = ("district", "street", "community", "grid")
CODE_LENGTHS: dict[int, Level] = {6: "district", 9: "street", 12: "community", 15: "grid"}
LEVEL_LENGTHS: dict[Level, int] = {level: n for n, level in CODE_LENGTHS.items()}

# The five kinds of grid used in all-discipline grid governance.
GRID_KINDS: tuple[str, ...] = ("村宅小区", "企业园区", "商贸", "公共设施", "山湖林田水")

# Coordinates that feeds send when they do not know where something is. Points outside the
# WGS84 range (999, 999 and the like) are rejected by the range check already.
PLACEHOLDER_POINTS: tuple[tuple[float, float], ...] = (
    (0.0, 0.0),
    (1.0, 1.0),
    (-1.0, -1.0),
    (1.0, 0.0),
    (0.0, 1.0),
    (180.0, 90.0),
    (-180.0, -90.0),
    (180.0, -90.0),
    (-180.0, 90.0),
    (999.0, 999.0),
    (-999.0, -999.0),
    (9999.0, 9999.0),
)
_PLACEHOLDER_SET = frozenset(PLACEHOLDER_POINTS)
# |lon| or |lat| below this is a "zero" coordinate: nothing of ours sits on the equator or the prime meridian.
PLACEHOLDER_EPSILON = 1e-6


# --------------------------------------------------------------------------- codes


def level_of(code: str) -> Level:
    """The level of an area code: 6 digits district, 9 street, 12 community, 15 grid."""
    if not isinstance(code, str) or not code.isascii() or not code.isdigit():
        raise ValueError(f"bad area code {code!r}: an area code is a string of 6, 9, 12 or 15 ASCII digits")
    level = CODE_LENGTHS.get(len(code))
    if level is None:
        raise ValueError(
            f"bad area code {code!r}: it has {len(code)} digits; an area code has 6 (district), "
            "9 (street), 12 (community) or 15 (grid) digits"
        )
    return level


def parent_of(code: str) -> str | None:
    """The code of the enclosing area, or None for a district."""
    if level_of(code) == "district":
        return None
    return code[:-3]


def ancestors(code: str) -> list[str]:
    """The codes from the district down to and including ``code``.

    >>> ancestors("440311001002003")
    ['440311', '440311001', '440311001002', '440311001002003']
    """
    level_of(code)
    return [code[:n] for n in range(6, len(code) + 1, 3)]


def is_within(code: str, scope: str) -> bool:
    """True if the area ``code`` is ``scope`` or lies inside it (by code)."""
    level_of(code)
    level_of(scope)
    return code.startswith(scope)


# --------------------------------------------------------------------------- points


def usable_point(lon: object, lat: object) -> bool:
    """True if (lon, lat) looks like a real WGS84 position.

    False for missing values (None, NaN, infinity, non-numbers), values outside the WGS84 range,
    a zero longitude or latitude (|x| < 1e-6, the usual "unknown" placeholder) and the other
    placeholders in PLACEHOLDER_POINTS. A usable point may still lie outside the city.
    """
    if lon is None or lat is None or isinstance(lon, bool) or isinstance(lat, bool):
        return False
    try:
        x = float(lon)  # type: ignore[arg-type]
        y = float(lat)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    if not (math.isfinite(x) and math.isfinite(y)):
        return False
    if not (-180.0 <= x <= 180.0 and -90.0 <= y <= 90.0):
        return False
    if abs(x) < PLACEHOLDER_EPSILON or abs(y) < PLACEHOLDER_EPSILON:
        return False
    return (x, y) not in _PLACEHOLDER_SET


# --------------------------------------------------------------------------- areas


@dataclass(frozen=True)
class Area:
    """One area of the city. Its geometry lives in Geography (``Geography.geometry(code)``)."""

    code: str
    name: str
    level: Level
    parent: str | None = None
    kind: str | None = None  # grids only: one of GRID_KINDS
    centroid: tuple[float, float] = (0.0, 0.0)  # (lon, lat) label point, inside the area


def label_point(geometry: BaseGeometry) -> tuple[float, float]:
    """A point to label an area with: its centroid if that lies inside, else a point on its surface."""
    c = geometry.centroid
    if not geometry.covers(c):
        c = geometry.point_on_surface()
    return (round(c.x, 6), round(c.y, 6))


class Geography:
    """The district, its streets, communities and grids, with point-in-grid location.

    Built from (Area, shapely geometry) pairs. Location uses an STRtree over the grids; a point on a
    border shared by several grids goes to the grid with the lowest code.
    """

    def __init__(self, items: Iterable[tuple[Area, BaseGeometry]]):
        self._areas: dict[str, Area] = {}
        self._geoms: dict[str, BaseGeometry] = {}
        self._children: dict[str, list[Area]] = {}
        for area, geom in items:
            if level_of(area.code) != area.level:
                raise ValueError(f"area {area.code} ({area.name}): level {area.level!r} does not match its code")
            if area.code in self._areas:
                raise ValueError(f"area {area.code} ({area.name}) appears twice")
            if area.parent != parent_of(area.code):
                raise ValueError(
                    f"area {area.code} ({area.name}): parent {area.parent!r} does not match its code "
                    f"(expected {parent_of(area.code)!r})"
                )
            self._areas[area.code] = area
            self._geoms[area.code] = geom
        for code in sorted(self._areas):
            area = self._areas[code]
            if area.parent is not None:
                if area.parent not in self._areas:
                    raise ValueError(f"area {code} ({area.name}): parent {area.parent} is missing")
                self._children.setdefault(area.parent, []).append(area)
        districts = [a for a in self._areas.values() if a.level == "district"]
        if len(districts) != 1:
            raise ValueError(f"a geography has exactly one district, got {len(districts)}")
        self._district = districts[0]
        self._by_level: dict[str, list[Area]] = {level: [] for level in LEVELS}
        for code in sorted(self._areas):
            self._by_level[self._areas[code].level].append(self._areas[code])

        # Grids sorted by code: the tree index order is code order, so the lowest index wins on borders.
        self._grid_codes: list[str] = [a.code for a in self._by_level["grid"]]
        grid_geoms = [self._geoms[c] for c in self._grid_codes]
        shapely.prepare(grid_geoms)
        self._grid_geoms = np.array(grid_geoms, dtype=object)
        self._tree = STRtree(self._grid_geoms)
        self._grid_codes_arr = np.array(self._grid_codes + [None], dtype=object)

    # ----- lookups

    def area(self, code: str) -> Area:
        """The area with this code; KeyError if there is none."""
        try:
            return self._areas[code]
        except KeyError:
            raise KeyError(f"no area with code {code!r}") from None

    def get(self, code: str) -> Area | None:
        return self._areas.get(code)

    def __contains__(self, code: object) -> bool:
        return code in self._areas

    def __len__(self) -> int:
        return len(self._areas)

    def children(self, code: str) -> list[Area]:
        """The areas directly inside ``code``, sorted by code."""
        self.area(code)
        return list(self._children.get(code, ()))

    def areas(self, level: Level) -> list[Area]:
        """All areas of one level, sorted by code."""
        if level not in self._by_level:
            raise ValueError(f"bad level {level!r}: use one of {', '.join(LEVELS)}")
        return list(self._by_level[level])

    def grids_within(self, code: str) -> list[Area]:
        """All grids inside (or equal to) the area ``code``, sorted by code."""
        self.area(code)
        return [a for a in self._by_level["grid"] if a.code.startswith(code)]

    @property
    def district(self) -> Area:
        return self._district

    def geometry(self, code: str) -> BaseGeometry:
        self.area(code)
        return self._geoms[code]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(min lon, min lat, max lon, max lat) of the district."""
        return tuple(self._geoms[self._district.code].bounds)  # type: ignore[return-value]

    # ----- location

    def locate(self, lon: float, lat: float) -> str | None:
        """The code of the grid containing (lon, lat), or None if the point is outside every grid
        (or unusable). A point on a shared border goes to the grid with the lowest code."""
        if not usable_point(lon, lat):
            return None
        hits = self._tree.query(shapely.Point(float(lon), float(lat)), predicate="intersects")
        if len(hits) == 0:
            return None
        return self._grid_codes[int(hits.min())]

    def locate_many(self, lons: Sequence[float], lats: Sequence[float]) -> list[str | None]:
        """``locate`` for many points at once (vectorised)."""
        if len(lons) != len(lats):
            raise ValueError(f"locate_many: {len(lons)} longitudes but {len(lats)} latitudes")
        n = len(lons)
        if n == 0:
            return []
        ok = np.fromiter((usable_point(x, y) for x, y in zip(lons, lats, strict=True)), dtype=bool, count=n)
        idx = np.flatnonzero(ok)
        result = np.full(n, len(self._grid_codes), dtype=np.int64)  # sentinel -> None
        if len(idx):
            xs = np.array([float(lons[i]) for i in idx])
            ys = np.array([float(lats[i]) for i in idx])
            pts = shapely.points(xs, ys)
            inp, tree_idx = self._tree.query(pts, predicate="intersects")
            if len(inp):
                best = np.full(len(idx), len(self._grid_codes), dtype=np.int64)
                np.minimum.at(best, inp, tree_idx)
                result[idx] = best
        return self._grid_codes_arr[result].tolist()
