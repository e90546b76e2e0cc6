"""What the MQTT feed takes in: the topic layout, the payload of a reading, and the device registry (devices.yaml).

:class:`Decoder` turns (topic, payload) into canonical sensor readings and rejects; the README's "MQTT sensors" has
the layout and the payload in full. Pure apart from the clock.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
import yaml

from config.city import CityConfigError, catalog_of
from config.settings import Settings
from core.coords import crs_name, to_wgs84
from core.geography import usable_point
from core.records import LIMITS, RecordError, parse_sensor_reading
from ingest import feedauth

SOURCE = "mqtt"
REGISTRY_FILE = "devices.yaml"
PAYLOAD_FIELDS = ("value", "ts", "battery", "lon", "lat", "crs", "device_id", "type", "token")
TOKEN_FIELD = "token"
_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$")  # the record's id pattern minus MQTT's / + #


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
    path = Path(path)
    if not path.is_file():
        return {}
    shown = path.name if path.parent == Path(city.city_dir) else str(path)
    problems: list[str] = []
    out: dict[str, RegisteredDevice] = {}
    seen: set[str] = set()
    for i, e in enumerate(_registry_entries(path, shown)):
        device, found = _registered(e, f"{shown}: device #{i + 1}", city, seen)
        problems += found
        if device is not None:
            out[device.id] = device
    if problems:
        raise CityConfigError(problems)
    return out


def _registry_entries(path: Path, shown: str) -> list:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise CityConfigError([f"{shown}: cannot be read as YAML ({exc})"]) from None
    entries = data.get("devices") if isinstance(data, dict) else None
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise CityConfigError([f"{shown}: 'devices' must be a list of entries (id, type, grid_code, lon, lat)"])
    return entries


def _registered(e: Any, label: str, city, seen: set[str]) -> tuple[RegisteredDevice | None, list[str]]:
    """One registry entry as a device, or the problems with it (each naming the entry and the fix)."""
    if not isinstance(e, dict):
        return None, [f"{label}: expected a mapping with id, type, grid_code, lon, lat"]
    dev_id = str(e.get("id", "")).strip()
    label = f"{label} ({dev_id or 'no id'})"
    problems = []
    unknown = sorted(set(e) - {"id", "type", "grid_code", "lon", "lat", "name"})
    if unknown:
        problems.append(f"{label}: unknown field(s) {', '.join(unknown)} — use id, type, grid_code, lon, lat, name")
    if not _DEVICE_ID.match(dev_id) or len(dev_id) > LIMITS["device_id"]:
        problems.append(f"{label}: id must be 1-64 letters, digits or _ . : @ - (starting with a letter or digit)")
    elif dev_id in seen:
        problems.append(f"{label}: duplicate id — give each device its own id")
    seen.add(dev_id)
    dtype = e.get("type")
    types = city.sensor_types
    if dtype not in types:
        problems.append(f"{label}: type {dtype!r} is not in sensors.yaml — use one of: {', '.join(sorted(types))}")
    grid = _registry_grid(e, label, city.geography, problems)
    if problems:
        return None, problems
    lon, lat = e.get("lon"), e.get("lat")
    return RegisteredDevice(dev_id, dtype, grid, None if lon is None else float(lon),
                            None if lat is None else float(lat)), []


def _registry_grid(e: dict, label: str, geo, problems: list[str]) -> str | None:
    """The entry's grid: its grid_code, else the grid its lon/lat fall in; a problem with either goes to ``problems``."""
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
    return grid


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
        known = self.registry.get(device)
        problems = _contradictions(item, dtype, device, known)
        ts = item.get("ts")
        rec: dict[str, Any] = {"source": SOURCE, "device_id": device, "type": dtype, "kind": "reading",
                               "value": item.get("value"), "ts": received_iso if ts is None else ts}
        if item.get("battery") is not None:
            rec["battery"] = item["battery"]
        problems += _locate(rec, item, known)
        if problems:
            return None, problems
        try:
            parse_sensor_reading(rec, self.catalog)
        except RecordError as exc:
            return None, exc.problems
        return rec, []


def _contradictions(item: dict, dtype: str, device: str, known: RegisteredDevice | None) -> list[str]:
    """Unknown fields, and what the payload or the registry says against the topic."""
    problems = [f"{k}: unknown field (a payload holds {', '.join(PAYLOAD_FIELDS[:6])})"
                for k in item if k not in PAYLOAD_FIELDS]
    if "device_id" in item and str(item["device_id"]) != device:
        problems.append(f"device_id: the payload says {str(item['device_id'])[:80]!r} but the topic says {device!r}")
    if "type" in item and item["type"] != dtype:
        problems.append(f"type: the payload says {str(item['type'])[:40]!r} but the topic says {dtype!r}")
    if known is not None and known.type != dtype:
        problems.append(f"type: device {device} is registered as {known.type!r} in devices.yaml, "
                        f"not {dtype!r} (fix the topic or the registry)")
    return problems


def _locate(rec: dict, item: dict, known: RegisteredDevice | None) -> list[str]:
    """Put the reading's place into ``rec``: the payload's lon/lat in WGS84, else the registry's; the problems."""
    lon, lat = item.get("lon"), item.get("lat")
    if lon is None and lat is None:
        if known is not None:
            if known.lon is not None:
                rec["lon"], rec["lat"] = known.lon, known.lat
            if known.grid_code:
                rec["grid_code"] = known.grid_code
        return []
    problems = []
    crs = "wgs84"
    if item.get("crs") is not None:
        try:
            crs = crs_name(item["crs"])
        except ValueError as exc:
            problems.append(f"crs: {exc}")
    if crs != "wgs84" and _number(lon) and _number(lat):
        lon, lat = _converted(float(lon), float(lat), crs)
    rec["lon"], rec["lat"] = lon, lat
    return problems
