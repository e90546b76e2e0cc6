"""The mapping: which column of an export holds each canonical field, and how its values translate.

``load_mapping`` reads and validates one (config/mappings/README.md documents the format); every problem names
the mapping file, the key and the fix.
"""

from __future__ import annotations

import difflib
import re
import string
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from core.coords import crs_name
from core.records import CITY_TZ, LIMITS

# The statuses a mapping's status.map may name, and the event sequence each one is published as
# (config/mappings/README.md explains each). "dept" steps need a department; see records._plan().
STATUSES: dict[str, str] = {
    "reported": "received, nothing more known: report",
    "registered": "accepted as a case (立案): report → register",
    "open": "still open at the source, stage unknown: report → register → dispatch (if a department)",
    "dispatched": "sent to a department: report → register → dispatch",
    "accepted": "the department took it: … → dispatch → accept",
    "handling": "being worked on: … → accept → handle",
    "resolved": "done, not yet verified: … → accept → resolve",
    "closed": "done and closed: … → accept → resolve → close",
    "cancelled": "cancelled at the source: published as closed, note 'cancelled at source', flag cancelled_at_source",
    "referred": "referred out to another organisation: published as closed, note 'referred out at source', flag referred_out",
}
ID_RE = r"^[A-Za-z0-9][A-Za-z0-9_.:/#@+-]*$"  # a usable source name or external id


class MappingError(ValueError):
    """The mapping cannot be used. ``problems`` name the mapping file, the key and the fix."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConstField(_Spec):
    value: str


class IdField(_Spec):
    column: str


class TextField(_Spec):
    """Exactly one of: a column, a constant value, a template of {Column} placeholders."""

    column: str | None = None
    value: str | None = None
    template: str | None = None

    @model_validator(mode="after")
    def _one(self):
        given = [k for k in ("column", "value", "template") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of column, value or template")
        if self.template is not None:
            template_columns(self.template)  # raises on a broken template
        return self

    def columns(self) -> list[str]:
        if self.column is not None:
            return [self.column]
        if self.template is not None:
            return template_columns(self.template)
        return []


class TimeField(_Spec):
    column: str
    format: str | None = None  # strftime codes, e.g. "%m/%d/%Y %I:%M:%S %p"; omitted: ISO 8601
    tz: str = CITY_TZ.key  # the zone of times written without an offset

    @field_validator("tz")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}; use an IANA name such as America/Los_Angeles or Asia/Shanghai") from None
        return v

    @field_validator("format")
    @classmethod
    def _fmt(cls, v: str | None) -> str | None:
        if v is not None and "%" not in v:
            raise ValueError(f"format {v!r} has no % codes; write it with strftime codes, e.g. \"%Y-%m-%d %H:%M:%S\"")
        return v


class MappedField(_Spec):
    """A column whose values translate through ``map`` (or a constant ``value``)."""

    column: str | None = None
    value: str | int | None = None
    map: dict[str, str | int] | None = None
    fallback: str | int | None = None

    @field_validator("map", mode="before")
    @classmethod
    def _keys(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k).strip() if not isinstance(k, bool) else ("true" if k else "false"): val for k, val in v.items()}
        return v

    @model_validator(mode="after")
    def _one(self):
        if (self.column is None) == (self.value is None):
            raise ValueError("give exactly one of column (with map) or value")
        return self


class LocationField(_Spec):
    lon: str  # column holding the longitude
    lat: str  # column holding the latitude
    crs: str = "wgs84"
    placeholders: list[tuple[float, float]] = []  # [lon, lat] pairs (in the file's CRS) that mean "unknown"
    tolerance: float = 1e-6

    @field_validator("crs")
    @classmethod
    def _crs(cls, v: str) -> str:
        return crs_name(v)


class Mapping(_Spec):
    """A validated mapping. Build it with :func:`load_mapping`."""

    source: ConstField
    external_id: IdField
    created_at: TimeField
    closed_at: TimeField | None = None
    due_at: TimeField | None = None
    status: MappedField | None = None
    category: MappedField
    department: MappedField | None = None
    grade: MappedField | None = None
    title: TextField
    description: TextField | None = None
    address: TextField | None = None
    reporter_name: TextField | None = None
    reporter_phone: TextField | None = None
    location: LocationField | None = None
    sheet: str | None = None  # XLSX: the worksheet to read (default: the first)
    path: str = "mapping"  # where it came from, for messages (set by load_mapping)

    def columns(self) -> list[tuple[str, str]]:
        """(mapping key, column) for every column the mapping reads."""
        out = [("external_id.column", self.external_id.column), ("created_at.column", self.created_at.column)]
        for key in ("closed_at", "due_at"):
            f = getattr(self, key)
            if f is not None:
                out.append((f"{key}.column", f.column))
        for key in ("status", "category", "department", "grade"):
            f = getattr(self, key)
            if f is not None and f.column is not None:
                out.append((f"{key}.column", f.column))
        for key in ("title", "description", "address", "reporter_name", "reporter_phone"):
            f = getattr(self, key)
            if f is not None:
                kind = "column" if f.column is not None else "template"
                out += [(f"{key}.{kind}", c) for c in f.columns()]
        if self.location is not None:
            out += [("location.lon", self.location.lon), ("location.lat", self.location.lat)]
        return out

    def time_formats(self) -> dict[str, str | None]:
        return {f.column: f.format for f in (self.created_at, self.closed_at, self.due_at) if f is not None}


def template_columns(template: str) -> list[str]:
    """The column names a title/description template uses ({Column} placeholders only)."""
    cols = []
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"template {template!r} is broken ({exc}); write columns as {{Column}} and a literal brace as {{{{ or }}}}") from None
    for _literal, name, spec, conv in parts:
        if name is None:
            continue
        if not name or spec or conv:
            raise ValueError(f"template {template!r}: placeholders must be plain column names like {{Address}} (no format specs)")
        cols.append(name)
    return cols


def _display(path: Path | str) -> str:
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


_FIXES = {
    "source": "add `source: {value: <name>}` (letters, digits, - _ ; at most 32 characters)",
    "external_id": "add `external_id: {column: <the id column>}`",
    "created_at": "add `created_at: {column: <creation time column>, format: \"%Y-%m-%d %H:%M:%S\", tz: Asia/Shanghai}`",
    "category": "add `category: {column: <type column>, map: {<source value>: \"<小类 code>\"}, fallback: \"<小类 code>\"}`",
    "title": "add `title: {template: \"{<column>} · {<column>}\"}` or `title: {column: <column>}`",
}


def _mapping_problems(where: str, exc: ValidationError, allowed: dict[str, list[str]]) -> list[str]:
    out = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"]]
        key = ".".join(loc) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        kind = err["type"]
        if kind == "extra_forbidden":
            parent = ".".join(loc[:-1])
            options = allowed.get(parent, [])
            guess = difflib.get_close_matches(loc[-1], options, n=1)
            hint = f"did you mean {guess[0]!r}? " if guess else ""
            msg = f"unknown key {loc[-1]!r}: {hint}allowed here: {', '.join(options)}"
        elif kind == "missing":
            msg = "required key is missing; " + _FIXES.get(loc[0], f"add `{key}`") if len(loc) == 1 else "required key is missing"
        elif kind in ("model_type", "dict_type"):
            msg = f"expected a mapping such as {{column: ...}}, got {err.get('input')!r}"
        out.append(f"{where}: {key}: {msg}")
    return out


def _allowed_keys() -> dict[str, list[str]]:
    out = {"": list(k for k in Mapping.model_fields if k != "path")}
    for name, info in Mapping.model_fields.items():
        ann = info.annotation
        for model in (ConstField, IdField, TextField, TimeField, MappedField, LocationField):
            if ann is model or (hasattr(ann, "__args__") and model in ann.__args__):
                out[name] = list(model.model_fields)
    return out


def load_mapping(path: str | Path, city=None) -> Mapping:
    """Read and validate a mapping file against the city's categories and departments.

    Raises MappingError naming the file, the key and the fix.
    """
    where = _display(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise MappingError([f"{where}: cannot read the mapping file ({exc.strerror or exc})"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise MappingError([f"{where}: not valid YAML{at}: {getattr(exc, 'problem', None) or exc}"]) from None
    if not isinstance(data, dict):
        raise MappingError([f"{where}: expected a YAML mapping of keys (source:, external_id:, …), got {type(data).__name__}"])
    try:
        mapping = Mapping.model_validate({**data, "path": where})
    except ValidationError as exc:
        raise MappingError(_mapping_problems(where, exc, _allowed_keys())) from None
    problems = _check_against_city(mapping, where, city)
    if problems:
        raise MappingError(problems)
    return mapping


def _check_against_city(m: Mapping, where: str, city) -> list[str]:
    """What the mapping names that Gridwatch (or, given a city, the city's catalogue) does not know."""
    problems = [*_source_problems(m, where), *_status_problems(m, where), *_grade_problems(m, where)]
    if city is None:
        return problems
    return [*problems, *_category_problems(m, where, city.categories), *_department_problems(m, where, set(city.departments))]


def _entries(f: MappedField) -> list[tuple[str, Any]]:
    """(key, value) for every value a mapped field may give: its map, its fallback and its constant."""
    return [*(f.map or {}).items(), ("fallback", f.fallback), ("value", f.value)]


def _source_problems(m: Mapping, where: str) -> list[str]:
    if re.match(ID_RE, m.source.value) and len(m.source.value) <= LIMITS["source"]:
        return []
    return [f"{where}: source.value: {m.source.value!r} is not a usable source name; use letters, digits, - and _ "
            f"(at most {LIMITS['source']} characters)"]


def _status_problems(m: Mapping, where: str) -> list[str]:
    if m.status is None:
        return []
    vocab = ", ".join(STATUSES)
    problems = [f"{where}: status.map.{k}: {v!r} is not a Gridwatch import status; use one of: {vocab}"
                for k, v in (m.status.map or {}).items() if v not in STATUSES]
    problems += [f"{where}: status.{key}: {v!r} is not a Gridwatch import status; use one of: {vocab}"
                 for key, v in (("fallback", m.status.fallback), ("value", m.status.value)) if v is not None and v not in STATUSES]
    return problems


def _grade_problems(m: Mapping, where: str) -> list[str]:
    if m.grade is None:
        return []
    return [f"{where}: grade: {k}: {v!r} is not a grade; use 1, 2, 3 or 4 (config/city/grades.yaml)"
            for k, v in _entries(m.grade) if v is not None and str(v) not in ("1", "2", "3", "4")]


def _category_problems(m: Mapping, where: str, cats) -> list[str]:
    problems = []
    for k, v in _entries(m.category):
        if v is None:
            continue
        if isinstance(v, int):
            problems.append(f"{where}: category: {k}: {v!r} is a number; write 小类 codes in quotes, e.g. \"0101\"")
        elif v not in cats:
            problems.append(f"{where}: category: {k}: unknown category {v!r}; use a 小类 code from config/city/categories.yaml")
    return problems


def _department_problems(m: Mapping, where: str, deps: set[str]) -> list[str]:
    if m.department is None:
        return []
    return [f"{where}: department: {k}: unknown department {v!r}; use a code from config/city/departments.yaml "
            "(or fallback: category for the category's department)"
            for k, v in _entries(m.department)
            if v is not None and not (k == "fallback" and v == "category") and str(v) not in deps]


def check_columns(mapping: Mapping, columns: list[str], file_label: str) -> None:
    """MappingError for every column the mapping names that the file does not have."""
    problems = []
    have = set(columns)
    for key, col in mapping.columns():
        if col not in have:
            guess = difflib.get_close_matches(col, columns, n=1)
            hint = f" (did you mean {guess[0]!r}?)" if guess else ""
            problems.append(f"{mapping.path}: {key}: column {col!r} is not in {file_label}{hint}; "
                            f"fix the column name; the file's columns are: {', '.join(columns)}")
    if problems:
        raise MappingError(problems)
