"""Open311 GeoReport v2 pull feed: services and service requests from a city's 311 endpoint.

``python -m ingest open311`` polls every enabled endpoint of ``config/feeds.yaml`` (``--once`` for one
poll); the scheduler registers one job per enabled endpoint through :func:`scheduled_polls`.

How a poll works
----------------
- Requests are pulled in time windows (``start_date``/``end_date``, ISO 8601, ``window_hours`` wide) and
  pages (``page``/``page_size``) until a page comes back short. The end of the last completed window is
  kept in Redis (``<prefix>:feed:open311:<name>``, field ``window_end``); the next poll — in this process
  or after a restart — continues from there (less ``overlap_minutes``, for requests the source indexes
  late). The first poll starts ``backfill_hours`` back, or at ``--since``.
- Each request becomes a ``report`` (``requested_datetime``, ``service_request_id``, location, address,
  ``expected_datetime`` as the due time) followed by the lifecycle events its ``notes[]`` and ``status``
  say happened, in time order, mapped by a YAML mapping (``config/mappings/open311_*.yaml``). The
  sequence is always legal (:mod:`core.lifecycle`): where the source skips steps (closed without being
  assigned, say) the missing ones are inserted at the same moment, with actor ``open311`` and a note
  saying they were inferred. Event ids are derived from the source's data (``close-20150101T101540Z``),
  so pulling a window again republishes the same ids and the worker applies nothing twice.
- A source that does not answer (connection refused, timeout, 5xx, 429) is retried with exponential
  backoff (``backoff_seconds`` doubling up to ``backoff_max_seconds``, ``retries`` attempts per request);
  then the poll stops, reports it to :class:`~ingest.feedhealth.FeedHealth` and the window is not
  advanced. What cannot be read (invalid JSON, truncated XML, a record with wrong types) is
  dead-lettered with the raw text and the reason; everything readable is published.

XML is parsed with the standard library and any DTD or entity declaration is refused (no entity
expansion, no external references). Coordinates are converted to WGS84 from the endpoint's ``crs``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import signal
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import orjson
import redis
import requests
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from config.city import load_city
from config.settings import ROOT, Settings, get_settings
from core import lifecycle
from core.coords import crs_name, to_wgs84
from core.lifecycle import Action, Status, TransitionError
from core.records import CITY_TZ, LIMITS, Catalog, RecordError, parse_case_event
from ingest.feedhealth import FeedHealth
from store.services import get_redis
from store.streams import Producer

log = logging.getLogger(__name__)

INFERRED_ACTOR = "open311"
USER_AGENT = "gridwatch-open311/1"
MAX_FLAGS = 10

# --------------------------------------------------------------------------- configuration


class Open311ConfigError(ValueError):
    """A problem in config/feeds.yaml or a mapping file; the message names the file, the entry and the fix."""


NoteAction = Literal["register", "dispatch", "accept", "handle", "resolve", "close", "reopen", "whistle", "note", "ignore"]


class NoteRule(BaseModel):
    """One rule for ``notes[]``: a note of ``type`` whose summary matches ``summary`` (regex) means ``action``."""

    model_config = ConfigDict(extra="forbid")
    type: str | None = None
    summary: str | None = None
    action: NoteAction

    @field_validator("summary")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression ({exc})") from None
        return v

    def matches(self, note: dict[str, Any]) -> bool:
        if self.type is not None and str(note.get("type") or "").lower() != self.type.lower():
            return False
        return self.summary is None or re.search(self.summary, str(note.get("summary") or ""), re.IGNORECASE) is not None


class Mapping(BaseModel):
    """How one endpoint's vocabulary maps onto the city's (a ``config/mappings/open311_*.yaml`` file)."""

    model_config = ConfigDict(extra="forbid")
    categories: dict[str, str] = Field(default_factory=dict)  # service_code or service_name -> category code
    fallback_category: str
    departments: dict[str, str] = Field(default_factory=dict)  # agency_responsible -> department code
    statuses: dict[str, Status] = Field(default_factory=lambda: {"open": Status.REGISTERED, "closed": Status.CLOSED})
    notes: list[NoteRule] = Field(default_factory=list)

    def model_post_init(self, _ctx: Any) -> None:
        self._cat_lower = {str(k).strip().lower(): str(v) for k, v in self.categories.items()}
        self._dep_lower = {str(k).strip().lower(): str(v) for k, v in self.departments.items()}
        self._status_lower = {str(k).strip().lower(): v for k, v in self.statuses.items()}

    def category(self, service_code: str | None, service_name: str | None) -> str | None:
        for key in (service_code, service_name):
            if key:
                found = self.categories.get(key) or self._cat_lower.get(key.strip().lower())
                if found:
                    return found
        return None

    def department(self, agency: str | None) -> str | None:
        return self._dep_lower.get(agency.strip().lower()) if agency else None

    def status(self, raw: str | None) -> Status | None:
        return self._status_lower.get(raw.strip().lower()) if raw else None

    def note_action(self, note: dict[str, Any]) -> str:
        for rule in self.notes:
            if rule.matches(note):
                return rule.action
        return "note"

    def problems(self, city) -> list[str]:
        """References to categories or departments the city does not have."""
        out = []
        cats = [("fallback_category", self.fallback_category)] + [(f"categories[{k!r}]", v) for k, v in self.categories.items()]
        for where, code in cats:
            if code not in city.categories:
                out.append(f"{where}: unknown category {code!r} (see config/city/categories.yaml)")
        for k, code in self.departments.items():
            if code not in city.departments:
                out.append(f"departments[{k!r}]: unknown department {code!r} (see config/city/departments.yaml)")
        return out


Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=24)]


class Endpoint(BaseModel):
    """One Open311 endpoint of config/feeds.yaml (see the comments there for every field)."""

    model_config = ConfigDict(extra="forbid")
    name: Name
    enabled: bool = True
    base_url: str
    jurisdiction_id: str | None = None
    api_key: str | None = None  # "${ENV_VAR}" reads the key from the environment
    format: Literal["json", "xml"] = "json"
    poll_seconds: float = Field(300, gt=0)
    window_hours: float = Field(24, gt=0)
    page_size: int = Field(100, ge=1, le=10_000)
    max_pages: int = Field(100, ge=1)
    backfill_hours: float = Field(24, ge=0)
    overlap_minutes: float = Field(15, ge=0)
    max_windows_per_poll: int = Field(500, ge=1)
    crs: str = "wgs84"
    timezone: str = CITY_TZ.key  # for source times without an offset
    mapping: str  # path of the mapping file, relative to the project root
    source: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/#@+-]*$", max_length=LIMITS["source"])] | None = None
    params: dict[str, str] = Field(default_factory=dict)  # extra query parameters, e.g. {extensions: "true"}
    start_param: str = "start_date"
    end_param: str = "end_date"
    timeout_seconds: float = Field(30, gt=0)
    retries: int = Field(4, ge=1, le=20)
    backoff_seconds: float = Field(1.0, ge=0)
    backoff_max_seconds: float = Field(60.0, ge=0)

    @field_validator("crs")
    @classmethod
    def _crs(cls, v: str) -> str:
        return crs_name(v)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        ZoneInfo(v)
        return v

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://", v):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")

    @property
    def source_name(self) -> str:
        return self.source or f"open311-{self.name}"

    @property
    def key(self) -> str | None:
        """The API key, with ``${VAR}`` read from the environment."""
        if not self.api_key:
            return None
        m = re.fullmatch(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", self.api_key.strip())
        return os.environ.get(m.group(1)) if m else self.api_key

    def mapping_path(self) -> Path:
        p = Path(self.mapping)
        return p if p.is_absolute() else ROOT / p


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _pydantic_problems(where: str, exc: ValidationError) -> list[str]:
    return [f"{where}: {'.'.join(str(p) for p in e['loc']) or 'entry'}: {e['msg']}" for e in exc.errors(include_url=False)]


def load_mapping(path: Path | str, city=None) -> Mapping:
    """Read and check a mapping file (against ``city`` when given)."""
    path = Path(path)
    shown = _display(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise Open311ConfigError(f"{shown}: cannot read the mapping file ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise Open311ConfigError(f"{shown}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise Open311ConfigError(f"{shown}: expected a mapping with categories, fallback_category, departments, statuses, notes")
    try:
        m = Mapping.model_validate(raw)
    except ValidationError as exc:
        raise Open311ConfigError("; ".join(_pydantic_problems(shown, exc))) from None
    if city is not None:
        problems = m.problems(city)
        if problems:
            raise Open311ConfigError("; ".join(f"{shown}: {p}" for p in problems))
    return m


def endpoint_of(cfg: Endpoint | dict[str, Any], where: str = "endpoint") -> Endpoint:
    if isinstance(cfg, Endpoint):
        return cfg
    try:
        return Endpoint.model_validate(cfg)
    except ValidationError as exc:
        raise Open311ConfigError("; ".join(_pydantic_problems(where, exc))) from None


def load_endpoints(settings: Settings | None = None, path: Path | str | None = None) -> list[Endpoint]:
    """Every Open311 endpoint of the feeds file (``open311:`` list), enabled or not."""
    settings = settings or get_settings()
    path = Path(path or settings.feeds_file)
    shown = _display(path)
    if not path.exists():
        return []
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise Open311ConfigError(f"{shown}: not valid YAML ({exc})") from None
    entries = raw.get("open311") or [] if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise Open311ConfigError(f"{shown}: 'open311' must be a list of endpoints")
    out, names = [], set()
    for i, entry in enumerate(entries):
        label = f"{shown}: open311[{i}]" + (f" ({entry.get('name')})" if isinstance(entry, dict) and entry.get("name") else "")
        if not isinstance(entry, dict):
            raise Open311ConfigError(f"{label}: expected a mapping of fields (name, base_url, mapping, …)")
        ep = endpoint_of(entry, label)
        if ep.name in names:
            raise Open311ConfigError(f"{label}: duplicate endpoint name {ep.name!r}; names must be unique")
        names.add(ep.name)
        out.append(ep)
    return out


# --------------------------------------------------------------------------- parsing


Item = tuple[Any, bytes]  # (decoded record, its raw text)
Bad = tuple[bytes, str]  # (raw text, reason)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _xml_value(el: ET.Element) -> Any:
    children = list(el)
    if not children:
        text = (el.text or "").strip()
        return text or None
    tags = [_local(c.tag) for c in children]
    name = _local(el.tag)
    if len(set(tags)) == 1 and (len(tags) > 1 or name in (tags[0] + "s", tags[0] + "es")):
        return [_xml_value(c) for c in children]
    return {t: _xml_value(c) for t, c in zip(tags, children, strict=True)}


_DTD = re.compile(rb"<!(DOCTYPE|ENTITY)", re.IGNORECASE)


def parse_xml_items(body: bytes) -> tuple[list[Item], list[Bad], str | None]:
    """The children of the root element (``<request>``/``<service>``) as dicts.

    Returns (items, bad, error): on a parse error the items completed before it are kept and the rest
    of the text is returned as one bad entry; ``error`` says what went wrong with the document.
    """
    if _DTD.search(body):
        reason = "XML with a DTD or entity declaration refused (entity expansion is not allowed)"
        return [], [(body, reason)], reason
    body = body.lstrip()  # real services.xml files start with a blank line before the declaration
    parser = ET.XMLPullParser(events=("start", "end"))
    items: list[Item] = []
    depth = 0
    root: ET.Element | None = None
    error: str | None = None

    def drain() -> None:
        nonlocal depth, root
        for event, el in parser.read_events():
            if event == "start":
                depth += 1
                if depth == 1:
                    root = el
            else:
                depth -= 1
                if depth == 1:
                    items.append((_xml_value(el), ET.tostring(el, encoding="utf-8")))
                    if root is not None:
                        root.remove(el)

    try:
        parser.feed(body)
        drain()
        parser.close()
        drain()
    except ET.ParseError as exc:
        drain()
        error = f"invalid XML ({exc}) after {len(items)} readable records"
    if error is None and root is None:
        error = "empty XML document"
    if error is None:
        return items, [], None
    rest = body
    if items:
        last = _local(ET.fromstring(items[-1][1]).tag).encode()
        end = body.rfind(b"</" + last + b">")
        if end >= 0:
            rest = body[end + len(last) + 3 :]
    return items, [(rest, error)], error


_LIST_KEYS = ("service_requests", "requests", "services")


def parse_json_items(body: bytes) -> tuple[list[Item], list[Bad], str | None]:
    """The records of a JSON list (or an object holding one under service_requests/requests/services).

    Invalid JSON: the complete records before the error are kept, the rest is returned as one bad entry.
    """
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        reason = f"response is not UTF-8 ({exc})"
        return [], [(body, reason)], reason
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return _salvage_json(text, exc)
    if isinstance(data, dict):
        key = next((k for k in _LIST_KEYS if isinstance(data.get(k), list)), None)
        if key is None:
            reason = f"expected a JSON list of records, got an object with keys {sorted(data)[:10]}"
            return [], [(body, reason)], reason
        data = data[key]
    if not isinstance(data, list):
        reason = f"expected a JSON list of records, got {type(data).__name__}"
        return [], [(body, reason)], reason
    return [(item, orjson.dumps(item)) for item in data], [], None


def _salvage_json(text: str, exc: json.JSONDecodeError) -> tuple[list[Item], list[Bad], str]:
    reason = f"invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    start = text.find("[")
    stripped = text.lstrip()
    if start < 0 or not stripped or stripped[0] not in "[{":
        return [], [(text.encode(), reason)], reason
    dec = json.JSONDecoder()
    items: list[Item] = []
    pos = start + 1
    n = len(text)
    while True:
        while pos < n and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= n or text[pos] == "]":
            break
        try:
            item, end = dec.raw_decode(text, pos)
        except json.JSONDecodeError:
            break
        items.append((item, text[pos:end].encode()))
        pos = end
    reason = f"{reason}; {len(items)} records before it were read"
    return items, [(text[pos:].encode(), reason)], reason


def parse_items(body: bytes, fmt: str) -> tuple[list[Item], list[Bad], str | None]:
    return parse_xml_items(body) if fmt == "xml" else parse_json_items(body)


# --------------------------------------------------------------------------- HTTP


class SourceDown(RuntimeError):
    """The endpoint did not answer usefully after every retry (or refused the request)."""


class Client:
    """GETs services and requests from one endpoint, with timeouts and bounded exponential backoff."""

    def __init__(self, ep: Endpoint, session: requests.Session | None = None, sleep: Callable[[float], Any] = time.sleep):
        self.ep = ep
        self.session = session or requests.Session()
        self.session.headers.setdefault("User-Agent", USER_AGENT)
        self.sleep = sleep
        self.retried = 0  # failed attempts that were retried

    def _params(self, extra: dict[str, Any]) -> dict[str, Any]:
        p: dict[str, Any] = dict(self.ep.params)
        if self.ep.jurisdiction_id:
            p["jurisdiction_id"] = self.ep.jurisdiction_id
        if self.ep.key:
            p["api_key"] = self.ep.key
        p.update(extra)
        return p

    def get(self, resource: str, **params: Any) -> bytes:
        url = f"{self.ep.base_url}/{resource}.{self.ep.format}"
        error = ""
        for attempt in range(1, self.ep.retries + 1):
            try:
                resp = self.session.get(url, params=self._params(params), timeout=self.ep.timeout_seconds)
            except (requests.ConnectionError, requests.Timeout) as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code >= 500 or resp.status_code == 429:
                    error = f"HTTP {resp.status_code} from {resource}.{self.ep.format}"
                elif resp.status_code >= 400:
                    raise SourceDown(f"HTTP {resp.status_code} from {resource}.{self.ep.format} "
                                     f"(not retried: check base_url, api_key, jurisdiction_id): {resp.text[:200]}")
                else:
                    return resp.content
            if attempt < self.ep.retries:
                delay = min(self.ep.backoff_seconds * 2 ** (attempt - 1), self.ep.backoff_max_seconds)
                log.warning("open311 %s: %s (attempt %d of %d, retrying in %.3g s)", self.ep.name, error, attempt,
                            self.ep.retries, delay)
                self.retried += 1
                self.sleep(delay)
        raise SourceDown(f"{error} (after {self.ep.retries} attempts)")

    def services(self) -> tuple[list[Item], list[Bad], str | None]:
        return parse_items(self.get("services"), self.ep.format)

    def requests_page(self, start: datetime, end: datetime, page: int) -> tuple[list[Item], list[Bad], str | None]:
        body = self.get("requests", **{self.ep.start_param: iso_z(start), self.ep.end_param: iso_z(end),
                                       "page": page, "page_size": self.ep.page_size})
        return parse_items(body, self.ep.format)


# --------------------------------------------------------------------------- mapping requests to events


def iso_z(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _stamp(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def parse_time(value: Any, tz: ZoneInfo, field_name: str) -> datetime | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{field_name}: expected an ISO 8601 time, got {type(value).__name__} {value!r}")
    try:
        t = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{field_name}: not an ISO 8601 time: {value[:40]!r}") from None
    return t.replace(tzinfo=tz) if t.tzinfo is None else t


def _number(value: Any, field_name: str) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{field_name}: expected a number, got {type(value).__name__}")
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{field_name}: not a number: {str(value)[:40]!r}") from None


def _text(value: Any, field_name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{field_name}: expected text, got {type(value).__name__}")
    return str(value)


_CTRL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u2028\u2029]")


def _one_line(s: str | None, limit: int) -> str | None:
    if not s:
        return None
    s = " ".join(_CTRL.sub(" ", s).split())
    return (s[: limit - 1] + "…" if len(s) > limit else s) or None


def _multi_line(s: str | None, limit: int) -> tuple[str | None, bool]:
    if not s:
        return None, False
    s = _CTRL.sub(" ", s).strip()
    if len(s) > limit:
        return s[: limit - 1] + "…", True
    return s or None, False


_ORDER = [Status.REPORTED, Status.REGISTERED, Status.DISPATCHED, Status.ACCEPTED, Status.HANDLING,
          Status.RESOLVED, Status.CLOSED, Status.EVALUATED]
def _legal(status: Status | None, action: Action) -> bool:
    try:
        lifecycle.apply(status, action)
    except TransitionError:
        return False
    return True


class Timeline:
    """Builds one case's events, keeping the sequence legal and the event ids deterministic."""

    def __init__(self, source: str, external_id: str, default_departments: list[str]):
        self.source = source
        self.external_id = external_id
        self.default_departments = default_departments
        self.events: list[dict[str, Any]] = []
        self.status: Status | None = None
        self.departments: list[str] = []
        self.last_at: datetime | None = None
        self.flags: set[str] = set()
        self._ids: set[str] = set()

    def _at(self, at: datetime) -> datetime:
        if self.last_at is not None and at < self.last_at:
            self.flags.add("time_out_of_order")
            return self.last_at
        return at

    def emit(self, action: Action, at: datetime, event_id: str, **fields: Any) -> dict[str, Any]:
        at = self._at(at)
        outcome = lifecycle.apply(self.status, action)  # raises on a bug in this module, never for the source
        eid, n = event_id, 2
        while eid in self._ids:
            eid, n = f"{event_id}-{n}", n + 1
        self._ids.add(eid)
        ev = {"source": self.source, "external_id": self.external_id, "event": action.value, "event_id": eid,
              "occurred_at": at.astimezone(UTC).isoformat()}
        ev.update({k: v for k, v in fields.items() if v is not None})
        self.events.append(ev)
        self.status = outcome.status
        self.last_at = at
        if action is Action.DISPATCH:
            self.departments = list(fields.get("departments") or [])
        elif action is Action.WHISTLE:
            self.departments = list(dict.fromkeys([*self.departments, *(fields.get("departments") or [])]))
        return ev

    def _infer(self, goal: Callable[[Status], bool], at: datetime, why: str) -> bool:
        assert self.status is not None
        path = lifecycle.path_to(self.status, goal)
        if path is None:
            return False
        for a in path:
            self.flags.add("inferred_steps")
            self.emit(a, at, f"{a.value}-{_stamp(at)}-inferred", actor=INFERRED_ACTOR,
                      note=f"inferred: the source skipped this step ({why})",
                      departments=self.default_departments if a is Action.DISPATCH else None)
        return True

    def note(self, at: datetime, text: str, event_id: str) -> None:
        note, _ = _multi_line(text, LIMITS["note"])
        self.emit(Action.NOTE, at, event_id, note=note or "(empty note)")

    def act(self, action: Action, at: datetime, why: str, departments: list[str] | None = None,
            note: str | None = None) -> None:
        """Apply what the source says happened, inserting skipped steps; a move that cannot be made becomes a note."""
        if action in (Action.DISPATCH, Action.WHISTLE):
            departments = departments or self.default_departments
        if action is Action.DISPATCH and self.status in (Status.DISPATCHED, Status.ACCEPTED, Status.HANDLING):
            new = [d for d in departments or [] if d not in self.departments]
            if not new:
                self.note(at, f"{why}: {note}" if note else why, f"note-{_stamp(at)}-{_digest(why, note)}")
                return
            action, departments = Action.WHISTLE, new
        if action is Action.WHISTLE:
            if self.status in (Status.REPORTED, Status.REGISTERED):
                self._infer(lambda s: s is Status.DISPATCHED, at, why)  # first the case's own department
            departments = [d for d in departments or [] if d not in self.departments] or None
            if not departments:
                self.note(at, f"{why}: {note}" if note else why, f"note-{_stamp(at)}-{_digest(why, note)}")
                return
        if not _legal(self.status, action) and not self._infer(lambda s: _legal(s, action), at, why):
            text = f"{why} (not applied: a case that is {self.status.value if self.status else 'new'} cannot {action.value})"
            self.note(at, f"{text}: {note}" if note else text, f"note-{_stamp(at)}-{_digest(why, note)}")
            return
        self.emit(action, at, f"{action.value}-{_stamp(at)}", departments=departments, note=note)

    def reach(self, target: Status, at: datetime, why: str) -> None:
        """Make the case at least as far as ``target`` (the source's status), or reopen it if the source says open."""
        if self.status is None or self.status == target:
            return
        if lifecycle.is_open(target) and not lifecycle.is_open(self.status):
            self.emit(Action.REOPEN, at, f"reopen-{_stamp(at)}", note=why)
            if self.status == target:
                return
        if _ORDER.index(target) <= _ORDER.index(self.status):
            return
        path = lifecycle.path_to(self.status, target)
        if not path:
            return
        if len(path) > 1:
            self._infer(lambda s: _legal(s, path[-1]), at, why)
        self.emit(path[-1], at, f"{path[-1].value}-{_stamp(at)}", note=why,
                  departments=self.default_departments if path[-1] is Action.DISPATCH else None)


def _digest(*parts: Any) -> str:
    return hashlib.sha1("\x1f".join(str(p or "") for p in parts).encode()).hexdigest()[:8]


@dataclass
class Context:
    """What converting a request needs: the endpoint, its mapping, the city's catalog."""

    ep: Endpoint
    mapping: Mapping
    catalog: Catalog
    category_departments: dict[str, str]
    service_names: dict[str, str] = field(default_factory=dict)  # service_code -> service_name (from services)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.ep.timezone)


def request_events(req: Any, ctx: Context) -> list[dict[str, Any]]:
    """The case events of one GeoReport request, in order. Raises ValueError/RecordError naming what is unreadable."""
    if not isinstance(req, dict):
        raise ValueError(f"record: expected an object, got {type(req).__name__}")
    ep, m, tz = ctx.ep, ctx.mapping, ctx.tz
    rid = _text(req.get("service_request_id"), "service_request_id")
    if not rid or not rid.strip():
        raise ValueError("service_request_id: missing (a request without an id cannot be followed)")
    requested = parse_time(req.get("requested_datetime"), tz, "requested_datetime")
    if requested is None:
        raise ValueError("requested_datetime: missing")
    updated = parse_time(req.get("updated_datetime"), tz, "updated_datetime")
    expected = parse_time(req.get("expected_datetime"), tz, "expected_datetime")
    code = _text(req.get("service_code"), "service_code")
    name = _text(req.get("service_name"), "service_name") or (ctx.service_names.get(code) if code else None)
    description = _text(req.get("description"), "description")
    agency = _text(req.get("agency_responsible"), "agency_responsible")
    status_raw = _text(req.get("status"), "status")
    status_notes = _text(req.get("status_notes"), "status_notes")
    address = _text(req.get("address"), "address") or _text(req.get("address_string"), "address_string")
    zipcode = _text(req.get("zipcode"), "zipcode")
    media = _text(req.get("media_url"), "media_url")
    lat = _number(req.get("lat"), "lat")
    lon = _number(req.get("long", req.get("lon")), "long")
    if lat is not None and lon is not None:
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise ValueError(f"lat/long: out of range ({lat}, {lon})")
        lon, lat = to_wgs84(lon, lat, ep.crs)
    else:
        lon = lat = None
    notes = req.get("notes")
    if notes is None or notes == "":
        notes = []
    if isinstance(notes, dict):  # one note in XML without a list container
        notes = [notes]
    if not isinstance(notes, list) or not all(isinstance(n, dict) for n in notes):
        raise ValueError(f"notes: expected a list of objects, got {type(notes).__name__}")

    flags: set[str] = set()
    category = m.category(code, name)
    if category is None:
        category = m.fallback_category
        flags.add("unmapped_service")
    dept = m.department(agency)
    if dept is None:
        if agency:
            flags.add("unmapped_agency")
        dept = ctx.category_departments.get(category)
    default_departments = [dept] if dept else []

    title = _one_line(" — ".join(p for p in (name, (description or "").split("\n")[0][:120]) if p) or f"Open311 request {rid}",
                      LIMITS["title"])
    lines = [f"Open311 {ep.name}: {name or '(no service name)'} [{code or '-'}]" + (f", agency: {agency}" if agency else "")]
    if description:
        lines.append(description)
    if media:
        lines.append(f"Photo: {media}")
    desc, truncated = _multi_line("\n".join(lines), LIMITS["description"])
    if truncated:
        flags.add("description_truncated")
    if address and zipcode and zipcode not in address:
        address = f"{address} {zipcode}"

    tl = Timeline(ep.source_name, rid.strip(), default_departments)
    report = tl.emit(Action.REPORT, requested, f"report-{_stamp(requested)}", category=category, title=title,
                     description=desc, address=_one_line(address, LIMITS["address"]), lon=lon, lat=lat,
                     due_at=expected.astimezone(UTC).isoformat() if expected else None)

    timed = []
    for i, n in enumerate(notes):
        at = parse_time(n.get("datetime"), tz, f"notes[{i}].datetime")
        if at is None:
            raise ValueError(f"notes[{i}].datetime: missing")
        timed.append((at, i, n))
    timed.sort(key=lambda t: (t[0], t[1]))
    for at, i, n in timed:
        if at < requested:
            flags.add("note_before_request")
            at = requested
        summary = _text(n.get("summary"), f"notes[{i}].summary") or ""
        detail = _text(n.get("description"), f"notes[{i}].description")
        kind = _text(n.get("type"), f"notes[{i}].type") or ""
        action = m.note_action(n)
        why = f"Open311 note {kind}: {summary}".strip()
        if action == "ignore":
            continue
        if action == "note":
            tl.note(at, f"{summary}: {detail}" if detail else summary or kind,
                    f"note-{_stamp(at)}-{_digest(kind, summary, detail)}")
            continue
        deps = None
        if action in ("dispatch", "whistle"):
            ext = n.get("extended_attributes") if isinstance(n.get("extended_attributes"), dict) else {}
            note_agency = _text(ext.get("agency_responsible"), f"notes[{i}].extended_attributes.agency_responsible")
            if action == "whistle" and note_agency and m.department(note_agency) is None:
                tl.note(at, f"{summary}: {detail}" if detail else summary, f"note-{_stamp(at)}-{_digest(kind, summary, detail)}")
                flags.add("unmapped_agency")
                continue
            d = m.department(note_agency) if note_agency else None
            deps = [d] if d else default_departments
        tl.act(Action(action), at, why, departments=deps, note=_multi_line(detail, LIMITS["note"])[0])

    target = m.status(status_raw)
    if status_raw and target is None:
        flags.add("unknown_status")
    status_at = max(updated or requested, tl.last_at or requested)
    if target is not None:
        tl.reach(target, status_at, f"Open311 status: {status_raw}")
    if status_notes:
        tl.note(status_at, f"Status notes: {status_notes}", f"status_notes-{_digest(status_notes)}")
    flags |= tl.flags
    if flags:
        report["flags"] = sorted(flags)[:MAX_FLAGS]
    # Every event must pass the worker's checks; the sequence must be legal (both hold by construction).
    status = None
    for ev in tl.events:
        parse_case_event(ev, ctx.catalog)
        status = lifecycle.apply(status, ev["event"]).status
    return tl.events


# --------------------------------------------------------------------------- polling


@dataclass
class PollReport:
    endpoint: str
    fetched: int = 0  # request records read
    published: int = 0  # case events published
    cases: int = 0  # requests that became events
    dead: int = 0  # records or texts dead-lettered
    windows: int = 0  # windows completed
    pages: int = 0
    retried: int = 0  # failed HTTP attempts that were retried
    window_end: str | None = None  # end of the last completed window (stored in Redis)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def state_key(settings: Settings, name: str) -> str:
    return settings.key("feed", "open311", name)


def _context(ep: Endpoint, settings: Settings, city=None) -> Context:
    if city is None:
        city = load_city(settings.city_dir)
    mapping = load_mapping(ep.mapping_path(), city)
    catalog = Catalog(categories=city.categories, departments=frozenset(city.departments))
    return Context(ep, mapping, catalog, {c: cat.department for c, cat in city.categories.items()})


def _services(client: Client, ctx: Context, r: redis.Redis, key: str, producer: Producer, rep: PollReport,
              now: datetime) -> None:
    """Refresh the service list (code -> name) once a day; a failure here does not stop the poll."""
    cached = r.hget(key, "services")
    at = r.hget(key, "services_at")
    if cached and at and now - datetime.fromisoformat(at.decode()) < timedelta(hours=24):
        ctx.service_names = orjson.loads(cached)
        return
    try:
        items, bad, _ = client.services()
    except SourceDown as exc:
        log.warning("open311 %s: services list unavailable (%s); continuing with requests", ctx.ep.name, exc)
        if cached:
            ctx.service_names = orjson.loads(cached)
        return
    names = {}
    for item, _raw in items:
        if isinstance(item, dict) and item.get("service_code") is not None:
            names[str(item["service_code"])] = str(item.get("service_name") or "")
    for raw, reason in bad:
        producer.dead(raw, f"open311 {ctx.ep.name} services: {reason}", stream=producer.names.cases)
        rep.dead += 1
    unmapped = sorted(n for c, n in names.items() if ctx.mapping.category(c, n) is None)
    if unmapped:
        log.info("open311 %s: %d of %d services have no category mapping (they use %s): %s", ctx.ep.name,
                 len(unmapped), len(names), ctx.mapping.fallback_category, ", ".join(unmapped[:20]))
    ctx.service_names = names
    r.hset(key, mapping={"services": orjson.dumps(names), "services_at": now.isoformat()})


def poll_once(endpoint_cfg: Endpoint | dict[str, Any], settings: Settings | None = None, r: redis.Redis | None = None,
              now: datetime | None = None, *, since: datetime | None = None, city=None,
              session: requests.Session | None = None, sleep: Callable[[float], Any] = time.sleep) -> PollReport:
    """Pull every window from the stored resume point (or ``since``) up to ``now`` and publish the events.

    Never raises for the source's problems: they are in the report, in FeedHealth and in the dead letters.
    """
    ep = endpoint_of(endpoint_cfg)
    settings = settings or get_settings()
    if r is None:
        r = get_redis(settings)
    now = (now or datetime.now(UTC)).astimezone(UTC)
    ctx = _context(ep, settings, city)
    producer = Producer(r, settings, source=ep.source_name)
    health = FeedHealth(r, settings, f"open311:{ep.name}")
    client = Client(ep, session, sleep)
    key = state_key(settings, ep.name)
    rep = PollReport(ep.name)
    page_errors: list[str] = []

    stored = r.hget(key, "window_end")
    if since is not None:
        start = since.astimezone(UTC) if since.tzinfo else since.replace(tzinfo=ctx.tz).astimezone(UTC)
    elif stored:
        start = datetime.fromisoformat(stored.decode()) - timedelta(minutes=ep.overlap_minutes)
    else:
        start = now - timedelta(hours=ep.backfill_hours)

    try:
        _services(client, ctx, r, key, producer, rep, now)
        window = timedelta(hours=ep.window_hours)
        while start < now and rep.windows < ep.max_windows_per_poll:
            end = min(start + window, now)
            events: list[dict[str, Any]] = []
            for page in range(1, ep.max_pages + 1):
                items, bad, error = client.requests_page(start, end, page)
                rep.pages += 1
                rep.fetched += len(items)
                for raw, reason in bad:
                    producer.dead(raw, f"open311 {ep.name} requests {iso_z(start)}..{iso_z(end)} page {page}: {reason}",
                                  stream=producer.names.cases)
                    rep.dead += 1
                if error:
                    page_errors.append(f"page {page} of {iso_z(start)}..{iso_z(end)}: {error}")
                for item, raw in items:
                    try:
                        evs = request_events(item, ctx)
                    except (ValueError, RecordError, TransitionError) as exc:
                        rid = item.get("service_request_id") if isinstance(item, dict) else None
                        producer.dead(raw, f"open311 {ep.name} request {rid or '?'}: {exc}", stream=producer.names.cases)
                        rep.dead += 1
                        continue
                    events.extend(evs)
                    rep.cases += 1
                # A short clean page is the last; an unreadable page may have been cut short, so look further.
                if len(items) < ep.page_size and not error:
                    break
            if events:
                producer.cases(events)
                rep.published += len(events)
            rep.windows += 1
            rep.window_end = end.isoformat()
            r.hset(key, mapping={"window_end": rep.window_end, "polled_at": datetime.now(UTC).isoformat()})
            start = end
    except SourceDown as exc:
        rep.error = str(exc)
    finally:
        rep.retried = client.retried

    if rep.error:
        health.failed(rep.error, endpoint=ep.name, fetched=rep.fetched, dead=rep.dead)
        log.error("open311 %s: source down: %s (windows done %d, fetched %d, published %d, dead %d)",
                  ep.name, rep.error, rep.windows, rep.fetched, rep.published, rep.dead)
    elif page_errors:
        health.failed(f"unreadable response: {page_errors[0]}" + (f" (+{len(page_errors) - 1} more)" if len(page_errors) > 1 else ""),
                      endpoint=ep.name, fetched=rep.fetched, dead=rep.dead)
        log.warning("open311 %s: %d unreadable pages; fetched %d, published %d events of %d requests, dead %d, windows %d",
                    ep.name, len(page_errors), rep.fetched, rep.published, rep.cases, rep.dead, rep.windows)
    else:
        health.ok(f"fetched {rep.fetched}, published {rep.published} events, dead {rep.dead}",
                  endpoint=ep.name, window_end=rep.window_end, dead=rep.dead)
        log.info("open311 %s: fetched %d requests in %d windows (%d pages), published %d events of %d requests, dead %d",
                 ep.name, rep.fetched, rep.windows, rep.pages, rep.published, rep.cases, rep.dead)
    return rep


def enabled_endpoints(settings: Settings | None = None) -> list[Endpoint]:
    return [ep for ep in load_endpoints(settings) if ep.enabled]


def _scheduled_poll(ep: Endpoint, settings: Settings) -> PollReport:
    return poll_once(ep, settings)


def scheduled_polls(settings: Settings | None = None) -> list[tuple[str, float, Callable[[], PollReport]]]:
    """One (job name, interval in seconds, callable) per enabled endpoint, for the scheduler."""
    settings = settings or get_settings()
    return [(f"open311:{ep.name}", ep.poll_seconds, partial(_scheduled_poll, ep, settings)) for ep in enabled_endpoints(settings)]


def run_forever(endpoints: Iterable[Endpoint], settings: Settings | None = None, r: redis.Redis | None = None,
                stop: threading.Event | None = None, since: datetime | None = None) -> None:
    """Poll each endpoint every ``poll_seconds`` until ``stop`` is set. A failing poll is logged, never fatal."""
    endpoints = list(endpoints)
    settings = settings or get_settings()
    stop = stop or threading.Event()
    due = {ep.name: 0.0 for ep in endpoints}
    first = {ep.name: since for ep in endpoints}
    while not stop.is_set():
        for ep in endpoints:
            if stop.is_set():
                break
            if time.monotonic() >= due[ep.name]:
                try:
                    poll_once(ep, settings, r, since=first[ep.name], sleep=stop.wait)
                    first[ep.name] = None
                except Open311ConfigError:
                    raise
                except Exception:
                    log.exception("open311 %s: poll failed", ep.name)
                due[ep.name] = time.monotonic() + ep.poll_seconds
        stop.wait(max(0.2, min(due.values()) - time.monotonic()))


# --------------------------------------------------------------------------- command line


def _iso(value: str) -> datetime:
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r} (e.g. 2026-11-01T00:00:00+08:00)") from None
    return t


def add_open311_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Pull Open311 GeoReport v2 service requests (config/feeds.yaml, 'open311:' list) in time windows "
                     "and pages, and publish them as case events. Resumes from the last completed window stored in Redis.")
    p.add_argument("--endpoint", metavar="NAME", help="poll only this endpoint (also one marked enabled: false)")
    p.add_argument("--once", action="store_true", help="poll once, print a JSON report per endpoint, and exit")
    p.add_argument("--since", type=_iso, metavar="ISO", help="start at this time instead of the stored window")
    p.add_argument("--base-url", metavar="URL", help="poll this endpoint instead of the configured ones (needs --mapping)")
    p.add_argument("--mapping", metavar="FILE", help="mapping file for --base-url (e.g. config/mappings/open311_chicago.yaml)")
    p.add_argument("--format", choices=("json", "xml"), default="json", help="response format for --base-url (default json)")
    p.add_argument("--feeds", metavar="FILE", help="feeds file (default: FEEDS_FILE, config/feeds.yaml)")


def main_open311(args: argparse.Namespace) -> int:
    settings = get_settings()
    try:
        if args.base_url:
            if not args.mapping:
                print("--base-url needs --mapping FILE (e.g. config/mappings/open311_chicago.yaml)")
                return 2
            endpoints = [endpoint_of({"name": args.endpoint or "adhoc", "base_url": args.base_url,
                                      "mapping": args.mapping, "format": args.format}, "--base-url")]
        else:
            configured = load_endpoints(settings, args.feeds)
            if args.endpoint:
                endpoints = [ep for ep in configured if ep.name == args.endpoint]
                if not endpoints:
                    print(f"no endpoint {args.endpoint!r} in the feeds file; configured: "
                          f"{', '.join(ep.name for ep in configured) or 'none'}")
                    return 2
            else:
                endpoints = [ep for ep in configured if ep.enabled]
                if not endpoints:
                    print("no enabled Open311 endpoint in the feeds file (set enabled: true, or name one with --endpoint)")
                    return 2
        for ep in endpoints:  # fail early on a broken mapping
            _context(ep, settings)
    except Open311ConfigError as exc:
        print(f"configuration error: {exc}")
        return 2
    if args.once:
        worst = 0
        for ep in endpoints:
            rep = poll_once(ep, settings, since=args.since)
            print(orjson.dumps(rep.as_dict()).decode())
            worst = worst or (0 if rep.ok else 1)
        return worst
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    run_forever(endpoints, settings, stop=stop, since=args.since)
    return 0
