"""The OpenAPI description (/api/v1/openapi.json): valid OpenAPI, in step with the routes, and a schemathesis run
over every operation — against the Flask app in-process, on a small stored dataset — that finds no server error.

Auth: the run logs in as an administrator (the ``auth`` fixture: the session's cookies, its CSRF token, a push
source's bearer token). That every route refuses a request without them is tests/test_access.py's (schemathesis'
``ignored_auth`` check needs a base URL, which an in-process run has not).
"""

from __future__ import annotations

import re
from urllib.parse import quote

import hypothesis
import orjson
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from dashboard import openapi
from store import queries
from tests import accounts
from tests.api_dataset import apply, build_dataset

# what every request of the run carries besides the login (the ``auth`` fixture): plain answers, since schemathesis
# reads an in-process (WSGI) answer as it comes; compressed answers are tests/test_compression.py's
AUTH: dict[str, str] = {"Accept-Encoding": "identity"}
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
METHODS_IGNORED = {"HEAD", "OPTIONS"}
EXAMPLES = 50  # generated per operation and generation mode, besides schemathesis' own boundary cases


def api_rules(app) -> set[tuple[str, str]]:
    """(METHOD, OpenAPI path) of every /api/v1 route in the Flask url_map."""
    out = set()
    for rule in app.server.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue  # the catch-all /api/<path> answers unknown API paths with a JSON 404; it is no operation
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        out |= {(m, path) for m in rule.methods - METHODS_IGNORED}
    return out


def spec_operations(description: dict) -> set[tuple[str, str]]:
    return {(m.upper(), path) for path, item in description["paths"].items() for m in item if m != "parameters"}


@pytest.fixture
def app(settings):
    """The web app; an action's answer does not wait for a worker (none runs here): generated actions get 202."""
    from app import create_app

    return create_app(settings.model_copy(update={"action_wait_seconds": 0}))


@pytest.fixture
def client(app):
    """A client logged in as an administrator (the reads need a session; the description itself does not)."""
    return accounts.client(app=app)


@pytest.fixture
def auth(app, push_headers) -> dict[str, dict[str, str]]:
    """The headers (AUTH, the CSRF token, a push source's bearer token) and cookies of an administrator's session,
    for schemathesis' requests."""
    c = accounts.client(app=app)
    cookies = {name: c.get_cookie(name).value for name in ("gridwatch_session", "_csrf_token")}
    headers = {**AUTH, **push_headers("push-test"), "X-CSRFToken": cookies["_csrf_token"]}
    check = app.server.test_client()
    for name, value in cookies.items():
        check.set_cookie(name, value)
    assert check.get("/api/v1/summary", headers=headers).status_code == 200  # they do log in
    return {"headers": headers, "cookies": cookies}


def fetch_spec(client) -> dict:
    """The served description, asked for without any login: it needs none."""
    resp = client.get(openapi.SPEC_PATH)
    assert resp.status_code == 200 and resp.mimetype == "application/json", resp.data[:300]
    return orjson.loads(resp.data)


def test_the_description_is_valid_openapi_and_describes_every_route(app, client):
    spec = fetch_spec(app.server.test_client())  # nobody logged in
    schemathesis.openapi.from_dict(spec).validate()  # against the OpenAPI 3.1 meta-schema
    rules, described = api_rules(app), spec_operations(spec)
    assert rules - described == set(), "routes missing from dashboard/openapi.py"
    assert described - rules == set(), "operations in dashboard/openapi.py with no route"
    for path, item in spec["paths"].items():
        for method, op in item.items():
            ok = "200" if method == "get" or path == openapi.ACTION_PATH else "207"
            assert op.get("operationId") and op.get("responses", {}).get(ok), path
    # reads need the session cookie, pushes a bearer token, the description itself nothing
    assert spec["security"] == [{"cookieAuth": []}]
    assert spec["components"]["securitySchemes"]["cookieAuth"]["name"] == "gridwatch_session"
    assert spec["paths"][openapi.SPEC_PATH]["get"]["security"] == []
    for path in ("/api/v1/ingest/cases", "/api/v1/ingest/sensors"):
        op = spec["paths"][path]["post"]
        assert op["security"] == [{"bearerAuth": []}]
        assert {"200", "207", "422", "400", "401", "403", "413", "415"} <= set(op["responses"])


def test_each_route_takes_exactly_the_parameters_described(client):
    """Every GET route names the parameters it takes when given an unknown one: the same as the description's."""
    spec = fetch_spec(client)
    described = openapi.routes()
    assert set(described) == {p for p, item in spec["paths"].items() if "get" in item}
    params = spec["components"]["parameters"]
    for path, names in described.items():
        op = spec["paths"][path]["get"]
        in_spec = [params[ref["$ref"].rsplit("/", 1)[1]]["name"] for ref in op["parameters"] if "$ref" in ref]
        assert sorted(in_spec) == sorted(names), path
        url = path.replace("{case_id}", "1").replace("{code}", "440311")
        body = orjson.loads(client.get(f"{url}?zz_unknown=1", headers=AUTH).data)
        assert body.get("parameter") == "zz_unknown", (path, body)
        taken = body["error"].split("this route takes: ", 1)[1]
        assert sorted(taken.split(", ")) == sorted(names) if names else taken == "none", (path, taken)


def test_enumerated_values_are_accepted(client, city):
    """Each value the description enumerates (statuses, grades, levels, periods, categories, departments …) is one
    the API takes: no value it would refuse is advertised."""
    spec = fetch_spec(client)
    params = spec["components"]["parameters"]
    probes = {"area": "/api/v1/summary", "level": "/api/v1/areas", "status": "/api/v1/cases",
              "grade": "/api/v1/cases", "category": "/api/v1/cases", "dept": "/api/v1/cases", "state": "/api/v1/sla",
              "period": "/api/v1/rankings"}
    for name, route in probes.items():
        schema = params[name]["schema"]
        values = (schema.get("items") or schema).get("enum")
        if name == "area":
            values = [a.code for a in city.geography.areas("street")[:2]] + [city.geography.district.code]
        assert values, name
        for value in values:
            extra = "&since=2026-11-01&until=2026-11-02" if value == "custom" else ""
            resp = client.get(f"{route}?{name}={quote(str(value))}{extra}", headers=AUTH)
            assert resp.status_code == 200, (name, value, resp.data[:300])


@pytest.mark.parametrize(("url", "parameter"), [
    # times at datetime's limits: moving them across zones or by a period overflowed (500 before)
    ("/api/v1/cases?since=0001-01-01", "since"),
    ("/api/v1/cases.csv?until=0001-01-01", "until"),
    ("/api/v1/cases?since=9999-12-31T23:59:59-23:59", "since"),
    ("/api/v1/kpis?since=0001-01-01T08:00%2B08:00&until=0001-01-03", "since"),
    ("/api/v1/kpis?since=9999-12-30&until=9999-12-31", "since"),
    ("/api/v1/rankings?date=0001-01-01", "date"),
    ("/api/v1/rankings?period=month&date=9999-12-31", "date"),
    ("/api/v1/rankings?period=custom&since=0001-01-01&until=0001-01-03", "since"),
    # a cursor holding an id past the SQL integer (500 before)
    (f"/api/v1/cases?cursor={queries.encode_cursor(10 ** 30)}", "cursor"),
])
def test_edges_the_generated_requests_rarely_reach_are_refused_not_failed(client, url, parameter):
    resp = client.get(url, headers=AUTH)
    assert resp.status_code == 400, (url, resp.status_code, resp.data[:300])
    assert orjson.loads(resp.data)["parameter"] == parameter


@pytest.mark.parametrize("record", [
    {"occurred_at": "0001-01-01T00:00:00"}, {"occurred_at": "9999-12-31T23:59:59-23:59"},
    {"due_at": "0001-01-01T00:00:00"}, {"accept_due_at": "9999-12-31T23:59:59-23:59"},  # 500 before: overflow
    {"lon": 0.0, "lat": -90.0}, {"lon": 0.0, "lat": 89.99999999999999},  # 500 before with crs=gcj02: math domain
])
def test_push_edges_are_rejected_records_not_server_errors(client, city, record, push_headers):
    base = {"external_id": "edge", "event": "report", "occurred_at": "2026-11-20T08:00:00+08:00",
            "category": next(iter(city.categories)), "title": "边界"}
    for crs in ("gcj02", "bd09"):
        resp = client.post(f"/api/v1/ingest/cases?crs={crs}", data=orjson.dumps({**base, **record}),
                           content_type="application/json", headers={**AUTH, **push_headers()})
        assert resp.status_code in (200, 422), (record, resp.status_code, resp.data[:300])


# --------------------------------------------------------------------------- schemathesis


def _description() -> dict:
    """The description for the configured city and default settings, for collecting one test per operation (the
    served one is the same: test_the_served_description_is_the_built_one)."""
    from config.city import get_city
    from config.settings import Settings

    return openapi.spec(get_city(), Settings())


schema = schemathesis.openapi.from_dict(_description())


def test_the_served_description_is_the_built_one(client):
    assert fetch_spec(client) == orjson.loads(orjson.dumps(_description()))


@pytest.fixture
def seeded(settings, r, engine, city):
    """A small stored dataset: cases in every status across several streets, an active sensor alarm
    (tests/test_api.py's)."""
    events, readings, _df, _alarms = build_dataset(city)
    apply(city, settings, engine, r, cases=events, sensors=readings)


@schema.parametrize()
@hypothesis.settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
def test_no_server_errors(case, app, seeded, auth):
    """Generated requests, valid and invalid, to every operation of the app (WSGI, in-process), as a logged-in
    administrator: never a 5xx, and every answer is one the description gives, in its content type and shape."""
    case.call_and_validate(app=app.server, headers=auth["headers"], cookies=auth["cookies"], checks=CHECKS)
