"""The city: geography (the four GeoJSON files of ``scripts/generate_city.py``) and reference data (departments,
grades, categories and sensors as YAML; a YAML file missing from the city directory is read from ``config/city/``).

Loaded and validated once per directory; a :class:`CityConfigError` lists every problem, naming the file, the entry
and the fix.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

import shapely
import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from config import settings as config_settings  # late lookup: tests swap get_settings
from core.geography import GRID_KINDS, LEVEL_LENGTHS, Area, Geography, label_point, level_of, parent_of
from core.records import Catalog
from core.sla import Limit, parse_limit

__all__ = [
    "CityConfigError",
    "City",
    "Department",
    "Grade",
    "Category",
    "CategoryGroup",
    "SensorType",
    "Limit",
    "load_city",
    "get_city",
    "clear_city_cache",
    "DEFAULT_CITY_DIR",
]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CITY_DIR = ROOT / "config" / "city"
GEO_FILES: tuple[tuple[str, str], ...] = (
    ("district", "district.geojson"),
    ("street", "streets.geojson"),
    ("community", "communities.geojson"),
    ("grid", "grids.geojson"),
)
LIMIT_HELP = (
    "write a whole number and a unit: wh = working hours, wd = working days, h = calendar hours, "
    "m = calendar minutes, e.g. '2wh', '3wd', '4h', '30m'"
)


class CityConfigError(ValueError):
    """The city configuration is broken. ``problems`` lists every problem, one line each."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__(
            f"the city configuration has {len(self.problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in self.problems)
        )


# --------------------------------------------------------------------------- models


def _to_limit(value: Any) -> Any:
    if isinstance(value, Limit):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(f"bad limit {value!r} (a bare number has no unit); {LIMIT_HELP}")
    if not isinstance(value, str):
        raise ValueError(f"bad limit {value!r}; {LIMIT_HELP}")
    try:
        return parse_limit(value)
    except (ValueError, TypeError):
        raise ValueError(f"bad limit {value!r}; {LIMIT_HELP}") from None


LimitField = Annotated[Limit, BeforeValidator(_to_limit)]
Text = Annotated[str, Field(min_length=1)]
GradeLevel = Annotated[int, Field(ge=1, le=4)]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Department(_Entry):
    code: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]*$")]
    name: Text
    short: Text
    street: str | None = None  # 9-digit street code of a street-level unit


class Grade(_Entry):
    level: GradeLevel
    name: Text
    en: Text
    color_name: Text
    color: Annotated[str, Field(pattern=r"^#[0-9A-Fa-f]{6}$")]


class Category(_Entry):
    """A 小类. ``parent``/``parent_name`` are its 大类 (filled in by the loader)."""

    code: Annotated[str, Field(pattern=r"^\d{4}$")]
    name: Text
    en: Text
    default_grade: GradeLevel
    department: Text
    accept_limit: LimitField
    complete_limit: LimitField
    onsite: bool
    kinds: dict[str, Annotated[float, Field(ge=0)]] | None = None
    sensor_only: bool = False
    parent: str = ""
    parent_name: str = ""

    def weight(self, kind: str) -> float:
        """Relative frequency of this category in a grid of ``kind`` (simulator); 0 for sensor-only ones."""
        if self.sensor_only:
            return 0.0
        if self.kinds is None:
            return 1.0
        return float(self.kinds.get(kind, 0.0))


class CategoryGroup(_Entry):
    """A 大类."""

    code: Annotated[str, Field(pattern=r"^\d{2}$")]
    name: Text
    en: Text
    children: tuple[Category, ...] = ()


class SensorType(_Entry):
    code: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    name: Text
    en: Text
    unit: Text
    threshold: float
    clear_below: float
    heartbeat_s: Annotated[int, Field(gt=0)]
    category: Text
    grade: GradeLevel


@dataclass
class City:
    """Everything the system knows about the city. Load with :func:`load_city` / :func:`get_city`."""

    city_dir: Path
    county_code: str
    name: str
    geography: Geography
    departments: dict[str, Department]
    grades: dict[int, Grade]
    groups: list[CategoryGroup]
    categories: dict[str, Category]
    sensor_types: dict[str, SensorType]
    sources: dict[str, str] = field(default_factory=dict)  # file name -> displayed path it was read from

    def group_of(self, category_code: str) -> CategoryGroup:
        """The 大类 of a 小类 code."""
        cat = self.categories[category_code]
        return next(g for g in self.groups if g.code == cat.parent)

    def by_group(self, counts: dict[str, int]) -> dict[str, int]:
        """Counts per 小类 code added up per 大类 code (an unknown code counts under its first two digits)."""
        out: dict[str, int] = {}
        for code, n in counts.items():
            cat = self.categories.get(code)
            group = getattr(cat, "parent", None) or code[:2]
            out[group] = out.get(group, 0) + n
        return out


# --------------------------------------------------------------------------- helpers


def _display(path: Path) -> str:
    """A path for messages: relative to the project root (or the working directory), never absolute."""
    p = path.resolve()
    for base in (ROOT, Path.cwd()):
        try:
            return p.relative_to(base).as_posix()
        except ValueError:
            continue
    return f"{p.parent.name}/{p.name}"


def _label(what: str, entry: Any, index: int, key: str = "code") -> str:
    if isinstance(entry, dict):
        code = entry.get(key)
        name = entry.get("name")
        if code is not None:
            return f"{what} {code}" + (f" ({name})" if name else "")
    return f"{what} #{index + 1}"


def _pydantic_problems(where: str, err: ValidationError) -> list[str]:
    out = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "entry"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "missing":
            msg = f"required field is missing — add `{loc}: ...`"
        elif e["type"] == "extra_forbidden":
            msg = "unknown field — remove it or fix its spelling (see the comment at the top of the file)"
        elif e["type"] == "string_pattern_mismatch":
            msg = f"{msg} (got {e.get('input')!r})"
        out.append(f"{where}: {loc}: {msg}")
    return out


def _one_of(codes: Iterable[Any]) -> str:
    codes = sorted(str(c) for c in codes)
    return ", ".join(codes) if codes else "(none defined)"


class _Problems(list[str]):
    """The problems found so far, in file order."""

    def add(self, msg: str) -> None:
        self.append(msg)


def _read_yaml(city_dir: Path, filename: str, top: str, problems: _Problems, sources: dict[str, str]) -> tuple[str, list]:
    path = city_dir / filename
    if not path.is_file() and (DEFAULT_CITY_DIR / filename).is_file():
        path = DEFAULT_CITY_DIR / filename
    shown = _display(path)
    sources[filename] = shown
    if not path.is_file():
        problems.add(f"{shown}: file not found — restore it from the default city (config/city/{filename})")
        return shown, []
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        problems.add(f"{shown}: not valid YAML: {str(exc).replace(chr(10), ' ')}")
        return shown, []
    if not isinstance(data, dict) or not isinstance(data.get(top), list):
        problems.add(f"{shown}: expected a top-level `{top}:` list of entries")
        return shown, []
    return shown, data[top]


def _validate_entries(
    shown: str, what: str, entries: list, model: type[BaseModel], problems: _Problems,
    key: str = "code", prepare: Callable[[dict], dict] | None = None,
) -> list[tuple[dict, BaseModel]]:
    """Validate each entry on its own; report duplicates of ``key``. Returns (raw, model) pairs."""
    out: list[tuple[dict, BaseModel]] = []
    seen: dict[Any, int] = {}
    for i, raw in enumerate(entries):
        label = f"{shown}: {_label(what, raw, i, key)}"
        if not isinstance(raw, dict):
            problems.add(f"{label}: expected a mapping of fields, got {type(raw).__name__}")
            continue
        k = raw.get(key)
        if k is not None:
            if k in seen:
                problems.add(f"{label}: duplicate {key} {k!r} (also entry #{seen[k] + 1}) — give each entry its own {key}")
                continue
            seen[k] = i
        try:
            obj = model.model_validate(prepare(raw) if prepare else raw)
        except ValidationError as exc:
            problems.extend(_pydantic_problems(label, exc))
            continue
        out.append((raw, obj))
    return out


# --------------------------------------------------------------------------- geography


def _read_collection(city_dir: Path, level: str, path: Path, shown: str, problems: _Problems) -> list | None:
    """The features of one GeoJSON file, or None (with the problem) if it is missing or not a FeatureCollection."""
    if not path.is_file():
        problems.add(f"{shown}: file not found — generate the city with `python scripts/generate_city.py --out {_display(city_dir)}`")
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        problems.add(f"{shown}: not valid JSON ({exc}) — regenerate it with scripts/generate_city.py")
        return None
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection" or not isinstance(data.get("features"), list):
        problems.add(f"{shown}: expected a GeoJSON FeatureCollection")
        return None
    if level == "district" and len(data["features"]) != 1:
        problems.add(f"{shown}: expected exactly one district feature, found {len(data['features'])}")
    return data["features"]


def _feature_code(shown: str, level: str, i: int, feat: Any, problems: _Problems) -> tuple[dict, str, str, str] | None:
    """(properties, label for messages, code, the code's level) of a feature, or None if it has no usable code."""
    props = (feat or {}).get("properties") if isinstance(feat, dict) else None
    if not isinstance(props, dict):
        problems.add(f"{shown}: feature #{i + 1}: no properties — each feature needs code, name, level, parent, kind")
        return None
    label = f"{shown}: {level} {props.get('code')}" + (f" ({props.get('name')})" if props.get("name") else "")
    code = props.get("code")
    if not isinstance(code, str):
        problems.add(f"{label}: code must be a string of digits, got {code!r}")
        return None
    try:
        return props, label, code, level_of(code)
    except ValueError as exc:
        problems.add(f"{label}: {exc}")
        return None


def _placed(label: str, props: dict, code: str, code_level: str, level: str, filename: str,
            codes_by_level: dict[str, set[str]], problems: _Problems) -> tuple[bool, str | None]:
    """Whether the code fits its file, its parent and the codes read before; and the expected parent's code."""
    ok = True
    if code_level != level:
        problems.add(f"{label}: a {code_level} code in {filename} — a {level} code has {LEVEL_LENGTHS[level]} digits")
        ok = False
    if props.get("level") not in (None, level):
        problems.add(f"{label}: level {props.get('level')!r} — features in {filename} have level {level!r}")
        ok = False
    expected_parent = parent_of(code) if code_level == level else None
    if ok and props.get("parent") != expected_parent:
        problems.add(
            f"{label}: parent {props.get('parent')!r} does not match the code — the code must start with its "
            f"parent's code (expected parent {expected_parent!r})"
        )
        ok = False
    if ok and expected_parent is not None:
        parent_level = level_of(expected_parent)
        if expected_parent not in codes_by_level.get(parent_level, ()):
            parent_file = dict(GEO_FILES)[parent_level]
            problems.add(
                f"{label}: its code does not nest: {parent_level} {expected_parent} is not in {parent_file} — "
                f"fix the code or add the {parent_level}"
            )
            ok = False
    if code in codes_by_level[level]:
        problems.add(f"{label}: duplicate code {code} — give each {level} its own code")
        ok = False
    return ok, expected_parent


def _named(label: str, props: dict, level: str, problems: _Problems) -> bool:
    """Whether the feature has a name, and a grid kind exactly when it is a grid."""
    ok = True
    name = props.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.add(f"{label}: name is missing")
        ok = False
    kind = props.get("kind")
    if level == "grid":
        if kind not in GRID_KINDS:
            problems.add(f"{label}: kind {kind!r} is not a grid kind — use one of: {', '.join(GRID_KINDS)}")
            ok = False
    elif kind is not None:
        problems.add(f"{label}: only grids have a kind — set kind to null")
        ok = False
    return ok


def _geometry(label: str, feat: dict, problems: _Problems) -> BaseGeometry | None:
    """The feature's polygon, or None (with the problem) if it does not parse or is empty or invalid."""
    try:
        geom = shape(feat.get("geometry"))
    except Exception as exc:  # noqa: BLE001 - shapely raises several types for bad GeoJSON
        problems.add(f"{label}: geometry does not parse ({exc})")
        return None
    if geom.is_empty or geom.geom_type not in ("Polygon", "MultiPolygon"):
        problems.add(f"{label}: geometry must be a non-empty Polygon or MultiPolygon, got {geom.geom_type}")
        return None
    if not geom.is_valid:
        problems.add(f"{label}: geometry is invalid ({shapely.is_valid_reason(geom)}) — regenerate with scripts/generate_city.py")
        return None
    return geom


def _read_feature(shown: str, level: str, filename: str, i: int, feat: Any, codes_by_level: dict[str, set[str]],
                  problems: _Problems) -> tuple[Area, BaseGeometry] | None:
    """One feature as an area and its polygon, or None when it has problems (all of them reported)."""
    found = _feature_code(shown, level, i, feat, problems)
    if found is None:
        return None
    props, label, code, code_level = found
    placed, expected_parent = _placed(label, props, code, code_level, level, filename, codes_by_level, problems)
    named = _named(label, props, level, problems)
    geom = _geometry(label, feat, problems)
    if geom is None or not (placed and named):
        return None
    area = Area(code=code, name=props["name"].strip(), level=level, parent=expected_parent, kind=props.get("kind"),
                centroid=label_point(geom))
    return area, geom


def _read_geography(city_dir: Path, problems: _Problems, sources: dict[str, str]) -> Geography | None:
    items: list[tuple[Area, BaseGeometry]] = []
    codes_by_level: dict[str, set[str]] = {}
    start_problems = len(problems)
    for level, filename in GEO_FILES:
        path = city_dir / filename
        shown = _display(path)
        sources[filename] = shown
        codes_by_level[level] = set()
        for i, feat in enumerate(_read_collection(city_dir, level, path, shown, problems) or ()):
            found = _read_feature(shown, level, path.name, i, feat, codes_by_level, problems)
            if found is not None:
                codes_by_level[level].add(found[0].code)
                items.append(found)
    if len(problems) > start_problems:
        return None
    try:
        return Geography(items)
    except ValueError as exc:
        problems.add(f"{_display(city_dir)}: {exc}")
        return None


# --------------------------------------------------------------------------- loading


def _read_departments(city_dir: Path, geography: Geography | None, problems: _Problems,
                      sources: dict[str, str]) -> dict[str, Department]:
    shown, entries = _read_yaml(city_dir, "departments.yaml", "departments", problems, sources)
    departments = {d.code: d for _, d in _validate_entries(shown, "department", entries, Department, problems)}
    if geography is not None:
        for d in departments.values():
            if d.street is not None and (d.street not in geography or geography.area(d.street).level != "street"):
                streets = _one_of(a.code for a in geography.areas("street"))
                problems.add(f"{shown}: department {d.code} ({d.name}): street {d.street!r} is not a street of the city — use one of: {streets}")
    return departments


def _read_grades(city_dir: Path, problems: _Problems, sources: dict[str, str]) -> tuple[dict[int, Grade], set]:
    """The grades, and the levels the file declares (for checking the entries that name a grade)."""
    shown, entries = _read_yaml(city_dir, "grades.yaml", "grades", problems, sources)
    grades = {g.level: g for _, g in _validate_entries(shown, "grade", entries, Grade, problems, key="level")}
    if entries and set(grades) != {1, 2, 3, 4} and len(grades) == len(entries):
        problems.add(f"{shown}: expected grades with levels 1, 2, 3 and 4, found {sorted(grades)} — add the missing levels")
    # levels declared in the file, even by entries with other problems (no cascade of follow-up errors)
    grade_levels = {e.get("level") for e in entries if isinstance(e, dict) and isinstance(e.get("level"), int)} or {1, 2, 3, 4}
    return grades, grade_levels


def _read_category(shown_cat: str, ci: int, craw: Any, graw: dict, departments: dict[str, Department],
                   grade_levels: set, cat_seen: dict[str, str], problems: _Problems) -> Category | None:
    """One 小类 of a 大类, or None if it cannot be read (its problems reported)."""
    gcode = graw.get("code")
    clabel = f"{shown_cat}: {_label('category', craw, ci)}"
    if not isinstance(craw, dict):
        problems.add(f"{clabel}: expected a mapping of fields")
        return None
    ccode = craw.get("code")
    if ccode in cat_seen:
        problems.add(f"{clabel}: duplicate category code {ccode!r} (also in group {cat_seen[ccode]}) — give each 小类 its own code")
        return None
    if ccode is not None:
        cat_seen[ccode] = str(gcode)
    data = {**craw, "parent": str(gcode), "parent_name": str(graw.get("name", ""))}
    dept = craw.get("department")
    if departments and isinstance(dept, str) and dept not in departments:
        problems.add(
            f"{clabel}: department {dept!r} is not defined in departments.yaml — use one of: {_one_of(departments)}"
        )
    try:
        cat = Category.model_validate(data)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(clabel, exc))
        return None
    if isinstance(gcode, str) and not cat.code.startswith(gcode):
        problems.add(f"{clabel}: code must start with its group code {gcode} (e.g. {gcode}01)")
    if cat.default_grade not in grade_levels:
        problems.add(f"{clabel}: default_grade {cat.default_grade} is not in grades.yaml — use one of: {_one_of(grade_levels)}")
    for kind in (cat.kinds or {}):
        if kind not in GRID_KINDS:
            problems.add(f"{clabel}: kinds: {kind!r} is not a grid kind — use one of: {', '.join(GRID_KINDS)}")
    return cat


def _read_categories(city_dir: Path, departments: dict[str, Department], grade_levels: set, problems: _Problems,
                     sources: dict[str, str]) -> tuple[list[CategoryGroup], dict[str, Category]]:
    """The 大类 with their 小类, and every 小类 by code."""
    shown_cat, groups_raw = _read_yaml(city_dir, "categories.yaml", "groups", problems, sources)
    groups: list[CategoryGroup] = []
    categories: dict[str, Category] = {}
    cat_seen: dict[str, str] = {}
    group_seen: set[str] = set()
    for gi, graw in enumerate(groups_raw):
        glabel = f"{shown_cat}: {_label('group', graw, gi)}"
        if not isinstance(graw, dict):
            problems.add(f"{glabel}: expected a mapping with code, name, en, children")
            continue
        gcode = graw.get("code")
        if gcode in group_seen:
            problems.add(f"{glabel}: duplicate group code {gcode!r} — give each 大类 its own code")
            continue
        group_seen.add(gcode)
        children_raw = graw.get("children")
        if not isinstance(children_raw, list) or not children_raw:
            problems.add(f"{glabel}: children must be a non-empty list of 小类")
            children_raw = []
        head = {k: v for k, v in graw.items() if k != "children"}
        try:
            group = CategoryGroup.model_validate(head)
        except ValidationError as exc:
            problems.extend(_pydantic_problems(glabel, exc))
            group = None
        children: list[Category] = []
        for ci, craw in enumerate(children_raw):
            cat = _read_category(shown_cat, ci, craw, graw, departments, grade_levels, cat_seen, problems)
            if cat is not None:
                children.append(cat)
                categories[cat.code] = cat
        if group is not None:
            groups.append(group.model_copy(update={"children": tuple(children)}))
    return groups, categories


def _read_sensors(city_dir: Path, categories: dict[str, Category], grade_levels: set, problems: _Problems,
                  sources: dict[str, str]) -> dict[str, SensorType]:
    shown, entries = _read_yaml(city_dir, "sensors.yaml", "sensor_types", problems, sources)
    sensor_types: dict[str, SensorType] = {}
    for raw, st in _validate_entries(shown, "sensor type", entries, SensorType, problems):
        label = f"{shown}: {_label('sensor type', raw, 0)}"
        if categories and st.category not in categories:
            problems.add(f"{label}: category {st.category!r} is not defined in categories.yaml — use a 小类 code such as: "
                         f"{_one_of(c.code for c in categories.values() if c.sensor_only) if any(c.sensor_only for c in categories.values()) else _one_of(categories)}")
        if st.grade not in grade_levels:
            problems.add(f"{label}: grade {st.grade} is not in grades.yaml — use one of: {_one_of(grade_levels)}")
        if st.clear_below > st.threshold:
            problems.add(f"{label}: clear_below {st.clear_below:g} is above threshold {st.threshold:g} — the alarm could never clear; use a value <= threshold")
        sensor_types[st.code] = st
    return sensor_types


def _load(city_dir: Path) -> City:
    problems = _Problems()
    sources: dict[str, str] = {}
    if not city_dir.is_dir():
        raise CityConfigError([f"{_display(city_dir)}: city directory not found — set CITY_DIR or run scripts/generate_city.py"])
    geography = _read_geography(city_dir, problems, sources)
    departments = _read_departments(city_dir, geography, problems, sources)
    grades, grade_levels = _read_grades(city_dir, problems, sources)
    groups, categories = _read_categories(city_dir, departments, grade_levels, problems, sources)
    sensor_types = _read_sensors(city_dir, categories, grade_levels, problems, sources)
    if problems or geography is None:
        raise CityConfigError(problems or [f"{_display(city_dir)}: the geography could not be loaded"])
    district = geography.district
    return City(
        city_dir=city_dir,
        county_code=district.code,
        name=district.name,
        geography=geography,
        departments=departments,
        grades=dict(sorted(grades.items())),
        groups=groups,
        categories=categories,
        sensor_types=sensor_types,
        sources=sources,
    )


@lru_cache(maxsize=8)
def _load_cached(resolved: str) -> City:
    return _load(Path(resolved))


def load_city(city_dir: Path | str | None = None) -> City:
    """Load and validate the city in ``city_dir`` (default: the settings' CITY_DIR). Cached per directory.

    Raises :class:`CityConfigError` listing every problem found.
    """
    if city_dir is None:
        city_dir = config_settings.get_settings().city_dir
    return _load_cached(str(Path(city_dir).resolve()))


def get_city() -> City:
    """The configured city (``CITY_DIR``), loaded once."""
    return load_city(config_settings.get_settings().city_dir)


def clear_city_cache() -> None:
    """Forget loaded cities (tests, or after regenerating a city)."""
    _load_cached.cache_clear()


def catalog_of(city: City) -> Catalog:
    """What a record may name in this city (categories, departments, sensor types, grids): every feed validates
    against it before publishing, and the worker before applying."""
    return Catalog(
        categories=city.categories,
        departments=frozenset(city.departments),
        sensor_types=frozenset(city.sensor_types),
        grid_codes=frozenset(a.code for a in city.geography.areas("grid")),
    )
