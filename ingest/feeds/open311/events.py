"""One GeoReport service request as case events: a report, then what its notes and status say happened."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from core import lifecycle
from core.coords import to_wgs84
from core.lifecycle import Action, Status, TransitionError
from core.records import LIMITS, Catalog, parse_case_event
from ingest.feeds.open311.endpoints import Endpoint, Mapping

INFERRED_ACTOR = "open311"
MAX_FLAGS = 10


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


def _stamp(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


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
            action = Action.WHISTLE  # a dispatched case: dispatching again summons the departments not yet on it
        if action is Action.WHISTLE:
            departments = self._summoned(departments, at, why)
            if not departments:
                self._unapplied(why, at, why, note)
                return
        if not _legal(self.status, action) and not self._infer(lambda s: _legal(s, action), at, why):
            state = self.status.value if self.status else "new"
            self._unapplied(f"{why} (not applied: a case that is {state} cannot {action.value})", at, why, note)
            return
        self.emit(action, at, f"{action.value}-{_stamp(at)}", departments=departments, note=note)

    def _summoned(self, departments: list[str] | None, at: datetime, why: str) -> list[str]:
        """The departments a whistle brings that are not on the case yet; a case not dispatched is dispatched first."""
        if self.status in (Status.REPORTED, Status.REGISTERED):
            self._infer(lambda s: s is Status.DISPATCHED, at, why)  # first the case's own department
        return [d for d in departments or [] if d not in self.departments]

    def _unapplied(self, text: str, at: datetime, why: str, note: str | None) -> None:
        """What the source said, kept as a note where it changes nothing on the case."""
        self.note(at, f"{text}: {note}" if note else text, f"note-{_stamp(at)}-{_digest(why, note)}")

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


@dataclass(frozen=True)
class _Request:
    """The fields of one GeoReport request that events are made of, read and type-checked."""

    rid: str
    requested: datetime
    updated: datetime | None
    expected: datetime | None
    code: str | None
    name: str | None
    description: str | None
    agency: str | None
    status: str | None
    status_notes: str | None
    address: str | None
    zipcode: str | None
    media: str | None
    lon: float | None
    lat: float | None
    notes: list[dict[str, Any]]


def _read_request(req: Any, ctx: Context) -> _Request:
    """The request's fields; raises ValueError naming the first one that is missing or unreadable."""
    if not isinstance(req, dict):
        raise ValueError(f"record: expected an object, got {type(req).__name__}")
    tz = ctx.tz
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
    status = _text(req.get("status"), "status")
    status_notes = _text(req.get("status_notes"), "status_notes")
    address = _text(req.get("address"), "address") or _text(req.get("address_string"), "address_string")
    zipcode = _text(req.get("zipcode"), "zipcode")
    media = _text(req.get("media_url"), "media_url")
    lon, lat = _location(req, ctx.ep.crs)
    return _Request(rid=rid, requested=requested, updated=updated, expected=expected, code=code, name=name,
                    description=description, agency=agency, status=status, status_notes=status_notes,
                    address=address, zipcode=zipcode, media=media, lon=lon, lat=lat, notes=_notes_of(req))


def _location(req: dict[str, Any], crs: str) -> tuple[float | None, float | None]:
    """(lon, lat) in WGS84, or (None, None) when the request has no complete position."""
    lat = _number(req.get("lat"), "lat")
    lon = _number(req.get("long", req.get("lon")), "long")
    if lat is None or lon is None:
        return None, None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ValueError(f"lat/long: out of range ({lat}, {lon})")
    return to_wgs84(lon, lat, crs)


def _notes_of(req: dict[str, Any]) -> list[dict[str, Any]]:
    notes = req.get("notes")
    if notes is None or notes == "":
        return []
    if isinstance(notes, dict):  # one note in XML without a list container
        return [notes]
    if not isinstance(notes, list) or not all(isinstance(n, dict) for n in notes):
        raise ValueError(f"notes: expected a list of objects, got {type(notes).__name__}")
    return notes


def _classify(rq: _Request, ctx: Context, flags: set[str]) -> tuple[str, list[str]]:
    """The case's category and departments, flagging what the mapping does not know."""
    m = ctx.mapping
    category = m.category(rq.code, rq.name)
    if category is None:
        category = m.fallback_category
        flags.add("unmapped_service")
    dept = m.department(rq.agency)
    if dept is None:
        if rq.agency:
            flags.add("unmapped_agency")
        dept = ctx.category_departments.get(category)
    return category, [dept] if dept else []


def _report_fields(rq: _Request, ep: Endpoint, flags: set[str]) -> dict[str, Any]:
    """The report's title, description, address, position and due time, within the record's limits."""
    name, description = rq.name, rq.description
    title = _one_line(" — ".join(p for p in (name, (description or "").split("\n")[0][:120]) if p) or f"Open311 request {rq.rid}",
                      LIMITS["title"])
    lines = [f"Open311 {ep.name}: {name or '(no service name)'} [{rq.code or '-'}]" + (f", agency: {rq.agency}" if rq.agency else "")]
    if description:
        lines.append(description)
    if rq.media:
        lines.append(f"Photo: {rq.media}")
    desc, truncated = _multi_line("\n".join(lines), LIMITS["description"])
    if truncated:
        flags.add("description_truncated")
    address = rq.address
    if address and rq.zipcode and rq.zipcode not in address:
        address = f"{address} {rq.zipcode}"
    return {"title": title, "description": desc, "address": _one_line(address, LIMITS["address"]), "lon": rq.lon,
            "lat": rq.lat, "due_at": rq.expected.astimezone(UTC).isoformat() if rq.expected else None}


def _timed_notes(notes: list[dict[str, Any]], tz: ZoneInfo) -> list[tuple[datetime, int, dict[str, Any]]]:
    """The notes with their times, oldest first (in the source's order where the times are equal)."""
    timed = []
    for i, n in enumerate(notes):
        at = parse_time(n.get("datetime"), tz, f"notes[{i}].datetime")
        if at is None:
            raise ValueError(f"notes[{i}].datetime: missing")
        timed.append((at, i, n))
    timed.sort(key=lambda t: (t[0], t[1]))
    return timed


def _apply_note(tl: Timeline, m: Mapping, at: datetime, i: int, n: dict[str, Any], flags: set[str]) -> None:
    """What one note says happened, by the mapping's rules: a lifecycle action, a note, or nothing."""
    summary = _text(n.get("summary"), f"notes[{i}].summary") or ""
    detail = _text(n.get("description"), f"notes[{i}].description")
    kind = _text(n.get("type"), f"notes[{i}].type") or ""
    action = m.note_action(n)
    why = f"Open311 note {kind}: {summary}".strip()
    if action == "ignore":
        return
    if action == "note":
        tl.note(at, f"{summary}: {detail}" if detail else summary or kind,
                f"note-{_stamp(at)}-{_digest(kind, summary, detail)}")
        return
    deps = None
    if action in ("dispatch", "whistle"):
        ext = n.get("extended_attributes") if isinstance(n.get("extended_attributes"), dict) else {}
        note_agency = _text(ext.get("agency_responsible"), f"notes[{i}].extended_attributes.agency_responsible")
        if action == "whistle" and note_agency and m.department(note_agency) is None:
            tl.note(at, f"{summary}: {detail}" if detail else summary, f"note-{_stamp(at)}-{_digest(kind, summary, detail)}")
            flags.add("unmapped_agency")
            return
        d = m.department(note_agency) if note_agency else None
        deps = [d] if d else tl.default_departments
    tl.act(Action(action), at, why, departments=deps, note=_multi_line(detail, LIMITS["note"])[0])


def _apply_status(tl: Timeline, rq: _Request, m: Mapping, flags: set[str]) -> None:
    """Bring the case to the source's status, after its notes, and keep the status notes."""
    target = m.status(rq.status)
    if rq.status and target is None:
        flags.add("unknown_status")
    status_at = max(rq.updated or rq.requested, tl.last_at or rq.requested)
    if target is not None:
        tl.reach(target, status_at, f"Open311 status: {rq.status}")
    if rq.status_notes:
        tl.note(status_at, f"Status notes: {rq.status_notes}", f"status_notes-{_digest(rq.status_notes)}")


def request_events(req: Any, ctx: Context) -> list[dict[str, Any]]:
    """The case events of one GeoReport request, in order. Raises ValueError/RecordError naming what is unreadable."""
    rq = _read_request(req, ctx)
    flags: set[str] = set()
    category, departments = _classify(rq, ctx, flags)
    report_fields = _report_fields(rq, ctx.ep, flags)
    tl = Timeline(ctx.ep.source_name, rq.rid.strip(), departments)
    report = tl.emit(Action.REPORT, rq.requested, f"report-{_stamp(rq.requested)}", category=category, **report_fields)
    for at, i, n in _timed_notes(rq.notes, ctx.tz):
        if at < rq.requested:
            flags.add("note_before_request")
            at = rq.requested
        _apply_note(tl, ctx.mapping, at, i, n, flags)
    _apply_status(tl, rq, ctx.mapping, flags)
    flags |= tl.flags
    if flags:
        report["flags"] = sorted(flags)[:MAX_FLAGS]
    # Every event must pass the worker's checks; the sequence must be legal (both hold by construction).
    status = None
    for ev in tl.events:
        parse_case_event(ev, ctx.catalog)
        status = lifecycle.apply(status, ev["event"]).status
    return tl.events
