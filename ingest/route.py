"""``python -m ingest route --explain FILE|--case ID``: which routing rule (智能分拨) fires for each case record or
for a stored case, and why."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from config.calendar import get_calendar
from config.city import City, get_city
from config.routing import RoutingConfigError, load_routing, tables_of
from config.settings import get_settings
from core.routing import Facts, Routing, route


def read_records(path: Path) -> list[dict]:
    """Case records from a JSON array, one JSON object, or JSON lines; ValueError names the line at fault."""
    text = path.read_bytes()
    try:
        data = orjson.loads(text)
        return data if isinstance(data, list) else [data]
    except orjson.JSONDecodeError:
        pass
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"{path.name}: line {n} is not JSON ({exc}); give a JSON array or JSON lines") from None
    return out


def facts_of(rec: dict, city: City, calendar) -> Facts:
    """What routing looks at in one record: its grid (given, or found from lon/lat), the grid's kind, the time."""
    if not isinstance(rec, dict) or not rec.get("category"):
        raise ValueError("a record is a JSON object with at least a category (a 小类 code)")
    category = str(rec["category"])
    grid = rec.get("grid_code")
    if not grid and rec.get("lon") is not None and rec.get("lat") is not None:
        grid = city.geography.locate(float(rec["lon"]), float(rec["lat"]))
    area = city.geography.get(grid) if grid else None
    at = datetime.fromisoformat(rec["occurred_at"]) if rec.get("occurred_at") else datetime.now(UTC)
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    known = city.categories.get(category)
    grade = int(rec.get("grade") or (known.default_grade if known else 4))
    in_office = calendar.working_time_between(at, at + timedelta(seconds=1)) > timedelta(0)
    return Facts(category, grid, getattr(area, "kind", None), str(rec.get("source") or "citizen"), grade, in_office)


def describe(rec: dict, r: Routing, city: City) -> str:
    name = city.departments
    who = lambda codes: "、".join(f"{name[c].short} ({c})" if c in name else c for c in codes)  # noqa: E731
    head = f"{rec.get('external_id', '(no id)')}: "
    if not r.routed:
        head += (f"待分拨 — rule {r.rule!r} sends it to a dispatcher" if r.rule
                 else "待分拨 — no rule can route it; it waits for a dispatcher")
    else:
        head += f"rule {r.rule!r} → lead {who(r.lead)}" + (f", summon {who(r.summon)}" if r.summon else "")
        head += ", on the spot allowed" if r.onsite else ""
    return "\n".join([head, *(f"    not {why}" for why in r.why)])


def _stored(case_id: str) -> list[dict]:
    """A stored case as a record of what routing looks at."""
    from store import routing_reads  # inner import: only --case opens the store
    from store.services import get_engine, migrate  # inner import: only --case opens the store

    if not case_id.isdigit():
        raise ValueError(f"--case {case_id!r}: a case id is a positive whole number (the case page's /case/ID)")
    engine = get_engine(get_settings())
    migrate(engine)
    case = routing_reads.one(engine, int(case_id))
    if case is None:
        raise ValueError(f"--case {case_id}: no such case in the store")
    at = case["reported_at"]
    return [{"external_id": f"case {case['id']} ({case['source']}/{case['external_id']}, {case['status']})",
             "category": case["category"], "grid_code": case["grid_code"], "source": case["source"],
             "grade": case["grade"], "occurred_at": at.isoformat() if at else None}]


def main_route(args) -> int:
    city = get_city()
    try:
        rules = load_routing(city)
        records = _stored(args.case) if args.case else read_records(Path(args.explain))
    except (RoutingConfigError, ValueError, OSError) as exc:
        print(exc, file=sys.stderr)
        return 2
    tables, calendar = tables_of(city), get_calendar(get_settings().holidays_file)
    print(f"{len(rules)} routing rules from {get_settings().routing_file.name}, then each 小类's own department")
    for rec in records:
        try:
            print(describe(rec, route(rules, facts_of(rec, city, calendar), tables), city))
        except (ValueError, TypeError, KeyError) as exc:
            label = rec.get("external_id", "(no id)") if isinstance(rec, dict) else repr(rec)[:60]
            print(f"{label}: cannot route: {exc}")
    return 0


def add_route_arguments(p) -> None:
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--explain", metavar="FILE",
                      help="case records (JSON array or JSON lines, as the push API takes them): which rule fires and why")
    what.add_argument("--case", metavar="ID", help="a stored case (its id): which rule fires for it now, and why")
