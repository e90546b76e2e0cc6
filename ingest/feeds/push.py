"""HTTP push feed: ``POST /api/v1/ingest/cases`` and ``/api/v1/ingest/sensors`` take a JSON array.

Each item is validated with the same parser the worker uses, so the caller learns at once which
items are bad and why. Valid items are published to the stream; every invalid item is answered
with its problems and dead-lettered with the raw item — nothing a caller sends is lost.

Response (200 when every item was accepted, 207 when some were rejected, 422 when all were,
400/413/415 when the body itself is unusable — the body is dead-lettered too)::

    {"accepted": 2, "rejected": 1,
     "items": [{"index": 0, "status": "accepted", "id": "1732...-0"},
               {"index": 2, "status": "rejected", "errors": ["category: unknown category '9999' ..."]}]}
"""

from __future__ import annotations

import logging
import math

import orjson
from flask import Blueprint, Response, request

from core.coords import crs_name, to_wgs84
from core.records import RecordError, parse_case_event, parse_sensor_reading
from ingest.streams import Producer

log = logging.getLogger(__name__)

SOURCE_HEADER = "X-Gridwatch-Source"
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


def blueprint(city_loader, redis_loader, settings_loader) -> Blueprint:
    """The push routes. The loaders are called per request (and cache what they return)."""
    bp = Blueprint("ingest_push", __name__)

    def handle(kind: str) -> Response:
        from ingest.worker import catalog_of

        settings = settings_loader()
        producer = Producer(redis_loader(), settings, source="push")
        stream = producer.names.cases if kind == "cases" else producer.names.sensors
        source = (request.headers.get(SOURCE_HEADER) or "push")[:32]
        try:
            crs = crs_name(request.args.get("crs") or request.headers.get(CRS_HEADER) or "wgs84")
        except ValueError as exc:
            return _json({"error": f"crs: {exc}"}, 400)
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

        catalog = catalog_of(city_loader())
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
            if len(item_raw) > settings.max_payload_bytes:
                reason = f"record: {len(item_raw)} bytes exceeds the per-record limit of {settings.max_payload_bytes}"
                producer.dead(item_raw, reason, stream=stream, source=source)
                items.append({"index": i, "status": "rejected", "errors": [reason]})
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

    @bp.post("/api/v1/ingest/cases")
    def push_cases():
        return handle("cases")

    @bp.post("/api/v1/ingest/sensors")
    def push_sensors():
        return handle("sensors")

    return bp
