"""Canonical records: the one shape every feed publishes and every worker applies.

A feed turns its source's shape into a ``CaseEvent`` or a ``SensorReading`` (as a plain dict)
and publishes it. The worker (and the HTTP push endpoint, to answer item by item) parses it
with :func:`parse_case_event` / :func:`parse_sensor_reading`, which check types, ranges,
lengths and control characters, and — given a :class:`Catalog` — that categories,
departments, sensor types and grid codes exist. Every problem is reported as
``field: problem`` so a dead letter says exactly what to fix.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from core.lifecycle import NEEDS_DEPARTMENTS, Action

CITY_TZ = ZoneInfo("Asia/Shanghai")  # the city's one time zone: every other part takes it from here

# Field limits (characters). Anything longer is rejected, not truncated: truncation would lose data silently.
LIMITS = {
    "source": 32,
    "external_id": 128,
    "event_id": 128,
    "title": 200,
    "description": 4000,
    "address": 300,
    "reporter_name": 64,
    "reporter_phone": 32,
    "actor": 64,
    "note": 2000,
    "device_id": 64,
}
MAX_DEPARTMENTS = 20
MAX_FUTURE = timedelta(hours=24)  # clocks drift; a record from further in the future is an error
MIN_TIME = datetime(2000, 1, 1, tzinfo=UTC)

# Text may not hold control characters (a multi-line field may hold newlines and tabs). Checked by the
# schema's own regex engine, not a Python call per field; _problems() turns the errors into plain words.
_ONE_LINE = r"^[^\x00-\x1f\x7f\u2028\u2029]*$"
_MULTI_LINE = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u2028\u2029]*$"


@dataclass(frozen=True)
class Catalog:
    """What the city knows, for checking references. Empty collections mean "don't check"."""

    categories: Mapping[str, Any] = field(default_factory=dict)
    departments: Collection[str] = field(default_factory=frozenset)
    sensor_types: Collection[str] = field(default_factory=frozenset)
    grid_codes: Collection[str] = field(default_factory=frozenset)
    default_grade: Mapping[str, int] = field(default_factory=dict)


class RecordError(ValueError):
    """A record that cannot be applied. ``problems`` is a list of "field: problem" strings."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


_future = [0.0, MIN_TIME]  # (monotonic time it was computed, newest acceptable time), refreshed each second


def _latest_acceptable() -> datetime:
    now = time.monotonic()
    if now - _future[0] > 1.0:
        _future[0], _future[1] = now, datetime.now(UTC) + MAX_FUTURE
    return _future[1]


def _aware_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        # A naive time is the city's local time (documented for every feed).
        value = value.replace(tzinfo=CITY_TZ)
    try:
        value = value.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 moved across zones: out of range either way, a problem, not a crash
        raise ValueError("is before 2000-01-01" if value.year < 2000 else "is more than 24 hours in the future") from None
    if value < MIN_TIME:
        raise ValueError("is before 2000-01-01")
    if value > _latest_acceptable():
        raise ValueError("is more than 24 hours in the future")
    return value


def _text(limit: int, multiline: bool = False):
    return Annotated[
        str,
        StringConstraints(strip_whitespace=True, max_length=limit, pattern=_MULTI_LINE if multiline else _ONE_LINE),
    ]


# Identifiers: checked by the schema itself (no Python call per record), numbers accepted as text.
Ident = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/#@+-]*$")]
_LATEST_DEADLINE = datetime(2100, 1, 1, tzinfo=UTC)


def _deadline(value: datetime) -> datetime:
    """A deadline may lie far ahead (working days, an approved extension), but not before 2000 or after 2100."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=CITY_TZ)
    try:
        value = value.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 moved across zones
        value = None
    if value is None or value < MIN_TIME or value >= _LATEST_DEADLINE:
        raise ValueError("must be between 2000-01-01 and 2100-01-01")
    return value


Time = Annotated[datetime, AfterValidator(_aware_utc)]  # when something happened: not in the future
Deadline = Annotated[datetime, AfterValidator(_deadline)]  # when something is due
Lon = Annotated[float, Field(ge=-180, le=180)]  # NaN and infinities are refused by allow_inf_nan=False
Lat = Annotated[float, Field(ge=-90, le=90)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True, allow_inf_nan=False,
                              coerce_numbers_to_str=True)


class CaseEvent(_Record):
    """One thing that happened to one case, from one source.

    The first event of a case is ``report`` and carries the case's fields; later events carry
    only what they change. ``(source, external_id, event_id)`` identifies the event: applying it
    twice changes nothing.
    """

    source: Annotated[Ident, Field(max_length=LIMITS["source"])]
    external_id: Annotated[Ident, Field(max_length=LIMITS["external_id"])]
    event: Action
    event_id: Annotated[Ident, Field(max_length=LIMITS["event_id"])] | None = None
    occurred_at: Time
    actor: _text(LIMITS["actor"]) | None = None
    # Case fields (report; category/grade/location may be corrected by later events).
    category: Annotated[str, Field(max_length=8, pattern=r"^[0-9A-Za-z]+$")] | None = None
    grade: Annotated[int, Field(ge=1, le=4)] | None = None
    title: _text(LIMITS["title"]) | None = None
    description: _text(LIMITS["description"], multiline=True) | None = None
    address: _text(LIMITS["address"]) | None = None
    reporter_name: _text(LIMITS["reporter_name"]) | None = None
    reporter_phone: Annotated[str, Field(max_length=LIMITS["reporter_phone"], pattern=r"^[0-9+\-() ]*$")] | None = None
    lon: Lon | None = None
    lat: Lat | None = None
    grid_code: Annotated[str, Field(pattern=r"^[0-9]{15}$")] | None = None
    departments: Annotated[list[Annotated[str, Field(max_length=32)]], Field(max_length=MAX_DEPARTMENTS)] | None = None
    due_at: Deadline | None = None
    accept_due_at: Deadline | None = None
    onsite: bool | None = None
    note: _text(LIMITS["note"], multiline=True) | None = None
    rating: Annotated[int, Field(ge=1, le=5)] | None = None
    # Data-quality flags a feed raises about the case, e.g. "closed_before_created" (kept on the case, counted).
    flags: Annotated[list[Annotated[str, Field(max_length=40, pattern=r"^[a-z0-9_]+$")]], Field(max_length=10)] | None = None
    # 演练: a replayed drill (``ingest replay`` sets it; the push API refuses it). Marks the case at its report.
    drill: bool = Field(False, description="set by a drill replay only; the push API refuses true")

    def problems(self, catalog: Catalog | None) -> list[str]:
        """What is wrong beyond types and ranges: missing fields for the event, unknown references."""
        return self._missing() + (self._unknown(catalog) if catalog is not None else [])

    def _missing(self) -> list[str]:
        """The fields this event needs and lacks (each line one check: a flat list reads best)."""
        problems: list[str] = []
        if self.event is Action.REPORT:
            if not self.category:
                problems.append("category: required for a report")
            if not self.title:
                problems.append("title: required for a report")
        if self.event is Action.EXTEND and self.due_at is None:
            problems.append("due_at: required for extend (the approved new deadline)")
        if self.event is Action.SUPERVISE and not self.note:
            problems.append("note: required for supervise (the 批示, what the department is to do)")
        if self.event is Action.CHECKIN and (not self.departments or len(self.departments) != 1):
            problems.append("departments: checkin names exactly one department (the one reporting in)")
        if self.event in NEEDS_DEPARTMENTS and not self.departments:
            problems.append(f"departments: required for {self.event.value}")
        if (self.lon is None) != (self.lat is None):
            problems.append("lon/lat: give both or neither")
        return problems

    def _unknown(self, catalog: Catalog) -> list[str]:
        """The category, departments and grid this event names that the city does not have."""
        problems: list[str] = []
        if self.category and catalog.categories and self.category not in catalog.categories:
            problems.append(f"category: unknown category {self.category!r} (see config/city/categories.yaml)")
        unknown = [d for d in self.departments or [] if catalog.departments and d not in catalog.departments]
        if unknown:
            problems.append(f"departments: unknown department(s) {', '.join(map(repr, unknown))} "
                            "(see config/city/departments.yaml)")
        if self.grid_code and catalog.grid_codes and self.grid_code not in catalog.grid_codes:
            problems.append(f"grid_code: unknown grid {self.grid_code!r}")
        return problems

    @property
    def key(self) -> str:
        """The event's identity within its case."""
        return self.event_id or f"{self.event.value}@{self.occurred_at.isoformat()}"


class SensorReading(_Record):
    """One reading from one device. A device is registered by its first reading."""

    source: Annotated[Ident, Field(max_length=LIMITS["source"])] = "sensor"
    device_id: Annotated[Ident, Field(max_length=LIMITS["device_id"])]
    type: Annotated[str, Field(max_length=32)]
    # "reading" carries a value; "offline" says the device has been silent past its heartbeat (from the device watch).
    kind: Literal["reading", "offline"] = "reading"
    value: float | None = None
    ts: Time
    lon: Lon | None = None
    lat: Lat | None = None
    grid_code: Annotated[str, Field(pattern=r"^[0-9]{15}$")] | None = None
    battery: Annotated[float, Field(ge=0, le=100)] | None = None
    drill: bool = False  # a replayed drill's reading: its device and the alarms and cases it raises are drills

    def problems(self, catalog: Catalog | None) -> list[str]:
        """What is wrong beyond types and ranges: unknown sensor type or grid."""
        problems = []
        if self.kind == "reading" and self.value is None:
            problems.append("value: required for a reading")
        if (self.lon is None) != (self.lat is None):
            problems.append("lon/lat: give both or neither")
        if catalog is not None and catalog.sensor_types and self.type not in catalog.sensor_types:
            problems.append(f"type: unknown sensor type {self.type!r}; use one of: {', '.join(sorted(catalog.sensor_types))}")
        if catalog is not None and self.grid_code and catalog.grid_codes and self.grid_code not in catalog.grid_codes:
            problems.append(f"grid_code: unknown grid {self.grid_code!r}")
        return problems


def _problems(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in err["loc"]) or "record"
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        kind = err["type"]
        if kind == "extra_forbidden":
            msg = "unknown field (remove it, or check its spelling)"
        elif kind == "string_too_long":
            msg = f"is longer than the limit of {err['ctx']['max_length']} characters"
        elif kind == "string_pattern_mismatch":
            pattern = err["ctx"]["pattern"]
            if pattern == _ONE_LINE:
                msg = "contains control characters (newlines, tabs and other non-printing characters are not allowed here)"
            elif pattern == _MULTI_LINE:
                msg = "contains control characters (only newline and tab are allowed)"
        elif kind == "missing":
            msg = "required field is missing"
        if loc == "record" and ": " in msg:
            out.extend(msg.split("; "))
        else:
            out.append(f"{loc}: {msg}")
    return out


def parse_record(model: type[_Record], raw: Any, catalog: Catalog | None = None):
    """A record of ``model`` from a decoded JSON value, or RecordError naming each bad field."""
    if not isinstance(raw, dict):
        raise RecordError([f"record: expected a JSON object, got {type(raw).__name__}"])
    try:
        rec = model.model_validate(raw)
    except ValidationError as exc:
        raise RecordError(_problems(exc)) from None
    problems = rec.problems(catalog)
    if problems:
        raise RecordError(problems)
    return rec


def parse_case_event(raw: Any, catalog: Catalog | None = None) -> CaseEvent:
    return parse_record(CaseEvent, raw, catalog)


def parse_sensor_reading(raw: Any, catalog: Catalog | None = None) -> SensorReading:
    return parse_record(SensorReading, raw, catalog)


_ADAPTERS = {}


def _adapter(model):
    from pydantic import TypeAdapter

    if model not in _ADAPTERS:
        _ADAPTERS[model] = (TypeAdapter(model), TypeAdapter(list[model]))
    return _ADAPTERS[model]


def parse_json_entry(raw: bytes, model: type[_Record], catalog: Catalog | None = None):
    """Parse a stream entry's JSON: one record (an object) or a batch (an array).

    Returns (records, rejects) where rejects are (index, raw item bytes, problems). The whole
    batch is validated in one call; only a batch with a bad record is parsed again item by item.
    """
    import orjson

    one, many = _adapter(model)
    is_list = raw.lstrip()[:1] == b"["
    try:
        records = many.validate_json(raw) if is_list else [one.validate_json(raw)]
    except ValidationError:
        pass
    else:
        if not any(rec.problems(catalog) for rec in records):
            return records, []
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return [], [(None, raw, [f"record: payload is not valid JSON ({exc})"])]
    items = data if isinstance(data, list) else [data]
    good, bad = [], []
    for i, item in enumerate(items):
        try:
            good.append(parse_record(model, item, catalog))
        except RecordError as exc:
            bad.append((i if is_list else None, orjson.dumps(item), exc.problems))
    if is_list and not items:
        bad.append((None, raw, ["record: empty batch"]))
    return good, bad


CASE_ID_DIGITS = 18  # a case id fits a signed 64-bit integer


def case_id_of(text: str) -> int | None:
    """The case id written in ``text`` (a positive whole number in ASCII digits), or None if it is not one."""
    if not text or len(text) > CASE_ID_DIGITS or not text.isascii() or not text.isdigit() or int(text) <= 0:
        return None
    return int(text)
