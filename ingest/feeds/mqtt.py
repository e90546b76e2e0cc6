"""MQTT feed: subscribe to sensor readings on an MQTT broker and publish them to the sensor stream.

Topic layout::

    <root>/<district>/<device_type>/<device_id>        e.g.  gridwatch/440311/smoke/smk-0001

``root`` is ``MQTT_TOPIC_ROOT`` (default ``gridwatch``; it may have several levels), ``district`` the city's
6-digit county code, ``device_type`` a sensor type code of ``config/city/sensors.yaml`` and ``device_id`` the
device's id (letters, digits and ``_ . : @ -``, up to 64 characters). The feed subscribes with QoS 1 to
``<root>/<district>/#``: everything under the district, so a topic with missing or extra levels is dead-lettered
(with the reason) instead of being silently ignored by the broker.

Payload: a JSON object, or a JSON array of such objects (gateways batching readings)::

    {"token": "…", "value": 3.2, "ts": "2026-11-22T09:31:00+08:00", "battery": 87, "lon": 113.93, "lat": 22.76,
     "crs": "gcj02"}

- ``token`` is required in every object: the token ``FEED_TOKENS`` holds for the source ``mqtt`` (one token for
  the fleet; a JSON field rather than an MQTT v5 user property, so MQTT 3.1.1 devices and gateways can send it).
  A reading without it or with another is refused (ingest/feedauth.py decides): not published, counted
  (``feed_status.mqtt.refused`` in /healthz) and dead-lettered with the reason ``token refused`` and the reading
  *without* its ``token`` field. Unlike HTTP push, where a refusal is only counted and logged, MQTT dead-letters it:
  only clients the broker admits can publish here, so a wrong token is a device fleet's fault an operator must see
  and fix, not internet junk. The token is never published, logged or dead-lettered: every dead letter of this feed
  holds its reading without the field, or the raw payload with any configured token's value replaced.
- ``value`` (number) is required. ``ts`` is optional (ISO 8601, or Unix seconds/milliseconds; without a zone it is
  Asia/Shanghai; missing means the time the feed received it). ``battery`` (0..100) is optional.
- ``lon``/``lat`` are optional (both or neither); ``crs`` names their system (``wgs84`` default, ``gcj02``,
  ``bd09``) and they are converted to WGS84 here. Without a location, lon/lat/grid come from the device registry
  ``config/city/devices.yaml`` (optional); a device in neither is accepted as unlocated.
- The device type and id come from the topic. A payload may repeat them as ``type``/``device_id``; one that
  contradicts the topic (or the registry's type for the device) is rejected. Any other field is rejected.
- A retained message without its own ``ts`` is skipped: it would replay an old value as if it were new.

The feed's own connection uses ``MQTT_USERNAME`` / ``MQTT_PASSWORD`` (or the URL's); a broker that refuses them is
logged as an error naming those settings, counted (``refused`` under the broker's address) and shown failing in
/healthz, and the feed keeps retrying with backoff (1–60 s) until they are fixed.

Every message is validated like every other feed (:func:`core.records.parse_sensor_reading` against the city's
catalog). What cannot be used — not JSON, not an object or array, wrong types, NaN/infinite numbers, an unknown
device type, a topic outside the layout, more than ``MAX_PAYLOAD_BYTES`` — is dead-lettered with the payload (an
object without its token field, else the raw bytes with any token's value replaced) and a reason that starts with
the topic. Bad input never stops the feed.

Silence (a device that stops reporting) is not detected here: the scheduler watches the live state and reports
a device offline after ``DEVICE_OFFLINE_FACTOR`` × the type's ``heartbeat_s`` (sensors.yaml) without a reading.

Threads: paho's network thread only queues messages (``on_message`` does no work); a publisher thread decodes,
validates and publishes what arrived every 100 ms or 500 messages, whichever comes first, as pipelined XADDs.
Messages are acknowledged by paho when received, so a crash can lose what is queued but not yet published
(at most ~100 ms of traffic). Manual acknowledgement is not used on purpose: the broker would then hold back
everything beyond its in-flight window (Mosquitto: 20 messages) until the batch is published.

Throughput (one process, local Mosquitto): ~17k messages/s decoded per thread with GCJ-02 conversion (~28k for
WGS84); ~4.5k single-reading messages/s sustained end to end without loss. Faster bursts overflow the broker's
per-client queue, and Mosquitto then drops QoS 1 messages (``max_queued_messages``, default 1000: raise it for
bursty fleets), so high-rate gateways should send arrays (up to 500 readings a message).

Run: ``python -m ingest mqtt [--url URL] [--topic-root ROOT]`` (Ctrl-C / SIGTERM stop it cleanly), or
:func:`run` in a thread.
"""

from __future__ import annotations

import logging
import math
import queue
import re
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson
import redis
import yaml

from config.settings import Settings
from core.coords import crs_name, to_wgs84
from core.records import LIMITS, RecordError, parse_sensor_reading
from ingest import feedauth
from ingest.feedhealth import FeedHealth
from store.streams import Producer, dead_letter

log = logging.getLogger(__name__)

SOURCE = "mqtt"
FEED = "mqtt"
REGISTRY_FILE = "devices.yaml"
BATCH_SECONDS = 0.1  # publish what arrived at least this often ...
BATCH_MAX = 500  # ... or as soon as this many messages are waiting
HEALTH_EVERY = 30.0  # seconds between FeedHealth.ok() while connected
LOG_EVERY = 60.0  # seconds between count log lines
PAYLOAD_FIELDS = ("value", "ts", "battery", "lon", "lat", "crs", "device_id", "type", "token")
TOKEN_FIELD = "token"
# CONNACK codes of a broker refusing the client's credentials (paho maps MQTT 3.1.1's 4 and 5 to these)
CREDENTIAL_CODES = frozenset({134, 135})  # bad user name or password, not authorized
NO_TOKEN = (f"FEED_TOKENS holds no token for source {SOURCE!r}, so every reading would be refused: set FEED_TOKENS, "
            f"e.g. '{{\"{SOURCE}\": \"<token>\"}}', and give the devices that token in each reading's \"token\" field")
_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$")  # the record's id pattern minus MQTT's / + #


# --------------------------------------------------------------------------- broker address


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __str__(self) -> str:  # for logs and health: never the credentials
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def broker_address(url: str, settings: Settings | None = None) -> BrokerAddress:
    """Parse ``mqtt://[user[:password]@]host[:port]`` (or ``mqtts://`` for TLS). ``MQTT_USERNAME`` and
    ``MQTT_PASSWORD`` override the URL's credentials. ValueError says what is wrong."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme in ("mqtt", "tcp"):
        tls, default_port = False, 1883
    elif scheme in ("mqtts", "ssl", "tls"):
        tls, default_port = True, 8883
    else:
        raise ValueError(f"MQTT URL {url!r}: unsupported scheme {parts.scheme!r}; use mqtt://host:1883 or mqtts://host:8883")
    if not parts.hostname:
        raise ValueError(f"MQTT URL {url!r}: no host; use e.g. mqtt://127.0.0.1:1883")
    try:
        port = parts.port or default_port
    except ValueError as exc:
        raise ValueError(f"MQTT URL: bad port ({exc})") from None
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    if settings is not None:
        username = settings.mqtt_username or username
        password = settings.mqtt_password or password
    return BrokerAddress(parts.hostname, port, tls, username, password)


def topic_root(value: str) -> str:
    """A topic root without leading/trailing slashes; ValueError if it is empty or holds wildcards."""
    root = (value or "").strip().strip("/")
    if not root or any(c in root for c in "+#\x00") or "//" in root:
        raise ValueError(f"MQTT topic root {value!r}: use one or more non-empty levels without + or # (e.g. gridwatch)")
    return root


# --------------------------------------------------------------------------- device registry


@dataclass(frozen=True)
class RegisteredDevice:
    id: str
    type: str
    grid_code: str | None = None
    lon: float | None = None
    lat: float | None = None


def load_registry(path: Path | str, city) -> dict[str, RegisteredDevice]:
    """The device registry (devices.yaml) checked against the city; {} if the file does not exist.

    Raises :class:`config.city.CityConfigError` listing every problem with the file, the entry and the fix.
    """
    from config.city import CityConfigError
    from core.geography import usable_point

    path = Path(path)
    if not path.is_file():
        return {}
    shown = path.name if path.parent == Path(city.city_dir) else str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise CityConfigError([f"{shown}: cannot be read as YAML ({exc})"]) from None
    entries = data.get("devices") if isinstance(data, dict) else None
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise CityConfigError([f"{shown}: 'devices' must be a list of entries (id, type, grid_code, lon, lat)"])
    geo = city.geography
    types = city.sensor_types
    problems: list[str] = []
    out: dict[str, RegisteredDevice] = {}
    seen: set[str] = set()
    for i, e in enumerate(entries):
        label = f"{shown}: device #{i + 1}"
        if not isinstance(e, dict):
            problems.append(f"{label}: expected a mapping with id, type, grid_code, lon, lat")
            continue
        dev_id = str(e.get("id", "")).strip()
        label = f"{shown}: device #{i + 1} ({dev_id or 'no id'})"
        bad = len(problems)
        unknown = sorted(set(e) - {"id", "type", "grid_code", "lon", "lat", "name"})
        if unknown:
            problems.append(f"{label}: unknown field(s) {', '.join(unknown)} — use id, type, grid_code, lon, lat, name")
        if not _DEVICE_ID.match(dev_id) or len(dev_id) > LIMITS["device_id"]:
            problems.append(f"{label}: id must be 1-64 letters, digits or _ . : @ - (starting with a letter or digit)")
        elif dev_id in seen:
            problems.append(f"{label}: duplicate id — give each device its own id")
        seen.add(dev_id)
        dtype = e.get("type")
        if dtype not in types:
            problems.append(f"{label}: type {dtype!r} is not in sensors.yaml — use one of: {', '.join(sorted(types))}")
        grid = e.get("grid_code")
        grid = str(grid) if grid is not None else None
        if grid is not None and (grid not in geo or geo.area(grid).level != "grid"):
            problems.append(f"{label}: grid_code {grid!r} is not a grid of grids.geojson — use a 15-digit grid code")
        lon, lat = e.get("lon"), e.get("lat")
        if (lon is None) != (lat is None):
            problems.append(f"{label}: give both lon and lat, or neither")
        elif lon is not None:
            if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (lon, lat)) \
                    or not usable_point(lon, lat):
                problems.append(f"{label}: lon/lat ({lon!r}, {lat!r}) are not a usable WGS84 point (numbers, lon first)")
            elif grid is None:
                grid = geo.locate(float(lon), float(lat))
                if grid is None:
                    problems.append(f"{label}: lon/lat ({lon}, {lat}) are outside the district — fix the point or give grid_code")
        if len(problems) == bad:
            out[dev_id] = RegisteredDevice(dev_id, dtype, grid, None if lon is None else float(lon),
                                           None if lat is None else float(lat))
    if problems:
        raise CityConfigError(problems)
    return out


# --------------------------------------------------------------------------- decoding


@dataclass
class Reject:
    raw: bytes
    reason: str
    index: int | None = None  # position within a batch (array) payload


@dataclass
class Decoded:
    records: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    skipped: int = 0  # retained messages without their own time
    refused: Counter = field(default_factory=Counter)  # readings refused for their token, by reason (feedauth)


def _json_type(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)


@lru_cache(maxsize=65536)
def _converted(lon: float, lat: float, crs: str) -> tuple[float, float]:
    """WGS84 of a GCJ-02/BD-09 point, rounded to 1e-7 degrees. Cached: a fixed device repeats its position,
    and the iterative inverse is half the cost of decoding a message."""
    wlon, wlat = to_wgs84(lon, lat, crs)
    return round(wlon, 7), round(wlat, 7)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _text(value: Any) -> str | None:
    """A payload's token as given: a string, else nothing (a number or object is no token)."""
    return value if isinstance(value, str) else None


def _without_token(item: Any) -> bytes:
    """What is dead-lettered of a payload object: the object without its token field."""
    if isinstance(item, dict):
        item = {k: v for k, v in item.items() if k != TOKEN_FIELD}
    return orjson.dumps(item)


class Decoder:
    """Turns (topic, payload) into canonical sensor readings and rejects. Pure apart from the clock; thread-safe."""

    def __init__(self, city, settings: Settings, registry: Mapping[str, RegisteredDevice] | None = None,
                 root: str | None = None):
        from config.city import catalog_of

        self.catalog = catalog_of(city)
        self.types = frozenset(city.sensor_types)
        self.district = city.county_code
        self.root = topic_root(root or settings.mqtt_topic_root)
        self.root_levels = self.root.split("/")
        self.registry = dict(registry or {})
        self.max_bytes = settings.max_payload_bytes
        self.max_items = settings.max_push_items
        self.settings = settings

    @property
    def layout(self) -> str:
        return f"{self.root}/{self.district}/<device_type>/<device_id>"

    @property
    def subscription(self) -> str:
        return f"{self.root}/{self.district}/#"

    def parse_topic(self, topic: str) -> tuple[str, str]:
        """(device_type, device_id) from a topic, or ValueError saying why it does not fit the layout."""
        levels = topic.split("/")
        n = len(self.root_levels)
        if levels[:n] != self.root_levels or len(levels) != n + 3:
            raise ValueError(f"topic does not match the layout {self.layout} ({len(levels)} levels)")
        district, dtype, device = levels[n:]
        if district != self.district:
            raise ValueError(f"district {district!r} in the topic is not this city's ({self.district})")
        if dtype not in self.types:
            raise ValueError(f"unknown device type {dtype!r} in the topic; use one of: {', '.join(sorted(self.types))}")
        if not _DEVICE_ID.match(device) or len(device) > LIMITS["device_id"]:
            raise ValueError(f"device id {device[:80]!r} in the topic is not an id "
                             "(1-64 letters, digits or _ . : @ -, starting with a letter or digit)")
        return dtype, device

    def decode(self, topic: str, payload: bytes, received: datetime | None = None, retained: bool = False) -> Decoded:
        out = self._decode(topic, payload, received, retained)
        for rej in out.rejects:  # a payload that could not be read as objects may still hold a token
            rej.raw = feedauth.scrub(rej.raw, self.settings)
        return out

    def _decode(self, topic: str, payload: bytes, received: datetime | None, retained: bool) -> Decoded:
        out = Decoded()
        payload = bytes(payload)
        where = f"mqtt topic {topic[:200]!r}"
        try:
            dtype, device = self.parse_topic(topic)
        except ValueError as exc:
            out.rejects.append(Reject(payload, f"{where}: {exc}"))
            return out
        if len(payload) > self.max_bytes:
            out.rejects.append(Reject(payload, f"{where}: payload of {len(payload)} bytes exceeds the limit of "
                                               f"{self.max_bytes} bytes (MAX_PAYLOAD_BYTES; send smaller batches)"))
            return out
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            out.rejects.append(Reject(payload, f"{where}: payload is not valid JSON ({exc})"))
            return out
        if isinstance(data, list):
            if not data:
                out.rejects.append(Reject(payload, f"{where}: empty batch (send an object or a non-empty array)"))
                return out
            if len(data) > self.max_items:
                out.rejects.append(Reject(payload, f"{where}: {len(data)} readings in one message exceed the limit "
                                                   f"of {self.max_items} (MAX_PUSH_ITEMS)"))
                return out
            items, indexed = data, True
        elif isinstance(data, dict):
            items, indexed = [data], False
        else:
            out.rejects.append(Reject(payload, f"{where}: payload must be a JSON object (or an array of objects), "
                                               f"got a JSON {_json_type(data)}"))
            return out
        received_iso = (received or datetime.now(UTC)).isoformat()
        for i, item in enumerate(items):
            label = f"{where} item {i}" if indexed else where
            if isinstance(item, dict):
                refused = feedauth.check(self.settings, SOURCE, _text(item.get(TOKEN_FIELD)))
                if refused is not None:
                    out.refused[refused] += 1
                    out.rejects.append(Reject(_without_token(item), f"{label}: token refused ({refused}); "
                                              f"{self.token_fix(refused)}", i if indexed else None))
                    continue
            if retained and isinstance(item, dict) and item.get("ts") is None:
                out.skipped += 1
                continue
            rec, problems = self.reading(item, dtype, device, received_iso)
            if rec is not None:
                out.records.append(rec)
            else:
                out.rejects.append(Reject(_without_token(item), f"{label}: {'; '.join(problems)}", i if indexed else None))
        return out

    @staticmethod
    def token_fix(reason: str) -> str:
        """What to do about a refused reading, by the reason."""
        if reason == feedauth.SOURCE_UNCONFIGURED:
            return (f"FEED_TOKENS holds no token for source {SOURCE!r}: add one and give it to the devices "
                    f"(the {TOKEN_FIELD!r} field of each reading)")
        return (f"each reading's {TOKEN_FIELD!r} field must be the token FEED_TOKENS holds for source {SOURCE!r} "
                "(fix the device or gateway configuration)")

    def reading(self, item: Any, dtype: str, device: str, received_iso: str) -> tuple[dict | None, list[str]]:
        """The canonical reading of one payload object, validated; or (None, problems)."""
        if not isinstance(item, dict):
            return None, [f"record: expected a JSON object, got a JSON {_json_type(item)}"]
        problems = [f"{k}: unknown field (a payload holds {', '.join(PAYLOAD_FIELDS[:6])})"
                    for k in item if k not in PAYLOAD_FIELDS]
        if "device_id" in item and str(item["device_id"]) != device:
            problems.append(f"device_id: the payload says {str(item['device_id'])[:80]!r} but the topic says {device!r}")
        if "type" in item and item["type"] != dtype:
            problems.append(f"type: the payload says {str(item['type'])[:40]!r} but the topic says {dtype!r}")
        known = self.registry.get(device)
        if known is not None and known.type != dtype:
            problems.append(f"type: device {device} is registered as {known.type!r} in devices.yaml, "
                            f"not {dtype!r} (fix the topic or the registry)")
        ts = item.get("ts")
        rec: dict[str, Any] = {"source": SOURCE, "device_id": device, "type": dtype, "kind": "reading",
                               "value": item.get("value"), "ts": received_iso if ts is None else ts}
        if item.get("battery") is not None:
            rec["battery"] = item["battery"]
        lon, lat = item.get("lon"), item.get("lat")
        if lon is None and lat is None:
            if known is not None:
                if known.lon is not None:
                    rec["lon"], rec["lat"] = known.lon, known.lat
                if known.grid_code:
                    rec["grid_code"] = known.grid_code
        else:
            crs = "wgs84"
            if item.get("crs") is not None:
                try:
                    crs = crs_name(item["crs"])
                except ValueError as exc:
                    problems.append(f"crs: {exc}")
            if crs != "wgs84" and _number(lon) and _number(lat):
                lon, lat = _converted(float(lon), float(lat), crs)
            rec["lon"], rec["lat"] = lon, lat
        if problems:
            return None, problems
        try:
            parse_sensor_reading(rec, self.catalog)
        except RecordError as exc:
            return None, exc.problems
        return rec, []


# --------------------------------------------------------------------------- the feed


@dataclass
class Counts:
    messages: int = 0
    readings: int = 0
    dead: int = 0
    skipped: int = 0
    token_refused: int = 0  # readings refused for a missing or wrong token (also among ``dead``)
    connects: int = 0
    disconnects: int = 0
    credentials_refused: int = 0  # connections the broker refused for MQTT_USERNAME / MQTT_PASSWORD

    def snapshot(self) -> dict[str, int]:
        return dict(self.__dict__)


_STOP = object()


class MqttFeed:
    """One MQTT subscription publishing to the sensor stream. ``start()``, then ``stop()``; see :func:`run`."""

    def __init__(self, settings: Settings, r: redis.Redis, *, city=None, url: str | None = None,
                 topic_root: str | None = None, registry: Mapping[str, RegisteredDevice] | None = None,
                 client_id: str | None = None):
        import paho.mqtt.client as mqtt

        if city is None:
            from config.city import load_city

            city = load_city(settings.city_dir)
        url = url or settings.mqtt_url
        if not url:
            raise ValueError("no MQTT broker: set MQTT_URL (e.g. mqtt://127.0.0.1:1883) or pass --url")
        self.settings = settings
        self.broker = broker_address(url, settings)
        if registry is None:
            registry = load_registry(Path(settings.city_dir) / REGISTRY_FILE, city)
        self.decoder = Decoder(city, settings, registry, topic_root or settings.mqtt_topic_root)
        self.subscription = self.decoder.subscription
        self.producer = Producer(r, settings, source=SOURCE)
        self.health = FeedHealth(r, settings, FEED)
        self.counts = Counts()
        self.connected = threading.Event()
        self.subscribed = threading.Event()  # set when the broker granted the subscription (again after a reconnect)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._stopping = False
        self._lock = threading.Lock()
        self._publisher: threading.Thread | None = None
        self._refusals_logged_at: float | None = None
        if settings.feed_token(SOURCE) is None:
            log.error("mqtt: %s", NO_TOKEN)

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"gridwatch-{uuid.uuid4().hex[:12]}",
                             clean_session=True, protocol=mqtt.MQTTv311)
        if self.broker.username is not None:
            client.username_pw_set(self.broker.username, self.broker.password)
        if self.broker.tls:
            client.tls_set()
        client.reconnect_delay_set(1, 60)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self.client = client

    # ---- paho callbacks (network thread: keep them short) ----------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure and reason_code.value in CREDENTIAL_CODES:
            self._credentials_refused(str(reason_code))
            return
        if reason_code.is_failure:
            log.warning("mqtt: %s refused the connection: %s", self.broker, reason_code)
            self._failed(f"{self.broker} refused the connection: {reason_code}")
            return
        self.connected.set()
        self.counts.connects += 1
        log.info("mqtt: connected to %s; subscribing to %s", self.broker, self.subscription)
        client.subscribe(self.subscription, qos=1)

    def _on_connect_fail(self, client, userdata) -> None:
        log.warning("mqtt: cannot connect to %s; retrying with backoff (up to 60 s)", self.broker)
        self._failed(f"cannot connect to {self.broker}")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        self.subscribed.clear()
        if self._stopping:
            log.info("mqtt: disconnected from %s", self.broker)
            return
        if not was_connected:  # the end of an attempt the broker refused: _on_connect reported it
            log.debug("mqtt: %s closed a refused connection (%s)", self.broker, reason_code)
            return
        self.counts.disconnects += 1
        log.warning("mqtt: lost the connection to %s (%s); reconnecting with backoff", self.broker, reason_code)
        self._failed(f"disconnected from {self.broker}: {reason_code}")

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        refused = [str(rc) for rc in reason_codes if rc.is_failure]
        if refused:
            log.error("mqtt: the broker refused the subscription to %s: %s", self.subscription, ", ".join(refused))
            self._failed(f"subscription to {self.subscription} refused: {', '.join(refused)}")
            return
        self.subscribed.set()
        self._ok()

    def _on_message(self, client, userdata, msg) -> None:
        self._queue.put((msg, datetime.now(UTC)))

    def _credentials_refused(self, reason: str) -> None:
        """The broker refused MQTT_USERNAME / MQTT_PASSWORD: say which settings to fix, count it; paho retries."""
        self.counts.credentials_refused += 1
        who = f"user {self.broker.username!r}" if self.broker.username else "no user name"
        log.error("mqtt: %s refused the credentials (%s, %s): set MQTT_USERNAME and MQTT_PASSWORD (or user:password "
                  "in MQTT_URL) to an account the broker accepts; retrying with backoff (up to 60 s)",
                  self.broker, who, reason)
        try:
            feedauth.count_refused(self.producer.r, self.settings, FEED, str(self.broker), feedauth.CREDENTIALS_REFUSED)
        except redis.RedisError as exc:
            log.warning("mqtt: cannot count a refusal: %s", exc)
        self._failed(f"{self.broker} refused the credentials ({who}, {reason}): fix MQTT_USERNAME / MQTT_PASSWORD")

    # ---- health ---------------------------------------------------------------------------------
    def _ok(self) -> None:
        try:
            self.health.ok(f"subscribed to {self.subscription} on {self.broker}", **self.counts.snapshot())
        except redis.RedisError as exc:
            log.warning("mqtt: cannot record feed health: %s", exc)

    def _failed(self, error: str) -> None:
        try:
            self.health.failed(error)
        except redis.RedisError as exc:
            log.warning("mqtt: cannot record feed health: %s", exc)

    # ---- publisher thread -------------------------------------------------------------------------
    def _collect(self) -> tuple[list, bool]:
        """Wait for messages; return (batch, stop) once BATCH_SECONDS passed since the first or BATCH_MAX are in."""
        try:
            first = self._queue.get(timeout=0.5)
        except queue.Empty:
            return [], False
        if first is _STOP:
            return [], True
        batch = [first]
        deadline = time.monotonic() + BATCH_SECONDS
        while len(batch) < BATCH_MAX:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                item = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _publish_loop(self) -> None:
        while True:
            batch, stop = self._collect()
            if batch:
                try:
                    self.handle(batch)
                except Exception:  # never let one batch end the feed
                    log.exception("mqtt: could not handle a batch of %d messages", len(batch))
            if stop:
                # drain what the network thread queued before it stopped
                rest = []
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is not _STOP:
                        rest.append(item)
                if rest:
                    self.handle(rest)
                return

    def handle(self, batch: list) -> None:
        """Decode a batch of (message, received) and publish the readings and dead letters."""
        records: list[dict] = []
        rejects: list[Reject] = []
        refused: Counter = Counter()
        refused_topic = None
        skipped = 0
        for msg, received in batch:
            try:
                topic = msg.topic
            except UnicodeDecodeError:
                rejects.append(Reject(feedauth.scrub(bytes(msg.payload), self.settings), "mqtt topic is not valid UTF-8"))
                continue
            d = self.decoder.decode(topic, msg.payload, received, bool(msg.retain))
            records.extend(d.records)
            rejects.extend(d.rejects)
            skipped += d.skipped
            if d.refused:
                refused.update(d.refused)
                refused_topic = refused_topic or topic
        self._write(records, rejects, refused)
        with self._lock:
            self.counts.messages += len(batch)
            self.counts.readings += len(records)
            self.counts.dead += len(rejects)
            self.counts.skipped += skipped
            self.counts.token_refused += sum(refused.values())
        if refused:
            self._log_refusals(refused, refused_topic)

    def _log_refusals(self, refused: Counter, topic: str) -> None:
        """Log token refusals: the first at once, then at most one line a minute (the run's summary counts them
        all), so a fleet with a wrong token cannot flood the log. Reasons and a topic, never a token."""
        now = time.monotonic()
        if self._refusals_logged_at is not None and now - self._refusals_logged_at < LOG_EVERY:
            return
        self._refusals_logged_at = now
        log.warning("mqtt: refused %d reading(s) for their token (%s; e.g. topic %r) and dead-lettered them; %s",
                    sum(refused.values()), ", ".join(f"{reason}: {n}" for reason, n in sorted(refused.items())),
                    topic[:200], self.decoder.token_fix(next(iter(refused))))

    def _write(self, records: list[dict], rejects: list[Reject], refused: Counter | None = None) -> None:
        """Publish; on a Redis error retry with backoff (at-least-once: a retried batch may repeat readings)."""
        delay = 0.5
        while True:
            try:
                if records:
                    self.producer.sensors(records)
                if rejects or refused:
                    pipe = self.producer.r.pipeline(transaction=False)
                    for rej in rejects:
                        dead_letter(pipe, self.producer.names, self.settings, rej.raw, rej.reason,
                                    stream=self.producer.names.sensors, source=SOURCE, index=rej.index)
                    for reason, n in (refused or {}).items():
                        feedauth.count_refused(pipe, self.settings, FEED, SOURCE, reason, n)
                    pipe.execute()
                return
            except redis.RedisError as exc:
                if self._stopping and delay > 4:
                    log.error("mqtt: Redis unavailable while stopping; %d readings and %d dead letters lost: %s",
                              len(records), len(rejects), exc)
                    return
                log.warning("mqtt: cannot publish to Redis (%s); retrying in %.1f s", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)

    # ---- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        self._stopping = False
        self._publisher = threading.Thread(target=self._publish_loop, name="mqtt-publisher", daemon=True)
        self._publisher.start()
        log.info("mqtt: connecting to %s (topics %s)", self.broker, self.decoder.layout)
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=30)
        self.client.loop_start()  # loop_forever(retry_first_connection=True) in paho's thread: reconnects itself

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        self.client.disconnect()
        self.client.loop_stop()
        self._queue.put(_STOP)
        if self._publisher is not None:
            self._publisher.join(timeout)
        log.info("mqtt: stopped (%s)", ", ".join(f"{k} {v}" for k, v in self.counts.snapshot().items()))


def run(settings: Settings, r: redis.Redis, stop_event: threading.Event, *, city=None, url: str | None = None,
        topic_root: str | None = None, registry: Mapping[str, RegisteredDevice] | None = None,
        ready: threading.Event | None = None, feed_out: list | None = None) -> Counts:
    """Run the feed until ``stop_event`` is set; returns the counts. Usable from a thread (tests).

    ``ready`` is set once the first subscription is granted; ``feed_out`` (a list) receives the :class:`MqttFeed`.
    """
    feed = MqttFeed(settings, r, city=city, url=url, topic_root=topic_root, registry=registry)
    if feed_out is not None:
        feed_out.append(feed)
    feed.start()
    last_log = last_health = time.monotonic()
    before = feed.counts.snapshot()
    try:
        while not stop_event.is_set():
            if ready is not None and not ready.is_set() and feed.subscribed.is_set():
                ready.set()
            stop_event.wait(0.05 if ready is not None and not ready.is_set() else 1.0)
            now = time.monotonic()
            if now - last_health >= HEALTH_EVERY:
                last_health = now
                if feed.subscribed.is_set():
                    feed._ok()
            if now - last_log >= LOG_EVERY:
                counts = feed.counts.snapshot()
                log.info("mqtt: last %.0f s: %d messages, %d readings published, %d dead-lettered (%d of them refused "
                         "for their token), %d skipped; %s", now - last_log,
                         *(counts[k] - before[k] for k in ("messages", "readings", "dead", "token_refused", "skipped")),
                         "connected" if feed.connected.is_set() else "NOT connected")
                last_log, before = now, counts
    finally:
        feed.stop()
    return feed.counts


# --------------------------------------------------------------------------- command line


def add_mqtt_arguments(parser) -> None:
    parser.add_argument("--url", default=None,
                        help="broker URL, mqtt://[user:pass@]host:1883 or mqtts://host:8883 (default: MQTT_URL); "
                             "MQTT_USERNAME / MQTT_PASSWORD override the URL's credentials")
    parser.add_argument("--topic-root", default=None,
                        help="topic root (default: MQTT_TOPIC_ROOT, 'gridwatch'); topics are "
                             "ROOT/<district>/<device_type>/<device_id>")


def main_mqtt(args) -> int:
    from config.city import CityConfigError
    from config.settings import get_settings
    from store.services import get_redis

    settings = get_settings()
    url = args.url or settings.mqtt_url
    try:
        if not url:
            raise ValueError("no MQTT broker: set MQTT_URL (e.g. mqtt://127.0.0.1:1883) or pass --url")
        broker_address(url, settings)
        topic_root(args.topic_root or settings.mqtt_topic_root)
        if settings.feed_token(SOURCE) is None:
            raise ValueError(NO_TOKEN)
    except ValueError as exc:
        log.error("mqtt: %s", exc)
        return 2
    stop = threading.Event()

    def handler(signum, _frame):
        log.info("mqtt: %s received, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    try:
        run(settings, get_redis(settings), stop, url=url, topic_root=args.topic_root)
    except (ValueError, CityConfigError) as exc:
        log.error("mqtt: %s", exc)
        return 2
    return 0
