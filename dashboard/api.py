"""The JSON API (Flask blueprint): health, live figures, areas and cases.

Every answer is JSON (orjson; times ISO 8601 UTC). Bad input gets a 4xx answer
``{"error": "...", "parameter": "..."}`` naming the parameter and the fix — never a traceback,
never silently all data.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from flask import Blueprint, Response, request
from sqlalchemy import text
from werkzeug.exceptions import HTTPException

from config.calendar import CalendarConfigError, coverage_warning, get_calendar
from config.rankings import get_rules
from config.risk import RiskConfigError, get_risk_model
from core import actions as action_rules
from core import kpis as kpi_rules
from core import rankings as ranking_rules
from core import risk as risk_rules
from core.cells import neutralise
from core.geography import LEVELS
from core.records import CITY_TZ, case_id_of
from core.whistle import whistle_reports
from dashboard import accounts, actions, context, live, openapi, params, routing_view, viewers
from dashboard.auth import COOKIE
from dashboard.params import FILTER_PARAMS, RISK_TOP_DEFAULT, RISK_TOP_MAX, ApiError
from store import notify as notify_store
from store import queries

log = logging.getLogger(__name__)

LAG_DEGRADED = 10_000  # entries waiting in a stream before /healthz says "degraded"


def json_response(body: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z, default=str),
        status=status,
        mimetype="application/json",
    )


def _calendar_warning(settings) -> str | None:
    """Whether the working calendar knows the next 60 days (a warning, not a fault: deadlines turn provisional)."""
    try:
        calendar = get_calendar(settings.holidays_file)
    except CalendarConfigError as exc:
        return f"working calendar: {exc.problems[0]}"
    return coverage_warning(calendar, datetime.now(CITY_TZ).date())


def _health_answer(body: dict[str, Any], status: int) -> Response:
    """/healthz: anonymous viewers get the status and the reasons only (no addresses, paths or error texts)."""
    token = request.cookies.get(COOKIE)
    try:
        known = token is not None and accounts.load_session(context.redis_client(), context.settings(), token) is not None
    except Exception:  # noqa: BLE001 - Redis away: nobody can be recognised
        known = False
    if not known:
        body = {"status": body["status"], "reasons": body["reasons"]}
    return json_response(body, status)


def _error(status: int, message: str, parameter: str | None = None) -> Response:
    body: dict[str, Any] = {"error": message}
    if parameter:
        body["parameter"] = parameter
    return json_response(body, status)


# --------------------------------------------------------------------------- parameters


def _utc(iso: str | None) -> datetime | str | None:
    """An ISO time stored in Redis as an aware datetime (serialised with Z); unparsable text as it is."""
    if not iso:
        return None
    try:
        value = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _grades(counts: dict[int, int]) -> dict[str, int]:
    return {str(g): n for g, n in counts.items()}


# --------------------------------------------------------------------------- risk (core.risk)


def _risk_model():
    try:
        return get_risk_model(context.settings().risk_file)
    except RiskConfigError as exc:
        log.error("risk model configuration: %s", exc)
        raise ApiError(500, f"the risk model's configuration is broken: {exc.problems[0]}") from None


def _select_areas(p: dict[str, str]) -> list:
    """The areas /api/v1/areas and /api/v1/risk list: ``level`` within ``parent`` (default: the district's children)."""
    geo = context.city().geography
    level = p.get("level")
    if level is not None and level not in LEVELS:
        raise ApiError(400, f"level: unknown level {level[:40]!r}; use one of: {', '.join(LEVELS)}", "level")
    parent = params.code(p["parent"], "parent") if "parent" in p else None
    home = params.home()
    if parent is None and home.level != "district":  # a jurisdiction below the district: its own areas only
        parent = home
        if level is not None and LEVELS.index(level) <= LEVELS.index(home.level):
            return [home] if level == home.level else []
    if parent is not None and level is not None:
        if LEVELS.index(level) <= LEVELS.index(parent.level):
            below = ", ".join(LEVELS[LEVELS.index(parent.level) + 1:]) or "none"
            raise ApiError(400, f"level: a {parent.level} holds no {level} areas; use a level below {parent.level} "
                                f"({below})", "level")
        return [a for a in geo.areas(level) if a.code.startswith(parent.code)]
    if parent is not None:
        return geo.children(parent.code)
    if level is not None:
        return geo.areas(level)
    return geo.children(geo.district.code)


def _risk_of(model, areas) -> tuple[dict[str, dict[str, Any]], str | None]:
    return live.risk_of(context.redis_client(), context.settings(), context.city(), model, areas)


def _risk_notes(at: str | None) -> list[str]:
    if at is None:
        return ["the risk sweep has not run yet: hotspot parts are 0 until it does (every 30 s in the scheduler)"]
    return []


def _explain_limit(p: dict[str, str]) -> int:
    if "limit" not in p:
        return RISK_TOP_DEFAULT
    if not p["limit"].isascii() or not p["limit"].isdigit() or not 1 <= int(p["limit"]) <= RISK_TOP_MAX:
        raise ApiError(400, f"limit: {p['limit'][:40]!r} is not a whole number in 1..{RISK_TOP_MAX}", "limit")
    return int(p["limit"])


# --------------------------------------------------------------------------- health


def _reach(body: dict[str, Any]):
    """Ping Redis and SQL: (the Redis client, or None if it is not reachable; whether either is down)."""
    down = False
    try:
        r = context.redis_client()
        r.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "unreachable"; report it as text
        body["redis"] = f"error: {type(exc).__name__}: {exc}"
        body["reasons"].append("redis: not reachable")
        down = True
        r = None
    try:
        with context.engine().connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001
        body["database"] = f"error: {type(exc).__name__}: {exc}"
        body["reasons"].append("database: not reachable")
        down = True
    return r, down


def _details(r, settings, body: dict[str, Any]) -> list[str]:
    """Streams, dead letters, feeds and workers into ``body``; the reasons the worker is not applying."""
    body["streams"] = live.streams(r, settings)
    body["dead_letters"] = live.dead_letters(r, settings)
    body["last_event_at"] = _utc(live.last_event_at(r, settings))
    body["feeds"] = {source: _utc(at) for source, at in live.feeds(r, settings).items()}
    body["feed_status"] = live.feed_status(r, settings)
    body["notify_channels"] = notify_store.channel_status(r, settings.stream_prefix)
    facts, applying = live.applying_reasons(r, settings)
    body["workers"] = {name: {**state, "alive": name in facts["alive"]} for name, state in facts["workers"].items()}
    return applying


def _stream_reasons(streams: dict[str, dict[str, Any]], settings) -> list[str]:
    reasons = []
    for kind, info in streams.items():
        if kind in ("dead", "bulk"):
            continue  # a bulk import's backlog is work in progress, not a fault: it yields to live streams
        if info.get("pending") is None:
            reasons.append(f"stream {kind}: no consumer group {settings.consumer_group!r} (no worker has run)")
        elif (info.get("lag") or 0) > LAG_DEGRADED:
            reasons.append(f"stream {kind}: {info['lag']} entries waiting for a worker")
    return reasons


def _feed_reasons(feed_status: dict[str, dict[str, Any]]) -> list[str]:
    return [f"feed {feed}: {state.get('error', 'failing')} ({state.get('failures', 1)} failures in a row)"
            for feed, state in feed_status.items() if not state.get("ok")]


# --------------------------------------------------------------------------- cases


def _csv_cell(v) -> Any:
    if isinstance(v, datetime):
        return v.astimezone(UTC).isoformat()
    if isinstance(v, list):
        return neutralise(" ".join(map(str, v)))
    return "" if v is None else neutralise(v)  # a title such as "=HYPERLINK(...)" stays text in a spreadsheet


def _csv_chunks(engine, where: queries.CaseFilter, personal: bool):
    """The export's text in chunks of 1000 rows, a BOM and the header first."""
    buf = io.StringIO()
    w = csv.writer(buf)
    buf.write("\ufeff")
    w.writerow(queries.EXPORT_COLUMNS)
    for n, row in enumerate(queries.export_cases(engine, where, personal=personal, own=context.own_prefixes()), start=1):
        w.writerow([_csv_cell(v) for v in row])
        if n % 1000 == 0:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()


def _sla_states(p: dict[str, str]) -> set[str]:
    if "state" not in p:
        return {"warning", "overdue"}
    states = set()
    for part in p["state"].split(","):
        part = part.strip().lower()
        if part not in ("warning", "overdue"):
            raise ApiError(400, f"state: unknown SLA state {part!r}; use warning, overdue or both "
                                "(comma-separated)", "state")
        states.add(part)
    return states


# --------------------------------------------------------------------------- rankings


def _ranking_period(p: dict[str, str]):
    """The period ``period`` (default: week) names: holding ``date`` (default: today), or since–until for custom."""
    kind = p.get("period", "week").lower()
    if kind not in ranking_rules.PERIODS:
        raise ApiError(400, f"period: unknown period {kind!r}; use one of: {', '.join(ranking_rules.PERIODS)}",
                       "period")
    if kind == "custom":
        if "date" in p:
            raise ApiError(400, "date: not used with period=custom; give since and until", "date")
        for name in ("since", "until"):
            if name not in p:
                raise ApiError(400, f"{name}: period=custom needs both since and until", name)
        since, until = params.period(p)
        return ranking_rules.period("custom", since.date(), CITY_TZ, since, until)
    for name in ("since", "until"):
        if name in p:
            raise ApiError(400, f"{name}: only used with period=custom; use date= to pick the {kind}", name)
    day = datetime.now(CITY_TZ).date()
    if "date" in p:
        try:
            day = date.fromisoformat(p["date"])
        except ValueError:
            raise ApiError(400, f"date: {p['date']!r} is not an ISO 8601 date, e.g. 2026-11-20", "date") from None
        params.in_query_years("date", p["date"], day.year)
    return ranking_rules.period(kind, day, CITY_TZ)


# --------------------------------------------------------------------------- routes


def _error_routes(bp: Blueprint) -> None:
    """JSON errors: a refused parameter, any HTTP error on an API path, an unknown API route."""

    @bp.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return _error(exc.status, exc.message, exc.parameter)

    @bp.app_errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        # JSON for API paths (unknown route, wrong method, unexpected error); the usual pages elsewhere.
        if not (request.path.startswith("/api/") or request.path == "/healthz"):
            return exc
        if (exc.code or 500) >= 500:
            return _error(exc.code or 500, f"{exc.name}: the server failed; see its log")
        return _error(exc.code or 400, f"{exc.name}: {exc.description}")

    @bp.get("/api/<path:rest>")
    def unknown_route(rest: str):
        # Without this, the Dash page's catch-all route would answer unknown API paths with HTML.
        return _error(404, f"no API route /api/{rest}; the routes are /api/v1/summary, /api/v1/areas, "
                           "/api/v1/cases, /api/v1/cases.csv, /api/v1/cases/<id>, /api/v1/sla, /api/v1/kpis, /api/v1/rankings, "
                           "/api/v1/definitions, /api/v1/risk, /api/v1/risk/<code>/explain and /api/v1/notifications; all are described in "
                           "/api/v1/openapi.json")


def _health_routes(bp: Blueprint) -> None:
    @bp.get("/healthz")
    def healthz():
        """Status and reasons for anyone; the details (streams, feeds, workers) only for a logged-in viewer."""
        settings = context.settings()
        body: dict[str, Any] = {"status": "ok", "redis": "ok", "database": "ok", "reasons": []}
        r, down = _reach(body)
        applying: list[str] = []
        if r is not None:
            try:
                applying = _details(r, settings, body)
            except Exception as exc:  # noqa: BLE001
                body["redis"] = f"error: {type(exc).__name__}: {exc}"
                body["reasons"].append("redis: failing")
                down = True
        if down:
            body["status"] = "down"
            return _health_answer(body, 503)
        body["reasons"] += _stream_reasons(body["streams"], settings)
        body["reasons"] += applying
        body["reasons"] += _feed_reasons(body.get("feed_status", {}))
        body["reasons"] += [f"notification channel {name}: {state.get('error') or 'failing'} ({state.get('failures', 1)} "
                            "failures in a row)" for name, state in body.get("notify_channels", {}).items()
                            if not state.get("ok")]
        if body["reasons"]:
            body["status"] = "degraded"
        warning = _calendar_warning(settings)
        body["warnings"] = [warning] if warning else []
        body["as_of"] = datetime.now(UTC)
        return _health_answer(body, 200)

    @bp.get("/healthz/live")
    def healthz_live():
        """The process answers (no I/O): for a process supervisor's liveness probe."""
        return json_response({"status": "ok"})

    @bp.get("/healthz/ready")
    def healthz_ready():
        """Redis and SQL answer and a worker is alive: for a load balancer's readiness probe."""
        settings = context.settings()
        reasons = []
        try:
            r = context.redis_client()
            r.ping()
            if not live.applying(r, settings)["alive"]:
                reasons.append("no worker is running (no heartbeat)")
        except Exception:  # noqa: BLE001
            reasons.append("redis: not reachable")
        try:
            with context.engine().connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception:  # noqa: BLE001
            reasons.append("database: not reachable")
        return json_response({"status": "not ready" if reasons else "ready", "reasons": reasons},
                             503 if reasons else 200)


def _area_routes(bp: Blueprint) -> None:
    @bp.get("/api/v1/summary")
    def summary():
        p = params.query(("area",))
        area = params.area(p["area"]) if "area" in p else params.home()
        data = live.summary(context.redis_client(), context.settings(), area.code)
        data["by_grade"] = _grades(data["by_grade"])
        data["last_event_at"] = _utc(data["last_event_at"])
        return json_response({"area": area.code, "name": area.name, "level": area.level, **data})

    @bp.get("/api/v1/areas")
    def areas():
        found = _select_areas(params.query(("level", "parent")))
        counts = live.area_counts(context.redis_client(), context.settings(), [a.code for a in found])
        return json_response([
            {
                "code": a.code, "name": a.name, "level": a.level, "parent": a.parent, "kind": a.kind,
                "total": counts[a.code]["total"], "open": counts[a.code]["open"],
                "overdue": counts[a.code]["overdue"], "warning": counts[a.code]["warning"],
                "alarms": counts[a.code]["alarms"],
                "offline": counts[a.code]["offline"],
                "by_grade": _grades(counts[a.code]["by_grade"]),
            }
            for a in found
        ])


def _case_routes(bp: Blueprint) -> None:
    @bp.get("/api/v1/cases")
    def cases():
        p = params.query((*FILTER_PARAMS, "limit", "cursor"))
        where = params.case_filter(p)
        limit = params.limit(p.get("limit"))
        after = params.cursor(p.get("cursor"))
        items, nxt = queries.list_cases(context.engine(), limit=limit, after_id=after, where=where,
                                          personal=viewers.personal(), own=context.own_prefixes())
        return json_response({"items": items, "next_cursor": nxt})

    @bp.get("/api/v1/cases.csv")
    def cases_csv():
        """The filtered cases as CSV (UTF-8 with a BOM, so Excel reads the Chinese), streamed; the reporter's name and
        phone masked unless the viewer may see personal data."""
        p = params.query(FILTER_PARAMS)
        where = params.case_filter(p)
        engine = context.engine()
        personal = viewers.personal()
        viewers.audit("export", "cases.csv", {"filters": p, "personal": personal})
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        return Response(_csv_chunks(engine, where, personal), mimetype="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="gridwatch-cases-{stamp}.csv"'})

    @bp.get("/api/v1/sla")
    def sla():
        p = params.query(("state", "area", "limit"))
        states = _sla_states(p)
        area = params.area(p["area"]).code if "area" in p else params.home_code()
        limit = params.limit(p.get("limit"))
        now = datetime.now(UTC)
        items = queries.sla_cases(context.engine(), now=now, states=states, area=area, personal=viewers.personal(),
                                  own=context.own_prefixes(), warn_share=context.settings().sla_warn_share, limit=limit)
        return json_response({"as_of": now, "states": sorted(states), "warn_share": context.settings().sla_warn_share,
                              "items": items})

    @bp.get("/api/v1/cases/<case_id>")
    def case(case_id: str):
        params.query(())
        if case_id_of(case_id) is None:
            raise ApiError(400, f"id: {case_id[:40]!r} is not a case id; a case id is a positive whole number", "id")
        found = queries.get_case(context.engine(), int(case_id), personal=viewers.personal(),
                                  own=context.own_prefixes())
        if found is None or not viewers.in_scope(found.get("grid_code")):  # outside: as if absent (no probing)
            raise ApiError(404, f"id: no case with id {case_id} in your jurisdiction", "id")
        viewers.audit("case_view", case_id, {"via": "api"})
        limit = timedelta(minutes=context.settings().whistle_report_minutes)
        found["whistle_reports"] = [w.as_dict() for w in whistle_reports(found["timeline"], datetime.now(UTC), limit)]
        return json_response(found)


def _figure_routes(bp: Blueprint) -> None:
    """KPIs, the department ranking, what every figure means, and this API's description."""

    @bp.get("/api/v1/kpis")
    def kpis():
        p = params.query(("area", "since", "until", "drills"))
        area = params.area(p["area"]) if "area" in p else params.home()
        since, until = params.period(p)
        drills = params.drills(p)
        length = until - since
        now = datetime.now(UTC)
        engine = context.engine()
        current = queries.kpis(engine, queries.CaseFilter(area=area.code, since=since, until=until, drills=drills),
                               min(until, now))
        previous = queries.kpis(engine, queries.CaseFilter(area=area.code, since=since - length, until=since,
                                                           drills=drills), since)
        return json_response({"area": area.code, "name": area.name, "since": since, "until": until,
                              "previous": {"since": since - length, "until": since, "kpis": previous},
                              "kpis": current, "change": kpi_rules.change(current, previous)})

    @bp.get("/api/v1/rankings")
    def rankings():
        p = params.query(("period", "date", "since", "until", "area"))
        city = context.city()
        area = params.area(p["area"]) if "area" in p else params.home()
        current = _ranking_period(p)
        now = datetime.now(UTC)
        previous = current.previous(CITY_TZ)
        rules = get_rules(context.settings().rankings_file)
        result = queries.ranking(context.engine(), departments=city.departments, rules=rules, current=current,
                                 previous=previous, now=now, area=None if area.level == "district" else area.code)
        return json_response({
            "area": area.code, "name": area.name, "period": current.kind, "label": current.label,
            "since": current.since.astimezone(UTC), "until": current.until.astimezone(UTC), "as_of": min(now, current.until),
            "previous": {"label": previous.label, "since": previous.since.astimezone(UTC),
                         "until": previous.until.astimezone(UTC)},
            "rules": {"weights": dict(rules.weights), "min_volume": rules.min_volume, "list_size": rules.list_size},
            **result,
        })

    @bp.get("/api/v1/definitions")
    def definitions():
        params.query(())
        return json_response({"kpis": kpi_rules.DEFINITIONS, "rankings": ranking_rules.DEFINITIONS,
                              "risk": risk_rules.DEFINITIONS})

    @bp.get("/api/v1/openapi.json")
    def openapi_description():
        """This API's OpenAPI description (dashboard/openapi.py), built from the validators' own rules."""
        params.query(())
        return json_response(openapi.spec(context.city(), context.settings()))


def _risk_routes(bp: Blueprint) -> None:
    @bp.get("/api/v1/risk")
    def risk():
        p = params.query(("level", "parent"))
        model = _risk_model()
        found = _select_areas(p)
        scores, at = _risk_of(model, found)
        items = [{"code": a.code, "name": a.name, "level": a.level, "parent": a.parent, **scores[a.code]}
                 for a in found]
        return json_response({"as_of": datetime.now(UTC), "hotspots_as_of": _utc(at), "notes": _risk_notes(at),
                              "items": items})

    @bp.get("/api/v1/risk/<path:code>/explain")
    def risk_explain(code: str):
        p = params.query(("limit",))
        area = params.code(code, "code")
        limit = _explain_limit(p)
        model = _risk_model()
        scores, at = _risk_of(model, [area])
        settings = context.settings()
        r = context.redis_client()
        top, open_total = queries.risk_top_cases(context.engine(), area=area.code, grade_weights=model.grade_weights,
                                                 overdue_multiplier=model.overdue_multiplier, limit=limit)

        def alarms_here(offline: bool, weight: float) -> list[dict[str, Any]]:  # newest first
            return [{**a, "contribution": weight} for a in live.alarms_in(r, settings, area, offline=offline)]

        alarms = alarms_here(False, model.alarm_weight)
        offline = alarms_here(True, model.offline_weight) if model.offline_weight else []
        hotspots = live.hotspots_in(r, settings, area)
        yellow, orange, red = model.thresholds[area.level]
        levels = risk_rules.RISK_LEVELS
        return json_response({
            "code": area.code, "name": area.name, "level": area.level, "as_of": datetime.now(UTC),
            "hotspots_as_of": _utc(at), "notes": _risk_notes(at), **scores[area.code],
            "thresholds": {levels[2].name: yellow, levels[3].name: orange, levels[4].name: red},
            "weights": {"grades": {str(g): w for g, w in model.grade_weights.items()},
                        "overdue_multiplier": model.overdue_multiplier, "alarm": model.alarm_weight,
                        "offline": model.offline_weight, "hotspot": dataclasses.asdict(model.hotspot)},
            "open_cases": open_total, "top_cases": top,
            "alarms_total": len(alarms), "alarms": alarms[:limit], "offline_total": len(offline), "offline": offline[:limit],
            "hotspots_total": len(hotspots), "hotspots": hotspots[:limit],
        })


def _action_routes(bp: Blueprint) -> None:
    @bp.post("/api/v1/cases/<case_id>/actions")
    def case_action(case_id: str):
        """在线督办: one action on one case (dashboard.actions.perform)."""
        params.query(())
        if case_id_of(case_id) is None:
            raise ApiError(400, f"id: {case_id[:40]!r} is not a case id; a case id is a positive whole number", "id")
        if (request.content_length or 0) > action_rules.MAX_BODY:
            raise ApiError(413, f"body: larger than {action_rules.MAX_BODY} bytes; an action is a small JSON object")
        raw = request.get_data(cache=False)[: action_rules.MAX_BODY + 1]
        if len(raw) > action_rules.MAX_BODY:
            raise ApiError(413, f"body: larger than {action_rules.MAX_BODY} bytes; an action is a small JSON object")
        try:
            body = orjson.loads(raw) if raw.strip() else None
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, f"body: not valid JSON ({exc}); send {{\"action\": NAME, …}}") from None
        out = actions.perform(viewers.viewer(), int(case_id), body)
        return json_response(out.body, out.status)

    @bp.get("/api/v1/routing")
    def routing():
        """智能分拨: the rules in the order they are tried, then each 小类's own department."""
        params.query(())
        return json_response(routing_view.describe(context.city(), context.settings()))


def blueprint() -> Blueprint:
    """The API's routes (health, areas, cases, actions, figures, risk, routing) and its JSON errors, on one
    blueprint."""
    bp = Blueprint("api", __name__)
    for add in (_error_routes, _health_routes, _area_routes, _case_routes, _action_routes, _figure_routes,
                _risk_routes):
        add(bp)
    return bp
