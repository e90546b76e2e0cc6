"""The OpenAPI 3.1 description of the JSON API and the push feed, served at /api/v1/openapi.json.

Built from the code's own rules (the routes' parameter names, the validators' constants, the queries' columns typed
from the SQL schema, the records' pydantic models), not written beside them, so it cannot drift; tests/test_openapi.py
checks every route against it both ways.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic.json_schema import models_json_schema
from sqlalchemy import JSON, Boolean, Float, Integer, String, Text

from config.city import City
from config.settings import Settings
from core import actions as action_rules
from core import kpis
from core.coords import CRS_NAMES
from core.geography import CODE_LENGTHS, LEVELS
from core.lifecycle import Status
from core.rankings import PERIODS
from core.records import CASE_ID_DIGITS, LIMITS, MAX_DEPARTMENTS, CaseEvent, SensorReading
from core.risk import PART_NAMES, RISK_LEVELS
from dashboard import params
from ingest.feeds.push import CRS_HEADER, SOURCE_HEADER
from store import notify as notify_store
from store import queries
from store.schema import UTCDateTime

OPENAPI_VERSION = "3.1.0"
SESSION_COOKIE = "gridwatch_session"
SPEC_PATH = "/api/v1/openapi.json"

def routes() -> dict[str, tuple[str, ...]]:
    """OpenAPI path → the query parameters the route takes, as its handler passes them to dashboard.params.query
    (FILTER_PARAMS: the case filter). tests/test_openapi.py compares them with each route's own answer to an unknown
    parameter."""
    return {
        "/api/v1/summary": ("area",),
        "/api/v1/areas": ("level", "parent"),
        "/api/v1/cases": (*params.FILTER_PARAMS, "limit", "cursor"),
        "/api/v1/cases.csv": params.FILTER_PARAMS,
        "/api/v1/cases/{case_id}": (),
        "/api/v1/sla": ("state", "area", "limit"),
        "/api/v1/kpis": ("area", "since", "until", "drills"),
        "/api/v1/rankings": ("period", "date", "since", "until", "area"),
        "/api/v1/definitions": (),
        "/api/v1/risk": ("level", "parent"),
        "/api/v1/risk/{code}/explain": ("limit",),
        "/api/v1/routing": (),
        "/api/v1/notifications": ("delivery", "channel", "limit", "before"),
        SPEC_PATH: (),
    }


PUSH_ROUTES = {"/api/v1/ingest/cases": "CaseEvent", "/api/v1/ingest/sensors": "SensorReading"}
ACTION_PATH = "/api/v1/cases/{case_id}/actions"


# --------------------------------------------------------------------------- small schema helpers


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    t = schema.get("type")
    if t is None:
        return {"anyOf": [schema, {"type": "null"}]}
    return {**schema, "type": [t, "null"] if isinstance(t, str) else [*t, "null"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(properties: dict[str, Any], required: list[str] | tuple[str, ...] | None = None,
         description: str | None = None) -> dict[str, Any]:
    """An object with these properties (all required unless told); more properties may be added later."""
    out: dict[str, Any] = {"type": "object", "properties": properties,
                           "required": list(properties if required is None else required)}
    if description:
        out["description"] = description
    return out


TIME = {"type": "string", "format": "date-time"}
NULL_TIME = _nullable(TIME)
INT = {"type": "integer"}
NUM = {"type": "number"}
NULL_NUM = _nullable(NUM)
STR = {"type": "string"}
NULL_STR = _nullable(STR)
BOOL = {"type": "boolean"}
COUNTS = {"type": "object", "additionalProperties": INT}
LEVEL = {"type": "string", "enum": list(LEVELS)}


def _columns_schema(columns, extra: dict[str, Any] | None = None, description: str | None = None) -> dict[str, Any]:
    """An object schema of SQL columns as the API serialises them (times ISO 8601 UTC, JSON lists as arrays)."""
    props: dict[str, Any] = {}
    for c in columns:
        if isinstance(c.type, UTCDateTime):
            s: dict[str, Any] = dict(TIME)
        elif isinstance(c.type, Boolean):
            s = dict(BOOL)
        elif isinstance(c.type, Integer):
            s = dict(INT)
        elif isinstance(c.type, Float):
            s = dict(NUM)
        elif isinstance(c.type, String | Text):
            s = dict(STR)
        elif isinstance(c.type, JSON):  # the JSON columns hold lists of codes (departments, flags)
            s = {"type": "array", "items": STR}
        else:
            raise TypeError(f"column {c.name}: no JSON type for {c.type!r}; add it to dashboard/openapi.py")
        props[c.name] = _nullable(s) if c.nullable and not c.primary_key else s
    props.update(extra or {})
    return _obj(props, description=description)


# --------------------------------------------------------------------------- parameters


def _area_pattern() -> str:
    return "^(?:" + "|".join(f"[0-9]{{{n}}}" for n in sorted(CODE_LENGTHS)) + ")$"


def _area_schema(city: City, **extra: Any) -> dict[str, Any]:
    """An area code: any code of the right shape (an unknown one is a 404); the examples are real ones."""
    geo = city.geography
    street = geo.children(geo.district.code)[0]
    community = geo.children(street.code)[0]
    grid = geo.children(community.code)[0]
    return {"type": "string", "pattern": _area_pattern(), **extra,
            "examples": [geo.district.code, street.code, community.code, grid.code]}


def _char_class(chars: set[str]) -> str:
    """The inside of a regex character class holding exactly ``chars`` (ASCII), runs written as ranges: ``0-9A-Z``."""
    codes = sorted(ord(c) for c in chars)
    runs: list[list[int]] = []
    for c in codes:
        if runs and c == runs[-1][1] + 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    out = []
    for a, b in runs:
        esc = [re.escape(chr(x)) if chr(x) in "\\]^-[" else chr(x) for x in (a, b)]
        out.append(esc[0] if a == b else f"{esc[0]}{esc[1]}" if b == a + 1 else f"{esc[0]}-{esc[1]}")
    return "".join(out)


def _list(items: dict[str, Any]) -> dict[str, Any]:
    """A comma-separated list in one parameter (``grade=1,3``)."""
    return {"type": "array", "items": items, "minItems": 1}


def _parameters(city: City) -> dict[str, dict[str, Any]]:
    """Every query parameter of the API by the name its routes give it (``limit`` of the risk explanation is
    ``risk_limit`` here: it has its own range)."""
    area = _area_schema(city)
    lengths = ", ".join(f"{n} ({lvl})" for n, lvl in sorted(CODE_LENGTHS.items()))
    when = {"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}]}
    years = f"years {params.QUERY_YEARS.start}–{params.QUERY_YEARS.stop - 1}"
    when_doc = ("ISO 8601 date or time; a date alone is its midnight in the city's zone (Asia/Shanghai), a time "
                f"without a zone is in the city's zone; {years}")
    source_chars = _char_class(params.SOURCE_CHARS)
    categories = sorted({*city.categories, *(g.code for g in city.groups)})

    def q(name: str, schema: dict[str, Any], description: str, *, explode: bool = True) -> dict[str, Any]:
        p: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": schema,
                             "description": description}
        if not explode:
            p.update(style="form", explode=False)
        return p

    return {
        "area": q("area", area, f"an area code: {lengths} digits; list them with /api/v1/areas"),
        "parent": q("parent", area, "the area whose areas are listed (an area code, as for area); default: the "
                                    "district"),
        "level": q("level", {"type": "string", "enum": list(LEVELS)},
                   "the level of the areas listed (default: the level below parent)"),
        "since": q("since", when, f"start of the period, included ({when_doc})"),
        "until": q("until", when, f"end of the period, excluded ({when_doc}); after since"),
        "category": q("category", {"type": "string", "enum": categories},
                      "a 小类 (4 digits) or 大类 (2 digits) code from config/city/categories.yaml"),
        "grade": q("grade", _list({"type": "integer", "enum": sorted(city.grades)}),
                   "grades, comma-separated", explode=False),
        "source": q("source", _list({"type": "string", "minLength": 1, "maxLength": 32,
                                     "pattern": f"^[{source_chars}]+$"}),
                    "source names (letters, digits, - _ .), comma-separated", explode=False),
        "status": q("status", _list({"type": "string", "enum": [*params.STATUS_WORDS, *(s.value for s in Status)]}),
                    "statuses, comma-separated; 'open' stands for every open status", explode=False),
        "dept": q("dept", {"type": "string", "enum": sorted(city.departments)},
                  "a department that had a part in the case (config/city/departments.yaml)"),
        "q": q("q", {"type": "string", "minLength": 1, "maxLength": params.MAX_TEXT_CHARS},
               f"words in the title (any case, taken literally; at most {params.MAX_TEXT_CHARS} printable characters; "
               f"{params.SEARCH_DIGITS_MIN} or more digits in a row only for the roles that see personal data, else 403)"),
        "drills": q("drills", {"type": "string", "enum": ["0", "1", "true", "false"], "default": "0"},
                    "1: a replay's drill cases (演练) too; by default every list and figure leaves them out"),
        "limit": q("limit", {"type": "integer", "minimum": 1, "maximum": queries.MAX_LIMIT,
                             "default": queries.DEFAULT_LIMIT}, "items per page"),
        "cursor": q("cursor", {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"},
                    "next_cursor of the previous page, unchanged"),
        "state": q("state", _list({"type": "string", "enum": ["warning", "overdue"]}),
                   "SLA states, comma-separated (default: both)", explode=False),
        "period": q("period", {"type": "string", "enum": list(PERIODS), "default": "week"},
                    "the ranking period holding date; custom takes since and until instead"),
        "date": q("date", {"type": "string", "format": "date"},
                  f"a day of the period (city days; weeks run Monday–Sunday; {years}); default: today"),
        "delivery": q("delivery", {"type": "string", "enum": list(notify_store.STATUSES)},
                      "notifications of one delivery status: queued, sent, failed (retried with backoff, or given "
                      "up when next_at is null), folded (told in a summary message)"),
        "channel": q("channel", {"type": "string", "minLength": 1, "maxLength": 100},
                     "notifications of one channel (its name in config/notify.yaml)"),
        "before": q("before", {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
                    "notifications older than this id (next_before of the previous page)"),
        "risk_limit": q("limit", {"type": "integer", "minimum": 1, "maximum": params.RISK_TOP_MAX,
                                  "default": params.RISK_TOP_DEFAULT}, "items in each list"),
    }


# --------------------------------------------------------------------------- schemas


def _listed(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item}


def _case_schemas() -> dict[str, dict[str, Any]]:
    """A case in a list, its timeline's events, one case whole, a page of cases."""
    hidden = {"type": "string", "const": queries.REPORTER_HIDDEN,
              "description": "lists never carry the reporter's name and phone"}
    nullable = {"type": ["string", "null"]}
    reporter = _obj({"name": nullable, "phone": nullable, "masked": {"type": "boolean"}},
                    description="the reporter's name and phone: whole for the dispatcher and admin roles, masked "
                                "for the others (masked: true)")
    whistle = _obj({"department": STR, "whistled_at": TIME, "due_at": TIME, "reported_at": NULL_TIME,
                    "status": {"type": "string", "enum": ["on_time", "late", "missing", "pending"]}})
    return {
        "Case": _columns_schema(queries._LIST_COLUMNS, {"reporter": hidden}, "a case (no personal data)"),
        "TimelineEvent": _columns_schema(queries._EVENT_COLUMNS, description="one event of a case's timeline"),
        "CaseDetail": _columns_schema(queries._DETAIL_COLUMNS, {
            "reporter": reporter, "timeline": {"type": "array", "items": _ref("TimelineEvent")},
            "whistle_reports": {"type": "array", "items": whistle}}, "one case with its timeline"),
        "CasePage": _obj({"items": _listed(_ref("Case")),
                          "next_cursor": _nullable({"type": "string", "description": "pass as cursor for the next "
                                                                                     "page; null on the last"})}),
    }


def _live_schemas() -> dict[str, dict[str, Any]]:
    """The live figures: an area's summary, the areas with their counts, the cases near or past their deadline."""
    sla_case = _columns_schema(queries.SLA_COLUMNS, {
        "sla_state": {"type": "string", "enum": ["warning", "overdue"]}, "seconds_left": INT})
    return {
        "Summary": _obj({"area": STR, "name": STR, "level": LEVEL, "cases_total": INT, "cases_open": INT,
                         "overdue_open": INT, "warning_open": INT, "sensor_alarms_active": INT,
                         "devices_offline": INT, "by_grade": COUNTS, "by_status": COUNTS, "as_of": TIME,
                         "last_event_at": NULL_STR}),
        "Area": _obj({"code": STR, "name": STR, "level": LEVEL, "parent": NULL_STR, "kind": NULL_STR,
                      "total": INT, "open": INT, "overdue": INT, "warning": INT, "alarms": INT, "offline": INT,
                      "by_grade": COUNTS}),
        "SlaPage": _obj({"as_of": TIME, "states": _listed({"type": "string", "enum": ["warning", "overdue"]}),
                         "warn_share": NUM, "items": _listed(sla_case)}),
    }


def _figure_schemas() -> dict[str, dict[str, Any]]:
    """KPIs of a period, the department ranking, and what each figure means."""
    kpi_values = _obj({name: (NUM if d["unit"] == "cases" else NULL_NUM) for name, d in kpis.DEFINITIONS.items()},
                      required=["cases_total"])
    kpi_change = _obj({name: NULL_NUM for name in kpis.DEFINITIONS}, required=[])
    period = _obj({"since": TIME, "until": TIME})
    dept_row = _obj({
        "department": STR, "name": STR, "short": NULL_STR,
        **{name: (INT if value == 0 else NULL_NUM) for name, value in queries.department_metrics_empty().items()},
        "score": NULL_NUM, "ranked": BOOL, "rank": _nullable(INT), "rank_change": _nullable(INT),
        "previous_rank": _nullable(INT)})
    definition = {"type": "object", "additionalProperties": {
        "type": "object", "properties": {"zh": STR, "en": STR, "unit": STR, "definition": STR},
        "required": ["zh", "en", "unit", "definition"]}}
    return {
        "Kpis": _obj({"area": STR, "name": STR, "since": TIME, "until": TIME,
                      "previous": {"allOf": [period, _obj({"kpis": kpi_values})]},
                      "kpis": kpi_values, "change": kpi_change}),
        "Rankings": _obj({"area": STR, "name": STR, "period": STR, "label": STR, "since": TIME, "until": TIME,
                          "as_of": TIME, "previous": {"allOf": [period, _obj({"label": STR})]},
                          "rules": _obj({"weights": {"type": "object", "additionalProperties": NUM},
                                         "min_volume": INT, "list_size": INT}),
                          "departments": _listed(dept_row), "red_list": _listed(STR), "black_list": _listed(STR)}),
        "Definitions": _obj({"kpis": definition, "rankings": definition, "risk": definition}),
    }


def _risk_schemas() -> dict[str, dict[str, Any]]:
    """The areas' risk, and what makes up one area's score."""
    risk_area = _obj({
        "code": STR, "name": STR, "level": LEVEL, "score": NUM,
        "risk_level": {"type": "integer", "enum": sorted(RISK_LEVELS)},
        "color_name": STR, "roman": STR, "en": STR, "color": STR, "parts": _obj({p: NUM for p in PART_NAMES})})
    risk_item = {"allOf": [risk_area, _obj({"parent": NULL_STR})]}
    loose = {"type": "object"}
    return {
        "RiskPage": _obj({"as_of": TIME, "hotspots_as_of": NULL_TIME, "notes": _listed(STR),
                          "items": _listed(risk_item)}),
        "RiskExplain": {"allOf": [risk_area, _obj({
            "as_of": TIME, "hotspots_as_of": NULL_TIME, "notes": _listed(STR),
            "thresholds": {"type": "object", "additionalProperties": NUM},
            "weights": _obj({"grades": {"type": "object", "additionalProperties": NUM},
                             "overdue_multiplier": NUM, "alarm": NUM, "offline": NUM, "hotspot": loose}),
            "open_cases": INT, "top_cases": _listed(_columns_schema(queries.RISK_CASE_COLUMNS, {"contribution": NUM})),
            "alarms_total": INT, "alarms": _listed(loose), "offline_total": INT, "offline": _listed(loose),
            "hotspots_total": INT, "hotspots": _listed(loose)})]},
    }


def _push_schemas(settings: Settings) -> dict[str, dict[str, Any]]:
    """A push's answer, and the batches each push route takes (within the settings' limits)."""
    return {
        "PushItem": {"oneOf": [
            _obj({"index": INT, "status": {"const": "accepted"},
                  "id": {"type": "string", "description": "the stream entry holding the record"}}),
            _obj({"index": INT, "status": {"const": "rejected"},
                  "errors": _listed({"type": "string", "description": "field: problem"})}),
        ]},
        "PushResult": _obj({"accepted": INT, "rejected": INT, "items": _listed(_ref("PushItem"))},
                           description="one item per record sent, in order"),
        **{f"{name}Batch": {"oneOf": [_ref(name), {"type": "array", "items": _ref(name),
                                                   "maxItems": settings.max_push_items}],
                            "description": f"one record or an array of at most {settings.max_push_items} "
                                           f"(MAX_PUSH_ITEMS); at most {settings.max_push_bytes} bytes "
                                           f"(MAX_PUSH_BYTES), each record at most {settings.max_payload_bytes} "
                                           f"(MAX_PAYLOAD_BYTES)"}
           for name in PUSH_ROUTES.values()},
    }


def _schemas(settings: Settings) -> dict[str, dict[str, Any]]:
    """Every schema the operations refer to: the push records (from their pydantic models), the error, the answers."""
    _, defs = models_json_schema([(CaseEvent, "validation"), (SensorReading, "validation")],
                                 ref_template="#/components/schemas/{model}")
    return {
        **defs.get("$defs", {}),
        "Error": _obj({"error": {"type": "string", "description": "what is wrong and how to fix it"},
                       "parameter": {"type": "string", "description": "the parameter at fault, if one is"},
                       "error_zh": {"type": "string", "description": "an action's refusal in Chinese, as the "
                                                                      "screens show it"}},
                      required=["error"], description="a refused request: never a traceback"),
        **_case_schemas(),
        **_live_schemas(),
        **_figure_schemas(),
        **_risk_schemas(),
        **_push_schemas(settings),
        "NotificationPage": _obj({
            "items": _listed(_columns_schema([notify_store.N.c[c] for c in notify_store.LOG_COLUMNS],
                                             description="one message to one channel; target and error masked")),
            "next_before": _nullable({"type": "integer", "description": "pass as before for older ones; null on "
                                                                        "the last page"})}),
    }


# --------------------------------------------------------------------------- operations


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


RESPONSES = {
    "BadRequest": _error("a bad parameter: the error names it and the fix"),
    "NotFound": _error("no such area or case"),
    "Unauthorized": _error("not logged in (no or an expired session; for pushes: no or an unknown token)"),
    "Forbidden": _error("logged in, but this role or jurisdiction may not see it"),
}


def _answers(ok: dict[str, Any], *, secured: bool = True, not_found: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"200": ok, "400": {"$ref": "#/components/responses/BadRequest"}}
    if not_found:
        out["404"] = {"$ref": "#/components/responses/NotFound"}
    if secured:
        out["401"] = {"$ref": "#/components/responses/Unauthorized"}
        out["403"] = {"$ref": "#/components/responses/Forbidden"}
    return out


def _json_ok(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _get_operations() -> dict[str, dict[str, Any]]:
    """path → (operation id, summary, 200 answer, may be 404); parameters are added from routes()."""
    csv = {"description": "the cases as CSV (UTF-8 with BOM), newest first, no personal data; columns: "
                          + ", ".join(queries.EXPORT_COLUMNS),
           "content": {"text/csv": {"schema": {"type": "string"}}}}
    return {
        "/api/v1/summary": ("summary", "Live figures of one area (default: the district)",
                            _json_ok(_ref("Summary"), "the area's live figures"), True),
        "/api/v1/areas": ("areas", "Areas with their live counts",
                          _json_ok({"type": "array", "items": _ref("Area")}, "the areas"), True),
        "/api/v1/cases": ("listCases", "Cases, newest first, keyset-paged",
                          _json_ok(_ref("CasePage"), "a page of cases"), True),
        "/api/v1/cases.csv": ("exportCases", "The filtered cases as CSV", csv, True),
        "/api/v1/cases/{case_id}": ("getCase", "One case with its timeline and whistle reports",
                                    _json_ok(_ref("CaseDetail"), "the case"), True),
        "/api/v1/sla": ("sla", "Open cases in SLA warning or overdue, nearest deadline first",
                        _json_ok(_ref("SlaPage"), "the cases"), True),
        "/api/v1/kpis": ("kpis", "KPIs of a period and the one before it",
                         _json_ok(_ref("Kpis"), "the KPIs"), True),
        "/api/v1/rankings": ("rankings", "Department ranking (吹哨报到 accountability) for a period",
                             _json_ok(_ref("Rankings"), "the ranking"), True),
        "/api/v1/definitions": ("definitions", "What every KPI, ranking figure and risk part means",
                                _json_ok(_ref("Definitions"), "the definitions"), False),
        "/api/v1/risk": ("risk", "Each area's live risk score and level",
                         _json_ok(_ref("RiskPage"), "the areas' risk"), True),
        "/api/v1/risk/{code}/explain": ("explainRisk", "What makes up one area's risk score",
                                        _json_ok(_ref("RiskExplain"), "the area's risk explained"), True),
        "/api/v1/routing": ("routing", "The routing rules (智能分拨) in the order they are tried",
                            _json_ok(_ref("Routing"), "the rules"), False),
        "/api/v1/notifications": ("notifications", "The notifications' delivery log, newest first (admin and "
                                  "dispatcher roles)", _json_ok(_ref("NotificationPage"), "a page of messages"),
                                  False),
        SPEC_PATH: ("openapi", "This description (OpenAPI 3.1)",
                    _json_ok({"type": "object"}, "the OpenAPI description"), False),
    }


def _path_parameters(city: City, path: str) -> list[dict[str, Any]]:
    if path in ("/api/v1/cases/{case_id}", ACTION_PATH):
        return [{"name": "case_id", "in": "path", "required": True, "description": "the case's id",
                 "schema": {"type": "integer", "minimum": 1, "maximum": 10 ** CASE_ID_DIGITS - 1,
                            "examples": [1]}}]
    if path == "/api/v1/risk/{code}/explain":
        return [{"name": "code", "in": "path", "required": True,
                 "description": f"an area code ({', '.join(map(str, sorted(CODE_LENGTHS)))} digits)",
                 "schema": _area_schema(city, maxLength=params.MAX_CODE_CHARS)}]
    return []


def _push_operation(record: str) -> dict[str, Any]:
    crs = {"type": "string", "enum": list(CRS_NAMES), "default": "wgs84"}
    kind = "case events" if record == "CaseEvent" else "sensor readings"
    result = {"content": {"application/json": {"schema": _ref("PushResult")}}}
    push_error = {"content": {"application/json": {"schema": _obj({"error": STR})}}}
    return {
        "operationId": "push" + ("Cases" if record == "CaseEvent" else "Sensors"),
        "summary": f"Push {kind}: each is validated now, published if valid, dead-lettered with its reason if not",
        "tags": ["push"],
        "security": [{"bearerAuth": []}],
        "parameters": [
            {"name": "crs", "in": "query", "required": False, "schema": crs,
             "description": f"coordinate system of lon/lat (wins over {CRS_HEADER}); converted to WGS84 here"},
            {"name": SOURCE_HEADER, "in": "header", "required": False, "schema": {"type": "string"},
             "description": "the source of records that name none (first 32 characters; default push)"},
            {"name": CRS_HEADER, "in": "header", "required": False, "schema": crs,
             "description": "coordinate system of lon/lat, as crs"},
        ],
        "requestBody": {"required": True,
                        "content": {"application/json": {"schema": _ref(f"{record}Batch")}}},
        "responses": {
            "200": {"description": "every record accepted", **result},
            "207": {"description": "some records rejected (each with its errors)", **result},
            "422": {"description": "every record rejected", **result},
            "400": {"description": "the body is not JSON, not an object or array, or crs is unknown", **push_error},
            "401": {"$ref": "#/components/responses/Unauthorized"},
            "403": {"$ref": "#/components/responses/Forbidden"},
            "413": {"description": "the body or the batch is over its limit: send smaller batches", **push_error},
            "415": {"description": "not application/json", **push_error},
        },
    }


def _action_schemas(city: City) -> dict[str, dict[str, Any]]:
    names = [a.value for a in action_rules.USER_ACTIONS]
    body = _obj({
        "action": {"type": "string", "enum": names, "description": "立案 register, 派遣 dispatch, 转派 transfer, 吹哨 "
                   "whistle, 退回 return, 延期 extend, 挂起 suspend, 恢复 resume, 督办 supervise, 催办 remind, 结案 "
                   "close, 重新办理 reopen, note"},
        "departments": {"type": "array", "maxItems": MAX_DEPARTMENTS, "items": {"type": "string",
                        "enum": sorted(city.departments)}, "description": "dispatch, transfer, whistle: required"},
        "note": {"type": "string", "maxLength": LIMITS["note"],
                 "description": "the 批示 of a supervise, the reason of a return, suspend or reopen: required there"},
        "due_at": {**TIME, "description": "extend: the approved new deadline (required); supervise: its deadline; "
                                          "in the future, with its offset"},
        "request_id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{8,64}$",
                       "description": "a request sent again with the same id is applied once (default: the same "
                                      "user, case and body)"},
    }, required=["action"], description="one action on one case")
    result = _obj({"applied": BOOL, "replayed": BOOL, "case_id": INT, "event_key": STR, "action": STR,
                   "status": STR, "note": STR}, required=["applied", "case_id", "event_key", "action"],
                  description="the action published as a case event; applied: the worker has applied it")
    who = {"type": "array", "items": _obj({"code": STR, "name": STR}, required=["code", "name"])}
    rule = _obj({"order": INT, "name": STR, "when": {"type": "object"}, "lead": who, "summon": who,
                 "onsite": _nullable(BOOL), "manual": BOOL}, required=["order", "name", "lead", "manual"])
    routing = _obj({"file": STR, "auto_sources": {"type": "array", "items": STR},
                    "rules": {"type": "array", "items": rule}, "default": {"type": "object"}},
                   required=["rules", "auto_sources"], description="the routing rules, then the default")
    return {"CaseAction": body, "ActionResult": result, "Routing": routing}


def _action_operation(city: City) -> dict[str, Any]:
    return {
        "operationId": "caseAction", "tags": ["act"],
        "summary": "在线督办: one action on a case, published as a case event the worker applies",
        "parameters": _path_parameters(city, ACTION_PATH),
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("CaseAction")}}},
        "responses": {
            "200": _json_ok(_ref("ActionResult"), "applied (or applied before: a replayed request)"),
            "202": _json_ok(_ref("ActionResult"), "accepted: published, the worker has not applied it yet"),
            "400": {"$ref": "#/components/responses/BadRequest"},
            "401": {"$ref": "#/components/responses/Unauthorized"},
            "403": _error("this role may not take this action (or the CSRF token is missing)"),
            "404": {"$ref": "#/components/responses/NotFound"},
            "409": _error("the case's status does not allow the action: the lifecycle's reason"),
            "413": _error("the body is larger than an action can be"),
        },
    }


def spec(city: City, settings: Settings) -> dict[str, Any]:
    """The OpenAPI description for this city (its categories, grades, departments) and settings (push limits)."""
    parameters = _parameters(city)
    route_params = routes()
    paths: dict[str, Any] = {}
    for path, (op_id, summary, ok, not_found) in _get_operations().items():
        names = ["risk_limit" if path.endswith("/explain") and n == "limit" else n for n in route_params[path]]
        op: dict[str, Any] = {
            "operationId": op_id, "summary": summary, "tags": ["read"],
            "parameters": _path_parameters(city, path) + [{"$ref": f"#/components/parameters/{n}"} for n in names],
            "responses": _answers(ok, secured=path != SPEC_PATH, not_found=not_found),
        }
        if path == SPEC_PATH:
            op["security"] = []
        paths[path] = {"get": op}
    for path, record in PUSH_ROUTES.items():
        paths[path] = {"post": _push_operation(record)}
    paths[ACTION_PATH] = {"post": _action_operation(city)}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "Gridwatch API", "version": "1",
                 "description": "Live figures, areas, cases, KPIs, rankings, risk and the notifications' log of "
                                f"{city.geography.district.name} ({city.geography.district.code}), and the HTTP "
                                "push feed. Times are ISO 8601 UTC. A refused request gets 4xx JSON "
                                '{"error": ..., "parameter": ...} naming the parameter and the fix.'},
        "tags": [{"name": "read", "description": "the JSON API"},
                 {"name": "act", "description": "actions on cases (dispatcher, admin; a leader 督办 and 催办)"},
                 {"name": "push", "description": "the HTTP push feed"}],
        "security": [{"cookieAuth": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "cookieAuth": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE,
                               "description": "the session cookie set at login"},
                "bearerAuth": {"type": "http", "scheme": "bearer",
                               "description": "a push token (FEED_TOKENS), sent as Authorization: Bearer <token>"},
            },
            "parameters": parameters,
            "responses": RESPONSES,
            "schemas": {**_schemas(settings), **_action_schemas(city)},
        },
    }
