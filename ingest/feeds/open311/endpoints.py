"""An Open311 endpoint of config/feeds.yaml and the mapping of its vocabulary onto the city's."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from config.settings import ROOT, Settings, get_settings
from core.coords import crs_name
from core.lifecycle import Status
from core.records import CITY_TZ, LIMITS


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
