"""HTTP push feed: ``POST /api/v1/ingest/cases`` and ``/api/v1/ingest/sensors`` take a JSON array (or one object).

Every item is validated with the worker's parser: good ones are published, bad ones answered with their problems and
dead-lettered (200 / 207 / 422; 400 / 413 / 415 for an unusable body, dead-lettered too). A request without the
source's token (``X-Gridwatch-Source``, ``Authorization: Bearer``; ingest/feedauth.py decides) is answered 401,
logged and counted, never read. The README ("Feeding it", "Feed credentials") has the answers in full.
"""

from __future__ import annotations

import logging
import math

import orjson
import redis
from flask import Blueprint, Response, request

from config.city import catalog_of
from core.coords import crs_name, to_wgs84
from core.records import RecordError, parse_case_event, parse_sensor_reading
from ingest import feedauth
from store.streams import Producer

log = logging.getLogger(__name__)

FEED = "push"
DEFAULT_SOURCE = "push"  # the source of a request without X-Gridwatch-Source
SOURCE_HEADER = "X-Gridwatch-Source"
AUTH_HEADER = "Authorization"
CRS_HEADER = "X-Gridwatch-CRS"  # or ?crs=: wgs84 (default), gcj02, bd09 — converted here, at the edge


def _converted(item: dict, crs: str) -> dict:
    """The item with lon/lat in WGS84; anything not a pair of numbers is left for validation to report."""
    lon, lat = item.get("lon"), item.get("lat")
    ok = all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in (lon, lat))
    if not ok:
        return item
    wlon, wlat = to_wgs84(float(lon), float(lat), crs)
    return {**item, "lon": wlon, "lat": wlat}


def _json(body: dict, status: int) -> Response:
    return Response(orjson.dumps(body), status=status, mimetype="application/json")


def _bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; None when there is none (or another scheme)."""
    scheme, _, token = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _refusal(source: str, reason: str) -> Response:
    """The 401 answer: what to send and where, never the token or which part of it was wrong."""
    shown = source[:64]
    if reason == feedauth.SOURCE_UNCONFIGURED:
        error = (f"source {shown!r} is not configured for push: FEED_TOKENS holds no token for it — name a "
                 f"configured source in the {SOURCE_HEADER} header, or ask the operator to add a token for this one")
        challenge = 'Bearer realm="gridwatch-ingest"'
    elif reason == feedauth.TOKEN_MISSING:
        error = (f"authorization required for source {shown!r}: send the header '{AUTH_HEADER}: Bearer <token>' "
                 f"with the token configured for it (the source is named by {SOURCE_HEADER}, {DEFAULT_SOURCE!r} "
                 "when absent)")
        challenge = 'Bearer realm="gridwatch-ingest"'
    else:
        error = (f"authorization refused for source {shown!r}: send the header '{AUTH_HEADER}: Bearer <token>' "
                 f"with the token configured for it (the source is named by {SOURCE_HEADER}, {DEFAULT_SOURCE!r} "
                 "when absent)")
        challenge = 'Bearer realm="gridwatch-ingest", error="invalid_token"'
    resp = _json({"error": error}, 401)
    resp.headers["WWW-Authenticate"] = challenge
    return resp


def blueprint(city_loader, redis_loader, settings_loader) -> Blueprint:
    """The push routes. The loaders are called per request (and cache what they return)."""
    bp = Blueprint("ingest_push", __name__)

    def handle(kind: str) -> Response:
        settings = settings_loader()
        r = redis_loader()
        source = request.headers.get(SOURCE_HEADER) or DEFAULT_SOURCE
        reason = feedauth.check(settings, source, _bearer(request.headers.get(AUTH_HEADER)))
        if reason is not None:
            return _refused(r, settings, kind, source, reason)
        producer = Producer(r, settings, source=FEED)
        stream = producer.names.cases if kind == "cases" else producer.names.sensors
        try:
            crs = crs_name(request.args.get("crs") or request.headers.get(CRS_HEADER) or "wgs84")
        except ValueError as exc:
            return _json({"error": f"crs: {exc}"}, 400)
        body = _read_body(producer, settings, stream, source)
        if isinstance(body, Response):
            return body
        return _publish(producer, settings, stream, source, kind, crs, body, catalog_of(city_loader()))

    @bp.post("/api/v1/ingest/cases")
    def push_cases():
        return handle("cases")

    @bp.post("/api/v1/ingest/sensors")
    def push_sensors():
        return handle("sensors")

    return bp


def _refused(r, settings, kind: str, source: str, reason: str) -> Response:
    """Counted and logged, not dead-lettered: anyone can send this, and a flood of unauthenticated junk must not fill
    the dead-letter stream (and push out the letters operators need). The body is never read."""
    log.warning("push %s refused: %s for source %r from %s", kind, reason, source[:64], request.remote_addr)
    try:
        feedauth.count_refused(r, settings, FEED, source, reason)
    except redis.RedisError as exc:
        log.warning("push: cannot count a refusal: %s", exc)
    return _refusal(source, reason)


def _read_body(producer, settings, stream: str, source: str) -> list | Response:
    """The request's records (a list), or the answer to a body that is unusable (dead-lettered)."""
    length = request.content_length
    if length is not None and length > settings.max_push_bytes:
        raw = request.stream.read(64 * 1024)
        producer.dead(raw, f"body of {length} bytes exceeds the limit of {settings.max_push_bytes} bytes "
                           "(send smaller batches)", stream=stream, source=source)
        return _json({"error": f"body too large: {length} bytes; the limit is {settings.max_push_bytes} bytes — "
                               "split it into smaller batches"}, 413)
    raw = request.get_data(cache=False)
    if len(raw) > settings.max_push_bytes:
        producer.dead(raw[: 64 * 1024], f"body exceeds the limit of {settings.max_push_bytes} bytes", stream=stream, source=source)
        return _json({"error": f"body too large; the limit is {settings.max_push_bytes} bytes"}, 413)
    ctype = (request.mimetype or "").lower()
    if ctype and ctype not in ("application/json", "text/json"):
        producer.dead(raw, f"unsupported content type {ctype!r}", stream=stream, source=source)
        return _json({"error": f"unsupported content type {ctype!r}; send application/json"}, 415)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        producer.dead(raw, f"body is not valid JSON: {exc}", stream=stream, source=source)
        return _json({"error": f"body is not valid JSON: {exc}"}, 400)
    if isinstance(body, dict):
        body = [body]
    if not isinstance(body, list):
        producer.dead(raw, "body must be a JSON array of records", stream=stream, source=source)
        return _json({"error": "body must be a JSON array of records (or one record object)"}, 400)
    if len(body) > settings.max_push_items:
        producer.dead(raw[: 64 * 1024], f"{len(body)} items exceed the limit of {settings.max_push_items}",
                      stream=stream, source=source)
        return _json({"error": f"{len(body)} items in one request; the limit is {settings.max_push_items}"}, 413)
    return body


def _item_problem(item, item_raw: bytes, source: str, settings) -> str | None:
    """Why a record is refused before validation (too big, another source's, a drill), or None."""
    if len(item_raw) > settings.max_payload_bytes:
        return f"record: {len(item_raw)} bytes exceeds the per-record limit of {settings.max_payload_bytes}"
    if isinstance(item, dict) and item["source"] != source:
        return (f"source: the record says {str(item['source'])[:40]!r} but the token is for {source!r} "
                f"({SOURCE_HEADER}); push each source's records with its own token")
    if isinstance(item, dict) and item.get("drill") not in (None, False):
        return ("drill: a pushed record cannot mark itself a drill (it would hide from every figure); "
                "replay drills with `python -m ingest replay`")
    return None


def _publish(producer, settings, stream: str, source: str, kind: str, crs: str, body: list, catalog) -> Response:
    """Validate every item, publish the good ones, dead-letter the rest; answer item by item."""
    parse = parse_case_event if kind == "cases" else parse_sensor_reading
    items, good, good_idx = [], [], []
    for i, item in enumerate(body):
        if isinstance(item, dict) and "source" not in item:
            item = {**item, "source": source}
        if crs != "wgs84" and isinstance(item, dict):
            item = _converted(item, crs)
        try:
            item_raw = orjson.dumps(item)
        except TypeError:
            item_raw = repr(item).encode()
        problem = _item_problem(item, item_raw, source, settings)
        if problem is not None:
            producer.dead(item_raw, problem, stream=stream, source=source)
            items.append({"index": i, "status": "rejected", "errors": [problem]})
            continue
        try:
            parse(item, catalog)
        except RecordError as exc:
            producer.dead(item_raw, str(exc), stream=stream, source=source)
            items.append({"index": i, "status": "rejected", "errors": exc.problems})
            continue
        good.append(item_raw)
        good_idx.append(i)
    ids = producer.cases(good) if kind == "cases" else producer.sensors(good)
    for k, i in enumerate(good_idx):
        entry_id = ids[k // producer.per_entry]  # records published together share a stream entry
        items.append({"index": i, "status": "accepted", "id": entry_id.decode() if isinstance(entry_id, bytes) else entry_id})
    items.sort(key=lambda x: x["index"])
    rejected = len(body) - len(good)
    if rejected:
        log.info("push %s from %s: %d accepted, %d rejected", kind, source, len(good), rejected)
    status = 200 if not rejected else (422 if not good else 207)
    return _json({"accepted": len(good), "rejected": rejected, "items": items}, status)
