"""Import a CSV or XLSX export through a YAML mapping: ``python -m ingest import FILE --mapping M.yaml``.

A mapping (config/mappings/README.md documents the format) says, for each canonical field, which column
of the export holds it (or a constant, or a template over columns), how its times are written and in which
time zone, how source statuses, categories and departments translate into Gridwatch's, and which coordinate
system the points are in. Each row becomes the legal event sequence of one case (report → register →
dispatch → accept → resolve → close, as far as the row's status goes), published to the case stream in row
order; rows that cannot be mapped are dead-lettered with the column and the problem. Event ids are fixed
per row and step, so importing the same file again changes nothing in the store.

The file is streamed in chunks (pandas for CSV, openpyxl read-only mode for XLSX) and each chunk is mapped
column-wise, so a file of millions of rows is imported in constant memory.
"""

from __future__ import annotations

import argparse
import codecs
import difflib
import gc
import re
import string
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import orjson
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from config.city import get_city
from config.settings import get_settings
from core import lifecycle
from core.coords import crs_name, to_wgs84
from core.geography import PLACEHOLDER_EPSILON, PLACEHOLDER_POINTS
from core.lifecycle import Action, Status
from core.records import CITY_TZ, LIMITS
from store.services import get_redis
from store.streams import Producer, StreamNames, dead_letter

# --------------------------------------------------------------------------- vocabulary

# The statuses a mapping's status.map may name, and the event sequence each one is published as
# (config/mappings/README.md explains each). "dept" steps need a department; see _plan().
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
TERMINAL = frozenset({"resolved", "closed", "cancelled", "referred"})
EVENT_ID_PREFIX = "imp-"  # event_id = "imp-<step>": the same row and step always get the same id
INFERRED_ACTOR = "import (inferred)"  # actor of a step the source does not record but the lifecycle needs
DEFAULT_CHUNK_ROWS = 50_000
DEFAULT_PROGRESS_ROWS = 100_000
_ID_RE = r"^[A-Za-z0-9][A-Za-z0-9_.:/#@+-]*$"
_ONE_LINE_BAD = r"[\x00-\x1f\x7f\u2028\u2029]+"
_MULTI_LINE_BAD = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u2028\u2029]"
_PHONE_BAD = r"[^0-9+\-() ]"
_TEMPLATE_TRIM = " ·-—,;:|/"

# Flags the importer raises (kept on the case by the worker, counted in the report).
FLAG_BITS = (
    "closed_before_created",  # the source's close time is before its creation time
    "close_time_missing",  # a closed status without a close time: closed at the creation time
    "close_time_invalid",  # a close time more than 24 h in the future: closed at the creation time
    "cancelled_at_source",
    "referred_out",
    "category_fallback",  # the source category is not in category.map: filed under category.fallback
    "department_missing",  # the status needs a department and the row has none: published up to register
    "due_ignored",  # the due time is more than 24 h in the future (the store refuses those): computed limits apply
    "text_truncated",  # a title, description or address longer than the canonical limit was shortened
)
_BIT = {name: 1 << i for i, name in enumerate(FLAG_BITS)}


class MappingError(ValueError):
    """The mapping cannot be used. ``problems`` name the mapping file, the key and the fix."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class ImportFileError(ValueError):
    """The file cannot be read (missing, empty, wrong encoding, broken CSV)."""


# --------------------------------------------------------------------------- the mapping


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
    if re.match(_ID_RE, m.source.value) and len(m.source.value) <= LIMITS["source"]:
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


# --------------------------------------------------------------------------- the report


@dataclass
class ImportReport:
    """What an import did. ``str(report)`` is the printed report."""

    file: str
    mapping: str
    source: str
    dry_run: bool = False
    rows_read: int = 0
    rows_published: int = 0
    events_published: int = 0
    rows_dead: int = 0
    dead: Counter = field(default_factory=Counter)  # reason (column: problem) -> rows
    located: int = 0
    unlocated: Counter = field(default_factory=Counter)  # missing / unreadable / placeholder / outside the district
    flagged: Counter = field(default_factory=Counter)  # flag -> rows
    by_department: Counter = field(default_factory=Counter)  # department code ("(none)") -> rows
    by_status: Counter = field(default_factory=Counter)  # import status -> rows
    by_source_status: Counter = field(default_factory=Counter)  # the file's own status values -> rows
    duplicate_ids: int = 0  # rows whose id appeared earlier in the same file (their events are duplicates)
    seconds: float = 0.0
    encoding: str | None = None

    @property
    def rows_unlocated(self) -> int:
        return sum(self.unlocated.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file, "mapping": self.mapping, "source": self.source, "dry_run": self.dry_run,
            "rows_read": self.rows_read, "rows_published": self.rows_published, "events_published": self.events_published,
            "rows_dead": self.rows_dead, "dead": dict(self.dead), "located": self.located,
            "unlocated": dict(self.unlocated), "flagged": dict(self.flagged), "by_department": dict(self.by_department),
            "by_status": dict(self.by_status), "by_source_status": dict(self.by_source_status),
            "duplicate_ids": self.duplicate_ids, "seconds": round(self.seconds, 3),
        }

    def __str__(self) -> str:
        verb = "would publish" if self.dry_run else "published"
        rate = self.rows_read / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"Import of {self.file} with {self.mapping} as source {self.source!r}" + (" (dry run: nothing published)" if self.dry_run else ""),
            f"  rows read        {self.rows_read:>10,}   in {self.seconds:.1f} s ({rate:,.0f} rows/s, encoding {self.encoding})",
            f"  {verb:<16} {self.rows_published:>10,} rows, {self.events_published:,} events",
            f"  dead-lettered    {self.rows_dead:>10,} rows" + (" (would be)" if self.dry_run else
                                                              " (bad rows are dead-lettered again by every import of the file)"),
        ]
        lines += [f"      {n:>10,}  {reason}" for reason, n in self.dead.most_common()]
        lines.append(f"  located          {self.located:>10,} rows (inside the district)")
        lines.append(f"  unlocated        {self.rows_unlocated:>10,} rows (kept, without a grid)")
        lines += [f"      {n:>10,}  {why}" for why, n in self.unlocated.most_common()]
        lines.append(f"  flagged          {sum(self.flagged.values()):>10,} flags")
        lines += [f"      {n:>10,}  {flag}" for flag, n in self.flagged.most_common()]
        if self.duplicate_ids:
            lines.append(f"  repeated ids     {self.duplicate_ids:>10,} rows (an id seen earlier in the file: only new steps apply)")
        lines.append("  by department")
        lines += [f"      {n:>10,}  {dep}" for dep, n in self.by_department.most_common()]
        lines.append("  by status (import status ← the file's values)")
        lines += [f"      {n:>10,}  {st}" for st, n in self.by_status.most_common()]
        lines.append("      " + ", ".join(f"{k}: {v:,}" for k, v in self.by_source_status.most_common()))
        return "\n".join(lines)


# --------------------------------------------------------------------------- reading files


def detect_encoding(path: Path, given: str | None = None) -> str:
    """The encoding to read a CSV with: ``given``, else UTF-8 (with or without BOM) if the first MiB decodes, else GB18030."""
    if given:
        try:
            codecs.lookup(given)
        except LookupError:
            raise ImportFileError(f"unknown encoding {given!r}; use e.g. utf-8, utf-8-sig, gb18030") from None
        return "utf-8-sig" if given.lower().replace("_", "-") in ("utf-8", "utf8") else given
    with open(path, "rb") as fh:
        head = fh.read(1 << 20)
        more = bool(fh.read(1))
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=not more)
        return "utf-8-sig"
    except UnicodeDecodeError:
        return "gb18030"


def _csv_chunks(path: Path, encoding: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    try:
        reader = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, chunksize=chunk_rows,
                             encoding=encoding, encoding_errors="strict")
    except pd.errors.EmptyDataError:
        raise ImportFileError("the file is empty (no header row)") from None
    except UnicodeDecodeError as exc:
        raise ImportFileError(f"cannot read the header as {encoding} ({exc.reason}); pass --encoding (e.g. gb18030)") from None
    with reader:
        while True:
            try:
                chunk = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError as exc:
                raise ImportFileError(f"the file is not valid {encoding} ({exc.reason} at byte {exc.start} of a block); "
                                      "pass --encoding (e.g. gb18030 for Chinese exports)") from None
            except pd.errors.ParserError as exc:
                raise ImportFileError(f"the CSV is broken: {exc}") from None
            yield chunk


def _cell(value: Any, fmt: str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime(fmt) if fmt else value.isoformat(sep=" ")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _xlsx_chunks(path: Path, chunk_rows: int, sheet: str | None, time_formats: dict[str, str | None]) -> Iterator[pd.DataFrame]:
    import openpyxl

    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many kinds for a broken file
        raise ImportFileError(f"cannot open the workbook ({type(exc).__name__}: {exc})") from None
    try:
        if sheet is not None and sheet not in wb.sheetnames:
            raise ImportFileError(f"the workbook has no sheet {sheet!r}; sheets: {', '.join(wb.sheetnames)} (mapping key: sheet)")
        ws = wb[sheet] if sheet is not None else wb.worksheets[0]
        rows = ws.iter_rows(values_only=True)
        header = next(rows, None)
        if header is None:
            raise ImportFileError("the sheet is empty (no header row)")
        names = [_cell(h, None).strip() for h in header]
        while names and not names[-1]:
            names.pop()
        fmts = [time_formats.get(n, "") if n in time_formats else None for n in names]
        width = len(names)
        buf: list[list[str]] = []
        for row in rows:
            vals = list(row[:width]) + [None] * (width - len(row))
            if all(v is None for v in vals):
                continue  # empty rows at the end of a sheet
            buf.append([_cell(v, fmts[i] if fmts[i] != "" else None) if fmts[i] is not None else _cell(v, None)
                        for i, v in enumerate(vals)])
            if len(buf) >= chunk_rows:
                yield pd.DataFrame(buf, columns=names, dtype=str)
                buf = []
        yield pd.DataFrame(buf, columns=names, dtype=str)
    finally:
        wb.close()


def read_chunks(path: Path, mapping: Mapping, encoding: str | None, chunk_rows: int) -> tuple[Iterator[pd.DataFrame], str]:
    """(chunks of rows as text, the encoding used). XLSX by the file's extension, everything else as CSV."""
    if not path.exists():
        raise ImportFileError(f"no such file: {path}")
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        return _xlsx_chunks(path, chunk_rows, mapping.sheet, mapping.time_formats()), "xlsx"
    if path.stat().st_size == 0:
        raise ImportFileError("the file is empty (no header row)")
    enc = detect_encoding(path, encoding)
    return _csv_chunks(path, enc, chunk_rows), enc


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


# --------------------------------------------------------------------------- mapping a chunk
#
# A chunk is mapped column by column: text as Python lists (cheaper than pandas' string arrays without
# pyarrow), times and points as numpy arrays. Only the final loop that builds the events is per row.

_ONE_LINE_RE = re.compile(_ONE_LINE_BAD)
_MULTI_LINE_RE = re.compile(_MULTI_LINE_BAD)
_PHONE_RE = re.compile(_PHONE_BAD)
_ID_FULL = re.compile(_ID_RE)
_WIDTHS = {"Y": 4, "m": 2, "d": 2, "H": 2, "I": 2, "M": 2, "S": 2, "p": 2}
_NAT = np.datetime64("NaT", "s")


class _Columns:
    """The chunk's columns as stripped Python strings, each computed once."""

    def __init__(self, df: pd.DataFrame):
        self.df = df
        self.n = len(df)
        self._cache: dict[str, list[str]] = {}

    def __call__(self, name: str) -> list[str]:
        got = self._cache.get(name)
        if got is None:
            vals = self.df[name].tolist()
            try:
                got = [v.strip() for v in vals]
            except AttributeError:  # a short row: missing cells come back as NaN
                got = [v.strip() if isinstance(v, str) else "" for v in vals]
            self._cache[name] = got
        return got


def _fixed_layout(fmt: str) -> tuple[list[tuple[str | None, int, str]], int] | None:
    """[(code or None for a literal, offset, literal)], width — when every value of ``fmt`` has one fixed width."""
    parts: list[tuple[str | None, int, str]] = []
    pos = i = 0
    while i < len(fmt):
        c = fmt[i]
        if c == "%":
            code = fmt[i + 1: i + 2]
            if code not in _WIDTHS:
                return None
            parts.append((code, pos, ""))
            pos += _WIDTHS[code]
            i += 2
        else:
            parts.append((None, pos, c))
            pos += 1
            i += 1
    return parts, pos


def _parse_fixed(values: list[str], idx: np.ndarray, fmt: str) -> tuple[np.ndarray, np.ndarray]:
    """Fast path for zero-padded formats: (naive times, rows that did not fit the layout) for the rows ``idx``."""
    layout = _fixed_layout(fmt)
    out = np.full(len(idx), _NAT)
    if layout is None or not len(idx):
        return out, np.ones(len(idx), dtype=bool)
    parts, width = layout
    sub = [values[i] for i in idx]
    fits = np.fromiter((len(v) == width and v.isascii() for v in sub), dtype=bool, count=len(sub))
    rows = np.flatnonzero(fits)
    if not len(rows):
        return out, ~fits
    b = np.frombuffer("".join(sub[i] for i in rows).encode("ascii"), dtype=np.uint8).reshape(len(rows), width)
    good = np.ones(len(rows), dtype=bool)
    num: dict[str, np.ndarray] = {}
    pm = None
    for code, pos, lit in parts:
        if code is None:
            good &= b[:, pos] == ord(lit)
        elif code == "p":
            first, second = b[:, pos] | 0x20, b[:, pos + 1] | 0x20  # lower case
            good &= ((first == ord("a")) | (first == ord("p"))) & (second == ord("m"))
            pm = first == ord("p")
        else:
            digits = b[:, pos: pos + _WIDTHS[code]].astype(np.int64) - 48
            good &= ((digits >= 0) & (digits <= 9)).all(axis=1)
            val = np.zeros(len(rows), dtype=np.int64)
            for k in range(digits.shape[1]):
                val = val * 10 + digits[:, k]
            num[code] = val
    year = num.get("Y", np.full(len(rows), 1900))
    month = num.get("m", np.ones(len(rows), dtype=np.int64))
    day = num.get("d", np.ones(len(rows), dtype=np.int64))
    if "I" in num:
        hour = num["I"] % 12 + (np.where(pm, 12, 0) if pm is not None else 0)
        good &= (num["I"] >= 1) & (num["I"] <= 12)
    else:
        hour = num.get("H", np.zeros(len(rows), dtype=np.int64))
    minute = num.get("M", np.zeros(len(rows), dtype=np.int64))
    second = num.get("S", np.zeros(len(rows), dtype=np.int64))
    good &= (month >= 1) & (month <= 12) & (day >= 1) & (day <= 31) & (hour < 24) & (minute < 60) & (second < 60)
    months = ((year - 1970) * 12 + (month - 1)).astype("datetime64[M]")
    dates = months.astype("datetime64[D]") + (day - 1)
    good &= dates.astype("datetime64[M]") == months  # 30 February and the like
    ts = dates.astype("datetime64[s]") + (hour * 3600 + minute * 60 + second)
    res = np.full(len(sub), _NAT)
    res[rows] = np.where(good, ts, _NAT)
    out[:] = res
    unfit = ~fits
    unfit[rows[~good]] = False  # well-formed but impossible: stays NaT, no second chance
    return out, unfit


def _usable(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """core.geography.usable_point for arrays: finite, in range, not zero, not a known placeholder."""
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(x) & np.isfinite(y) & (np.abs(x) <= 180) & (np.abs(y) <= 90)
        ok &= (np.abs(x) >= PLACEHOLDER_EPSILON) & (np.abs(y) >= PLACEHOLDER_EPSILON)
        for px, py in PLACEHOLDER_POINTS:
            ok &= ~((x == px) & (y == py))
    return ok


def _empty(vals: list[str]) -> np.ndarray:
    return np.array(vals, dtype=object) == ""


def parse_times(values: list[str], spec: TimeField) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(UTC times as datetime64[s] with NaT, empty mask, unreadable mask) of one time column."""
    n = len(values)
    empty = _empty(values)
    idx = np.flatnonzero(~empty)
    naive = np.full(n, _NAT)
    aware = spec.format is not None and ("%z" in spec.format or "%Z" in spec.format)
    if spec.format is not None and not aware:
        got, unfit = _parse_fixed(values, idx, spec.format)
        naive[idx] = got
        rest = idx[unfit]
    else:
        rest = idx
    utc = None
    if len(rest):
        vals = pd.Series([values[i] for i in rest], dtype=object)
        fmt = spec.format or "ISO8601"
        try:
            dt = pd.to_datetime(vals, format=fmt, errors="coerce", utc=aware)
        except (ValueError, TypeError):  # ISO 8601 text mixing offsets and none
            dt = pd.to_datetime(vals, format=fmt, errors="coerce", utc=True)
        if dt.dt.tz is None:
            naive[rest] = dt.to_numpy(dtype="datetime64[s]")
        else:
            utc = (rest, dt.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[s]"))
    local = pd.Series(naive).dt.tz_localize(spec.tz, ambiguous=np.ones(n, dtype=bool), nonexistent="shift_forward")
    out = local.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[s]")
    if utc is not None:
        out[utc[0]] = utc[1]
    bad = np.isnat(out) & ~empty
    return out, empty, bad


def _iso(times: np.ndarray) -> list[str]:
    return np.char.add(np.datetime_as_string(times, unit="s"), "Z").tolist()


def _text(cols: _Columns, spec: TextField | None) -> list[str] | None:
    if spec is None:
        return None
    if spec.value is not None:
        return [spec.value] * cols.n
    if spec.column is not None:
        return cols(spec.column)
    names = template_columns(spec.template or "")
    k = iter(range(len(names)))
    fmt = "".join(lit.replace("{", "{{").replace("}", "}}") + ("" if name is None else "{" + str(next(k)) + "}")
                  for lit, name, _s, _c in string.Formatter().parse(spec.template or ""))
    if not names:
        return [fmt.format().strip(_TEMPLATE_TRIM)] * cols.n
    return [fmt.format(*vals).strip(_TEMPLATE_TRIM) for vals in zip(*(cols(c) for c in names), strict=True)]


def _clean(vals: list[str], limit: int, bad: re.Pattern, sep: str) -> tuple[list[str], np.ndarray]:
    """Control characters replaced by a space; longer than ``limit``: shortened with "…". (values, shortened mask)."""
    if bad.search(sep.join(vals)):
        vals = [bad.sub(" ", v) for v in vals]
    long = np.zeros(len(vals), dtype=bool)
    if vals and max(map(len, vals)) > limit:
        long = np.fromiter((len(v) > limit for v in vals), dtype=bool, count=len(vals))
        vals = [v[: limit - 1] + "…" if len(v) > limit else v for v in vals]
    return vals, long


def _mapped(cols: _Columns, spec: MappedField) -> tuple[list[str | None], list[str], np.ndarray]:
    """(mapped values, raw values, used-the-fallback mask). Unmapped without a fallback: None."""
    n = cols.n
    if spec.value is not None:
        const = [str(spec.value)] * n
        return list(const), const, np.zeros(n, dtype=bool)
    raw = cols(spec.column)
    if spec.map is None:
        mapped: list[str | None] = [v or None for v in raw]
    else:
        table = {k: str(v) for k, v in spec.map.items()}
        mapped = [table.get(v) for v in raw]
    missing = np.equal(np.array(mapped, dtype=object), None)
    fell = np.zeros(n, dtype=bool)
    if spec.fallback is not None and missing.any():
        fb = str(spec.fallback)
        mapped = [fb if v is None else v for v in mapped]
        fell = missing
    return mapped, raw, fell


@dataclass
class _Context:
    mapping: Mapping
    city: Any
    source: str
    file_label: str
    now_limit: np.datetime64
    district_bounds: tuple[float, float, float, float]
    category_department: dict[str, str | None]
    category_name: dict[str, str]


def _plan(status: str, has_dept: bool) -> list[tuple[str, bool]]:
    """The steps after ``report`` for a row: (action, is it the source's own step). The others are inferred: the
    lifecycle's path (core.lifecycle.path_to) from 立案 to the row's status, through a department when the row names
    one, else by 现场处置 (onsite); without a department nothing past 立案 is inferred unless the row is done."""
    if status == "reported":
        return []
    stage_unknown = status == "open"
    target = {"cancelled": "closed", "referred": "closed", "open": "dispatched"}.get(status, status)
    if not has_dept and (stage_unknown or status not in TERMINAL):
        target = "registered"
    through = lifecycle.FORWARD if has_dept else (Action.ONSITE, Action.CLOSE)
    steps = [Action.REGISTER, *lifecycle.path_to(Status.REGISTERED, Status(target), through)]
    return [(a.value, i == len(steps) - 1 and a is not Action.REGISTER and not stage_unknown)
            for i, a in enumerate(steps)]


_PLANS = {(s, d): _plan(s, d) for s in STATUSES for d in (True, False)}
# Each step after the report as a %-template over (source JSON, external id, time[, department]): the actor
# marks a step the source does not record (inferred), a dispatch names its department.
def _step_template(action: str, own: bool) -> str:
    return ('{"source":%s,"external_id":"%s","event":"' + action + '","event_id":"' + EVENT_ID_PREFIX + action
            + '","occurred_at":"%s"' + ("" if own else ',"actor":"' + INFERRED_ACTOR + '"')
            + (',"departments":["%s"]' if action == "dispatch" else "") + "%s}")


_STEP_TEMPLATES = {key: [(action, _step_template(action, own)) for action, own in plan] for key, plan in _PLANS.items()}
_FLAG_LISTS: dict[int, list[str]] = {}


def _flags_of(bits: int) -> list[str]:
    got = _FLAG_LISTS.get(bits)
    if got is None:
        got = _FLAG_LISTS[bits] = [name for name, b in _BIT.items() if bits & b]
    return got


class _Failures:
    """The first problem of each row that cannot be mapped (a row is dead-lettered for one reason)."""

    def __init__(self, n: int, report: ImportReport):
        self.reasons: list[str | None] = [None] * n
        self.report = report

    def add(self, mask: np.ndarray, kind: str, reason: Callable[[int], str]) -> None:
        for i in np.flatnonzero(mask):
            if self.reasons[i] is None:
                self.reasons[i] = reason(int(i))
                self.report.dead[kind] += 1

    def ok(self) -> np.ndarray:
        return np.equal(np.array(self.reasons, dtype=object), None)


class _Times(NamedTuple):
    """A chunk's times in UTC (NaT where empty or unreadable)."""

    created: np.ndarray
    closed: np.ndarray | None
    closed_empty: np.ndarray | None
    due: np.ndarray | None


@dataclass
class _Codes:
    """A chunk's status, category, department and grade, translated through the mapping."""

    status: list[str]  # the import status, "" where unknown
    status_raw: list[str]
    category: list[str | None]
    category_raw: list[str]
    category_fell: np.ndarray  # filed under category.fallback
    department: list[str | None]
    grade: list[str | None] | None


@dataclass
class _Rows:
    """A chunk mapped column by column: what each good row's events are built from."""

    ids: list[str]
    created: list[str]  # ISO 8601, UTC
    end: list[str]  # when a done case ended (ISO 8601, UTC)
    codes: _Codes
    flags: list[int]
    notes: dict[int, str]  # row -> the note on its last step
    title: list[str]
    texts: list[tuple[str, list[str]]]  # (field, values) of the other texts
    due: list[str | None] | None
    lons: list[float] | None  # WGS84, NaN where unusable
    lats: list[float] | None


def map_chunk(df: pd.DataFrame, ctx: _Context, first_row: int, report: ImportReport,
              seen_ids: set[str] | None) -> tuple[list[bytes], list[tuple[dict, str]]]:
    """Map one chunk: (canonical events as JSON, in row order; [(raw row, reason)] for the rows that cannot be mapped)."""
    m = ctx.mapping
    cols = _Columns(df)
    fails = _Failures(len(df), report)
    ids = _ids(cols, m, fails)
    times = _times(cols, m, ctx, fails)
    codes = _codes(cols, m, ctx, fails)
    ok = fails.ok()
    end, flags, notes = _case_end(cols, m, ctx, times, codes)
    flags |= _outcome_flags(m, codes, notes)
    due, due_flags = _due(times.due, ctx)
    title, texts, text_flags = _texts(cols, m, ctx, codes)
    flags |= due_flags | text_flags
    lons, lats = _locate(cols, m, ctx, ok, report)
    _count(report, ok, ids, codes, flags, seen_ids)
    rows = _Rows(ids=ids, created=_iso(times.created), end=_iso(end), codes=codes, flags=flags.tolist(), notes=notes,
                 title=title, texts=texts, due=due, lons=lons, lats=lats)
    return _events(df, ctx, first_row, fails.reasons, rows)


# ---- per-column parsing: every problem dead-letters the row, the first one found names why


def _ids(cols: _Columns, m: Mapping, fails: _Failures) -> list[str]:
    idcol = m.external_id.column
    ids = cols(idcol)
    fails.add(_empty(ids), f"{idcol}: the id is empty",
              lambda i: f"{idcol}: the id is empty")
    badid = np.fromiter((bool(v) and (len(v) > LIMITS["external_id"] or not _ID_FULL.match(v)) for v in ids),
                        dtype=bool, count=cols.n)
    fails.add(badid, f"{idcol}: unusable id", lambda i: f"{idcol}: the id {ids[i]!r} cannot be used (letters, digits and "
              f"_ . : / # @ + - only, starting with a letter or digit; at most {LIMITS['external_id']} characters)")
    return ids


def _time_column(cols: _Columns, fails: _Failures, spec: TimeField, required: bool) -> tuple[np.ndarray, np.ndarray]:
    raw = cols(spec.column)
    t, empty, bad = parse_times(raw, spec)
    c = spec.column
    how = f"format {spec.format!r}" if spec.format else "ISO 8601"
    fails.add(bad, f"{c}: unreadable time", lambda i: f"{c}: cannot read {raw[i]!r} as a time ({how})")
    if required:
        fails.add(empty, f"{c}: empty time", lambda i: f"{c}: the time is empty")
    fails.add(t < np.datetime64("2000-01-01T00:00:00", "s"), f"{c}: before 2000",
              lambda i: f"{c}: {raw[i]!r} is before 2000-01-01")
    return t, empty


def _times(cols: _Columns, m: Mapping, ctx: _Context, fails: _Failures) -> _Times:
    created, _ = _time_column(cols, fails, m.created_at, True)
    ccol = m.created_at.column
    fails.add(created > ctx.now_limit, f"{ccol}: in the future",
              lambda i: f"{ccol}: {cols(ccol)[i]!r} is more than 24 hours in the future")
    closed = closed_empty = due = None
    if m.closed_at is not None:
        closed, closed_empty = _time_column(cols, fails, m.closed_at, False)
    if m.due_at is not None:
        due, _ = _time_column(cols, fails, m.due_at, False)
    return _Times(created, closed, closed_empty, due)


def _codes(cols: _Columns, m: Mapping, ctx: _Context, fails: _Failures) -> _Codes:
    status, status_raw = _status(cols, m, fails)
    category, category_raw, category_fell = _category(cols, m, fails)
    department = _department(cols, m, ctx, fails, category)
    grade = _grade(cols, m, fails)
    return _Codes(status=[s or "" for s in status], status_raw=status_raw, category=category, category_raw=category_raw,
                  category_fell=category_fell, department=department, grade=grade)


def _status(cols: _Columns, m: Mapping, fails: _Failures) -> tuple[list[str | None], list[str]]:
    if m.status is None:
        status = ["registered"] * cols.n
        return status, status
    status, raw, _ = _mapped(cols, m.status)
    if m.status.column is not None:
        scol = m.status.column
        fails.add(np.equal(np.array(status, dtype=object), None), f"{scol}: unknown status",
                  lambda i: f"{scol}: unknown status {raw[i]!r} (add it to status.map or set status.fallback)")
    return status, raw


def _category(cols: _Columns, m: Mapping, fails: _Failures) -> tuple[list[str | None], list[str], np.ndarray]:
    category, raw, fell = _mapped(cols, m.category)
    if m.category.column is not None:
        kcol = m.category.column
        fails.add(np.equal(np.array(category, dtype=object), None), f"{kcol}: unknown category",
                  lambda i: f"{kcol}: unknown category {raw[i]!r} (add it to category.map or set category.fallback)")
    return category, raw, fell


def _department(cols: _Columns, m: Mapping, ctx: _Context, fails: _Failures, category: list[str | None]) -> list[str | None]:
    """The row's department; without one in the mapping (or with ``fallback: category``), its category's."""
    cat_dep = ctx.category_department
    if m.department is None:
        return [cat_dep.get(c) for c in category]
    dep, raw, fell = _mapped(cols, m.department)
    if m.department.fallback == "category":
        dep = [cat_dep.get(category[i]) if f else d for i, (d, f) in enumerate(zip(dep, fell, strict=True))]
    if m.department.column is not None:
        dcol = m.department.column
        unknown = np.fromiter((d is None and bool(r) for d, r in zip(dep, raw, strict=True)), dtype=bool, count=cols.n)
        fails.add(unknown, f"{dcol}: unknown department",
                  lambda i: f"{dcol}: unknown department {raw[i]!r} (add it to department.map or set department.fallback)")
    return dep


def _grade(cols: _Columns, m: Mapping, fails: _Failures) -> list[str | None] | None:
    if m.grade is None:
        return None
    grade, raw, _ = _mapped(cols, m.grade)
    grade = [g if g in ("1", "2", "3", "4") else None for g in grade]
    if m.grade.column is not None:
        gcol = m.grade.column
        fails.add(np.fromiter((g is None and bool(r) for g, r in zip(grade, raw, strict=True)), dtype=bool, count=cols.n),
                  f"{gcol}: unknown grade",
                  lambda i: f"{gcol}: {raw[i]!r} is not a grade (add it to grade.map or set grade.fallback)")
    return grade


# ---- status → events: when a case ended, and the flags and notes its events carry


def _case_end(cols: _Columns, m: Mapping, ctx: _Context, times: _Times,
              codes: _Codes) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """(end times, flags, notes by row) of the done rows: the source's close time, but never before the creation
    and never in the future; missing, earlier or later, the case ends at its creation time, flagged and noted."""
    created, closed = times.created, times.closed
    terminal = np.isin(np.array(codes.status, dtype=object), list(TERMINAL))
    flags = np.zeros(len(created), dtype=np.int64)
    end = created.copy()
    notes: dict[int, str] = {}
    if closed is not None:
        craw = cols(m.closed_at.column)
        before = terminal & (closed < created)
        invalid = terminal & (closed > ctx.now_limit)
        usable = terminal & ~np.isnat(closed) & ~before & ~invalid
        end = np.where(usable, closed, created)
        flags |= np.where(before, _BIT["closed_before_created"], 0)
        flags |= np.where(invalid, _BIT["close_time_invalid"], 0)
        for i in np.flatnonzero(before):
            notes[i] = f"closed at the source at {craw[i]} (before it was created); recorded at the creation time"
        for i in np.flatnonzero(invalid):
            notes[i] = f"closed at the source at {craw[i]} (in the future); recorded at the creation time"
        missing_close = terminal & times.closed_empty
    else:
        missing_close = terminal
    flags |= np.where(missing_close, _BIT["close_time_missing"], 0)
    for i in np.flatnonzero(missing_close):
        notes[i] = "no close time at the source; recorded at the creation time"
    return end, flags, notes


def _outcome_flags(m: Mapping, codes: _Codes, notes: dict[int, str]) -> np.ndarray:
    """Flags for cancelled and referred rows (noted in ``notes``), a category fallback and a missing department."""
    st = np.array(codes.status, dtype=object)
    flags = np.zeros(len(st), dtype=np.int64)
    scol_label = f"{m.status.column} " if m.status is not None and m.status.column is not None else ""
    for value, flag, words in (("cancelled", "cancelled_at_source", "cancelled"), ("referred", "referred_out", "referred out")):
        mask = st == value
        flags |= np.where(mask, _BIT[flag], 0)
        for i in np.flatnonzero(mask):
            txt = f"{words} at the source ({scol_label}{codes.status_raw[i]!r})"
            notes[i] = f"{notes[i]}; {txt}" if i in notes else txt
    flags |= np.where(codes.category_fell, _BIT["category_fallback"], 0)
    has_dep = np.not_equal(np.array(codes.department, dtype=object), None)
    flags |= np.where(np.isin(st, ["dispatched", "accepted", "handling"]) & ~has_dep, _BIT["department_missing"], 0)
    return flags


def _due(due: np.ndarray | None, ctx: _Context) -> tuple[list[str | None] | None, np.ndarray | int]:
    """(due times as ISO 8601, None where empty or ignored; flags): a due time in the future is ignored."""
    if due is None:
        return None, 0
    due_future = due > ctx.now_limit
    due_ok = ~np.isnat(due) & ~due_future
    return [s if g else None for s, g in zip(_iso(due), due_ok, strict=True)], np.where(due_future, _BIT["due_ignored"], 0)


# ---- text and location


def _texts(cols: _Columns, m: Mapping, ctx: _Context,
           codes: _Codes) -> tuple[list[str], list[tuple[str, list[str]]], np.ndarray]:
    """(titles, [(field, values)] of the other texts, flags): control characters out, long texts shortened."""
    n = cols.n
    category = codes.category
    title = _text(cols, m.title)
    if not all(title):
        title = [t or ctx.category_name.get(category[i] or "", "") for i, t in enumerate(title)]
    title, long_any = _clean(title, LIMITS["title"], _ONE_LINE_RE, " ")
    desc = _text(cols, m.description)
    if codes.category_fell.any():  # say what the source called it
        label, fell, raw = m.category.column or "category", codes.category_fell, codes.category_raw
        base = desc or [""] * n
        desc = [f"[{label}: {raw[i]} — not in the category map, filed under {category[i]}]" + ("\n" + base[i] if base[i] else "")
                if fell[i] else base[i] for i in range(n)]
    texts: list[tuple[str, list[str]]] = []
    for key, vals, limit, bad, sep in (("description", desc, LIMITS["description"], _MULTI_LINE_RE, "\n"),
                                       ("address", _text(cols, m.address), LIMITS["address"], _ONE_LINE_RE, " "),
                                       ("reporter_name", _text(cols, m.reporter_name), LIMITS["reporter_name"], _ONE_LINE_RE, " ")):
        if vals is not None:
            vals, long = _clean(vals, limit, bad, sep)
            long_any = long_any | long
            texts.append((key, vals))
    phone = _text(cols, m.reporter_phone)
    if phone is not None:
        texts.append(("reporter_phone", [_PHONE_RE.sub("", p)[: LIMITS["reporter_phone"]] for p in phone]))
    return title, texts, np.where(long_any, _BIT["text_truncated"], 0)


def _points(cols: _Columns, loc: LocationField) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(lon, lat in WGS84 where usable, {why unusable or "usable": mask})."""
    rlon, rlat = cols(loc.lon), cols(loc.lat)
    x = pd.to_numeric(pd.Series(rlon, dtype=object), errors="coerce").to_numpy(dtype=float, copy=True)
    y = pd.to_numeric(pd.Series(rlat, dtype=object), errors="coerce").to_numpy(dtype=float, copy=True)
    blank = _empty(rlon) | _empty(rlat)
    unreadable = ~blank & (np.isnan(x) | np.isnan(y))
    placeholder = np.zeros(cols.n, dtype=bool)
    for px, py in loc.placeholders:
        placeholder |= (np.abs(x - px) <= loc.tolerance) & (np.abs(y - py) <= loc.tolerance)
    finite = ~blank & ~unreadable & ~placeholder
    usable = _usable(x, y) & finite
    placeholder |= finite & ~usable
    if loc.crs != "wgs84":
        for i in np.flatnonzero(usable):
            x[i], y[i] = to_wgs84(float(x[i]), float(y[i]), loc.crs)
    masks = {"no coordinates": blank, "unreadable coordinates": unreadable,
             "placeholder or unusable point": placeholder, "usable": usable}
    return x, y, masks


def _locate(cols: _Columns, m: Mapping, ctx: _Context, ok: np.ndarray,
            report: ImportReport) -> tuple[list[float] | None, list[float] | None]:
    """(lons, lats: WGS84, NaN where unusable); counts the good rows located in the district and why the others are not."""
    if m.location is None:
        if ok.any():
            report.unlocated["no coordinates"] += int(ok.sum())
        return None, None
    x, y, masks = _points(cols, m.location)
    usable = masks.pop("usable")
    x0, y0, x1, y1 = ctx.district_bounds
    located = np.zeros(cols.n, dtype=bool)
    idx = np.flatnonzero(usable & ok & (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1))
    if len(idx):
        grids = ctx.city.geography.locate_many(x[idx].tolist(), y[idx].tolist())
        located[idx] = [g is not None for g in grids]
    report.located += int((located & ok).sum())
    for why, mask in (*masks.items(), ("outside the district", usable & ~located)):
        c = int((mask & ok).sum())
        if c:
            report.unlocated[why] += c
    return np.where(usable, x, np.nan).tolist(), np.where(usable, y, np.nan).tolist()


def _count(report: ImportReport, ok: np.ndarray, ids: list[str], codes: _Codes, flags: np.ndarray,
           seen_ids: set[str] | None) -> None:
    """The good rows in the report: by status, source status, department and flag, and the ids seen before."""
    good = np.flatnonzero(ok)
    report.rows_published += len(good)
    if not len(good):
        return
    report.by_status.update(codes.status[i] for i in good)
    report.by_source_status.update(codes.status_raw[i] for i in good)
    report.by_department.update(codes.department[i] or "(none)" for i in good)
    fl = flags[good]
    for name, b in _BIT.items():
        c = int(((fl & b) != 0).sum())
        if c:
            report.flagged[name] += c
    if seen_ids is not None:
        before_n = len(seen_ids)
        seen_ids.update(ids[i] for i in good)
        report.duplicate_ids += len(good) - (len(seen_ids) - before_n)


# ---- the events, in row order, and the dead-lettered rows


def _events(df: pd.DataFrame, ctx: _Context, first_row: int, reasons: list[str | None],
            rows: _Rows) -> tuple[list[bytes], list[tuple[dict, str]]]:
    """(events as JSON in row order, [(raw row, reason)] for the rows that cannot be mapped). The report goes through
    orjson, the steps after it are filled into fixed templates (ids, times and department codes never need JSON
    escaping: ids are checked against _ID_RE)."""
    src_json = orjson.dumps(ctx.source).decode()
    events: list[bytes] = []
    dead: list[tuple[dict, str]] = []
    for i, reason in enumerate(reasons):
        if reason is not None:
            dead.append(_dead_row(df, i, first_row, reason, ctx.file_label))
            continue
        events.append(orjson.dumps(_report_event(rows, i, ctx.source)))
        _add_steps(events, rows, i, src_json)
    return events, dead


def _dead_row(df: pd.DataFrame, i: int, first_row: int, reason: str, file_label: str) -> tuple[dict, str]:
    """The row as the file has it (``_row``: its number in the file) and the reason with where it is."""
    row = {"_row": first_row + i, **{k: ("" if v != v else v) for k, v in df.iloc[i].to_dict().items()}}
    return row, f"{reason} (row {first_row + i} of {file_label})"


def _report_event(rows: _Rows, i: int, source: str) -> dict[str, Any]:
    rep = {"source": source, "external_id": rows.ids[i], "event": "report", "event_id": "imp-report",
           "occurred_at": rows.created[i], "category": rows.codes.category[i], "title": rows.title[i]}
    for k, vals in rows.texts:
        v = vals[i]
        if v:
            rep[k] = v
    if rows.lons is not None:
        lo = rows.lons[i]
        if lo == lo:  # not NaN
            rep["lon"] = lo
            rep["lat"] = rows.lats[i]
    grade = rows.codes.grade
    if grade is not None and grade[i] is not None:
        rep["grade"] = int(grade[i])
    if rows.due is not None and rows.due[i] is not None:
        rep["due_at"] = rows.due[i]
    if rows.flags[i]:
        rep["flags"] = _flags_of(rows.flags[i])
    return rep


def _add_steps(events: list[bytes], rows: _Rows, i: int, src_json: str) -> None:
    """The row's steps after the report (its plan), at its end time if it is done, else at its creation time."""
    d = rows.codes.department[i]
    s = rows.codes.status[i]
    plan = _STEP_TEMPLATES[(s, d is not None)]
    if not plan:
        return
    ext = rows.ids[i]
    t_end = rows.end[i] if s in TERMINAL else rows.created[i]
    note = rows.notes.get(i)
    for action, tpl in plan:
        if action == "dispatch":
            events.append((tpl % (src_json, ext, t_end, d, "")).encode())
        elif note is not None and (action == "close" or (s == "resolved" and action in ("resolve", "onsite"))):
            events.append((tpl % (src_json, ext, t_end, ',"note":' + orjson.dumps(note).decode())).encode())
        else:
            events.append((tpl % (src_json, ext, t_end, "")).encode())


# --------------------------------------------------------------------------- the import


def _context(mapping: Mapping, city, source: str, file_label: str) -> _Context:
    return _Context(
        mapping=mapping, city=city, source=source, file_label=file_label,
        now_limit=np.datetime64((datetime.now(UTC) + timedelta(hours=23)).replace(tzinfo=None), "s"),
        district_bounds=city.geography.bounds,
        category_department={c: getattr(cat, "department", None) for c, cat in city.categories.items()},
        category_name={c: cat.name for c, cat in city.categories.items()},
    )


def map_rows(rows: list[dict[str, Any]], mapping: Mapping, city, source: str, file_label: str,
             first_row: int = 1) -> tuple[list[bytes], list[tuple[dict, str]]]:
    """Rows as an import dead-letters them (column → text), mapped again: (events as JSON, [(row, reason)])."""
    df = pd.DataFrame([{k: "" if v is None else str(v) for k, v in row.items()} for row in rows], dtype=str)
    check_columns(mapping, list(df.columns), file_label)
    report = ImportReport(file=file_label, mapping=mapping.path, source=source, dry_run=True)
    return map_chunk(df, _context(mapping, city, source, file_label), first_row, report, None)


def import_file(path: str | Path, mapping: Mapping | str | Path, settings=None, r=None, dry_run: bool = False, *,
                city=None, source: str | None = None, encoding: str | None = None,
                chunk_rows: int = DEFAULT_CHUNK_ROWS, progress: Callable[[ImportReport], None] | None = None,
                progress_rows: int = DEFAULT_PROGRESS_ROWS) -> ImportReport:
    """Import ``path`` (CSV or XLSX) through ``mapping`` (a Mapping or a mapping file) and return the report.

    ``dry_run`` maps and counts everything but publishes nothing (``r`` may then be None). Raises MappingError
    (the mapping does not fit the file) or ImportFileError (the file cannot be read) before publishing anything.
    """
    city = city or get_city()
    if not isinstance(mapping, Mapping):
        mapping = load_mapping(mapping, city)
    settings = settings or get_settings()
    path = Path(path)
    src = source or mapping.source.value
    if source is not None and (not re.match(_ID_RE, source) or len(source) > LIMITS["source"]):
        raise MappingError([f"--source: {source!r} is not a usable source name; use letters, digits, - and _"])
    label = path.name
    chunks, enc = read_chunks(path, mapping, encoding, chunk_rows)
    report = ImportReport(file=label, mapping=mapping.path, source=src, dry_run=dry_run, encoding=enc)
    producer = None
    if not dry_run:
        if r is None:
            r = get_redis(settings)
        producer = Producer(r, settings, source=src)
    ctx = _context(mapping, city, src, label)
    seen: set[str] = set()
    # Mapping a chunk allocates hundreds of thousands of short-lived objects and no cycles: collect the
    # young generation less often while importing (as the worker does), and restore the settings after.
    thresholds = gc.get_threshold()
    gc.set_threshold(50_000, 20, 100)
    try:
        _run(chunks, mapping, ctx, report, seen, producer, r if producer is not None else None, settings,
             progress, progress_rows)
    finally:
        gc.set_threshold(*thresholds)
    return report


def _run(chunks, mapping, ctx, report, seen, producer, r, settings, progress, progress_rows) -> None:
    label = ctx.file_label
    src = ctx.source
    if producer is not None:
        names = StreamNames.of(settings)
    t0 = time.perf_counter()
    next_progress = progress_rows
    for events, dead in _mapped_chunks(chunks, mapping, ctx, report, seen):
        if producer is not None:
            if events:
                producer.bulk(events)  # after live events: an import never holds up the wall
            if dead:
                pipe = r.pipeline(transaction=False)
                for raw, reason in dead:
                    dead_letter(pipe, names, settings, orjson.dumps(raw, default=str), reason,
                                stream=f"import:{label}"[:120], source=src)
                pipe.execute()
        report.events_published += len(events)
        report.seconds = time.perf_counter() - t0
        if progress is not None and report.rows_read >= next_progress:
            progress(report)
            next_progress = (report.rows_read // progress_rows + 1) * progress_rows
    report.seconds = time.perf_counter() - t0


def _mapped_chunks(chunks, mapping, ctx, report, seen) -> Iterator[tuple[list[bytes], list[tuple[dict, str]]]]:
    """(events, rejected rows) chunk by chunk; checks the header first and counts rows read and rejected."""
    first = True
    for chunk in chunks:
        chunk.columns = [str(c).strip() for c in chunk.columns]
        if first:
            check_columns(mapping, list(chunk.columns), ctx.file_label)
            first = False
        if not len(chunk):
            continue
        events, dead = map_chunk(chunk, ctx, report.rows_read + 1, report, seen)
        report.rows_read += len(chunk)
        report.rows_dead += len(dead)
        yield events, dead
    if first:
        raise ImportFileError("the file has no header row")


def iter_records(path: str | Path, mapping_path: str | Path, *, city=None, encoding: str | None = None) -> Iterator[dict]:
    """The canonical case events of a spreadsheet export, in time order (for replaying an export as a drill).

    Rows that cannot be mapped are left out (``import --dry-run`` lists them with reasons); a case's own events
    keep their order, since each row's steps are never earlier than the one before.
    """
    city = city or get_city()
    mapping = load_mapping(mapping_path, city)
    path = Path(path)
    chunks, _ = read_chunks(path, mapping, encoding, DEFAULT_CHUNK_ROWS)
    ctx = _context(mapping, city, mapping.source.value, path.name)
    report = ImportReport(file=path.name, mapping=mapping.path, source=mapping.source.value, dry_run=True, encoding="")
    records = [orjson.loads(e) for events, _dead in _mapped_chunks(chunks, mapping, ctx, report, set()) for e in events]
    records.sort(key=lambda rec: rec["occurred_at"])  # stable: equal times keep row order
    return iter(records)


# --------------------------------------------------------------------------- command line


def add_import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Import a CSV or XLSX export through a YAML mapping (config/mappings/README.md): each row "
                          "becomes one case's legal event sequence on the case stream; rows that cannot be mapped are "
                          "dead-lettered with the column and the problem. Importing the same file again changes nothing.")
    parser.add_argument("file", help="the export: .csv (any other extension is read as CSV) or .xlsx")
    parser.add_argument("--mapping", required=True, help="the YAML mapping, e.g. config/mappings/la311.yaml")
    parser.add_argument("--source", default=None, help="source name for the cases (default: the mapping's source.value)")
    parser.add_argument("--dry-run", action="store_true", help="map and count every row, publish nothing")
    parser.add_argument("--encoding", default=None,
                        help="CSV text encoding (default: UTF-8 with or without BOM if the first MiB is valid UTF-8, "
                             "else gb18030 for Chinese Excel/WPS exports)")
    parser.add_argument("--progress", type=int, default=DEFAULT_PROGRESS_ROWS, metavar="N",
                        help=f"print a progress line every N rows (default {DEFAULT_PROGRESS_ROWS:,}; 0: none)")
    parser.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS, metavar="N",
                        help=f"rows mapped and published at a time (default {DEFAULT_CHUNK_ROWS:,})")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of text")


def main_import(args: argparse.Namespace) -> int:
    def progress(rep: ImportReport) -> None:
        rate = rep.rows_read / rep.seconds if rep.seconds else 0.0
        print(f"… {rep.rows_read:,} rows read, {rep.rows_published:,} published, {rep.rows_dead:,} dead-lettered "
              f"({rate:,.0f} rows/s)", file=sys.stderr, flush=True)

    try:
        rep = import_file(args.file, args.mapping, get_settings(), None, dry_run=args.dry_run, source=args.source,
                          encoding=args.encoding, chunk_rows=max(1, args.chunk_rows),
                          progress=progress if args.progress > 0 else None, progress_rows=max(1, args.progress))
    except MappingError as exc:
        print("The mapping cannot be used:", *exc.problems, sep="\n  ", file=sys.stderr)
        return 2
    except ImportFileError as exc:
        print(f"Cannot import {args.file}: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "json", False):
        print(orjson.dumps(rep.as_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(rep)
    return 0

