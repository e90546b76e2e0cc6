"""Alarms: what a batch of sensor readings does, given what is known of the devices.

A reading at or above its type's threshold opens a threshold alarm and reports a case; one below ``clear_below``
clears it. An ``offline`` record from the device watch opens a device-offline alarm, which the device's next reading
clears. Pure: the worker reads the known state (registry, devices in alarm or silent), calls ``evaluate`` and writes
the ``SensorBatch`` it returns.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from core.lifecycle import Action
from core.records import CaseEvent, SensorReading

Change = tuple[str, str | None, dict | None]  # (device, grid, alarm or None when cleared)


class SensorRules(Protocol):
    """What the alarm rule needs of a sensor type (config.city.SensorType)."""

    name: str
    unit: str
    threshold: float
    clear_below: float
    category: str
    grade: Any


@dataclass
class Known:
    """What the live state knows before the batch."""

    registry: Mapping[str, tuple[str, str | None]]  # device → (type, grid), set once at registration
    registering: Mapping[str, tuple[str, str | None]]  # devices this batch registers
    active: set[str]  # devices in alarm
    offline: set[str]  # devices silent

    def device(self, device: str) -> tuple[str, str | None] | None:
        return self.registry.get(device) or self.registering.get(device)


@dataclass
class SensorBatch:
    last: dict[str, dict]  # device → last reading (live state)
    alarm_changes: list[Change]
    alarm_cases: list[tuple[Any, CaseEvent]]  # a report per opened alarm, in the order of ``opened``
    new_devices: list[dict]
    opened: list[dict]
    cleared: list[tuple[str, datetime, str]]  # (device, when, alarm kind)
    registering: dict[str, tuple[str, str | None]]
    offline_changes: list[Change]  # like alarm_changes, for silent devices
    offline_opened: list[dict]
    drills: set[str] = field(default_factory=set)  # a replay's devices: their live state is kept apart
    refused: list[tuple[Any, SensorReading, str]] = field(default_factory=list)  # (item key, reading, reason)
    readings: int = 0
    alarms_opened: int = 0
    alarms_cleared: int = 0
    devices_offline: int = 0

    @property
    def needs_sql(self) -> bool:
        return bool(self.new_devices or self.opened or self.cleared or self.offline_opened)


def split(items: Sequence[tuple[Any, SensorReading]]
          ) -> tuple[dict[str, list[SensorReading]], dict[str, SensorReading], set[str]]:
    """(readings by device, the device watch's ``offline`` records by device, the drills' devices)."""
    by_device: dict[str, list[SensorReading]] = defaultdict(list)
    silent: dict[str, SensorReading] = {}
    for _, rd in items:
        if rd.kind == "offline":
            silent[rd.device_id] = rd
        else:
            by_device[rd.device_id].append(rd)
    drills = {d for d, rds in by_device.items() if rds[0].drill} | {d for d, rd in silent.items() if rd.drill}
    return by_device, silent, drills


def register(firsts: Sequence[tuple[str, SensorReading]], grids: Sequence[str | None], drills: set[str]
             ) -> tuple[list[dict], dict[str, tuple[str, str | None]]]:
    """Device rows for devices heard from the first time (by their first reading), and their (type, grid)."""
    rows, registering = [], {}
    for (device, first), grid in zip(firsts, grids, strict=True):
        rows.append({"id": device, "type": first.type, "source": first.source, "lon": first.lon, "lat": first.lat,
                     "grid_code": grid, "first_seen": first.ts, "drill": device in drills})
        registering[device] = (first.type, grid)
    return rows, registering


def alarm_case(device: str, grid: str | None, rd: SensorReading, stype: SensorRules, category_name: str
               ) -> CaseEvent:
    """The case report a threshold alarm opens."""
    return CaseEvent(
        source="sensor", external_id=f"{device}@{rd.ts.strftime('%Y%m%dT%H%M%S')}", event=Action.REPORT,
        occurred_at=rd.ts, category=stype.category, grade=stype.grade, title=f"{category_name} · {device}",
        grid_code=grid, lon=rd.lon, lat=rd.lat, note=f"{stype.name} {rd.value:g}{stype.unit} ≥ {stype.threshold:g}",
        drill=rd.drill)


def _threshold(out: SensorBatch, device: str, grid: str | None, rds: Sequence[SensorReading], stype: SensorRules,
               categories: Mapping[str, Any], in_alarm: bool) -> bool:
    """Open and clear the device's threshold alarm along its readings (in time order). Returns whether in alarm."""
    for rd in rds:
        if not in_alarm and rd.value >= stype.threshold:
            in_alarm = True
            out.alarm_changes.append((device, grid, {"type": rd.type, "since": rd.ts.isoformat(), "value": rd.value,
                                                     "device": device}))
            out.opened.append({"device_id": device, "type": rd.type, "kind": "threshold", "grid_code": grid,
                               "opened_at": rd.ts, "peak_value": rd.value, "cleared_at": None})
            out.alarm_cases.append((None, alarm_case(device, grid, rd, stype, categories[stype.category].name)))
            out.alarms_opened += 1
        elif in_alarm and rd.value < stype.clear_below:
            in_alarm = False
            out.alarm_changes.append((device, grid, None))
            out.cleared.append((device, rd.ts, "threshold"))
            out.alarms_cleared += 1
    return in_alarm


def _of_type(out: SensorBatch, items: Sequence[tuple[Any, SensorReading]], device: str, dtype: str,
             rds: list[SensorReading]) -> list[SensorReading]:
    """The readings of the device's registered type; the others are refused, with why."""
    if all(x.type == dtype for x in rds):
        return rds
    for key, rd in items:
        if rd.device_id == device and rd.type != dtype:
            out.refused.append((key, rd, f"type: device {device} is registered as {dtype!r}, not {rd.type!r}"))
    return [x for x in rds if x.type == dtype]


def _silent(out: SensorBatch, silent: Mapping[str, SensorReading], by_device: Mapping[str, Any],
            known: Known) -> None:
    """Device-offline alarms for known devices newly silent (not offline already, not heard from in this batch)."""
    for device, rd in silent.items():
        dev = known.device(device)
        if dev is None or device in known.offline or device in by_device:
            continue
        dtype, grid = dev
        out.offline_changes.append((device, grid, {"type": dtype, "since": rd.ts.isoformat(), "device": device,
                                                   "silent_s": rd.value}))
        out.offline_opened.append({"device_id": device, "type": dtype, "kind": "offline", "grid_code": grid,
                                   "opened_at": rd.ts, "peak_value": rd.value or 0.0, "cleared_at": None})
        out.devices_offline += 1


def evaluate(items: Sequence[tuple[Any, SensorReading]], by_device: dict[str, list[SensorReading]],
             silent: Mapping[str, SensorReading], known: Known, sensor_types: Mapping[str, SensorRules],
             categories: Mapping[str, Any], *, new_devices: list[dict] | None = None,
             drills: set[str] | None = None) -> SensorBatch:
    """What the batch changes: alarms opened and cleared, the cases they report, each device's last reading.

    ``items``: the batch's (key, reading) pairs, ``by_device`` and ``silent`` as ``split`` gives them (each
    device's readings are sorted by time here); ``categories``: code → category (its ``name`` titles the cases).
    """
    out = SensorBatch({}, [], [], list(new_devices or []), [], [], dict(known.registering), [], [], set(drills or ()))
    for device, rds in by_device.items():
        if len(rds) > 1:
            rds.sort(key=_ts)
        dtype, grid = known.device(device)
        rds = _of_type(out, items, device, dtype, rds)
        if not rds:
            continue
        stype = sensor_types[dtype]
        out.readings += len(rds)
        if device in known.offline:  # heard from again
            out.offline_changes.append((device, grid, None))
            out.cleared.append((device, rds[0].ts, "offline"))
        in_alarm = _threshold(out, device, grid, rds, stype, categories, device in known.active)
        rd = rds[-1]
        out.last[device] = {"t": dtype, "v": rd.value, "ts": rd.ts, "g": grid, "a": int(in_alarm), "b": rd.battery}
    _silent(out, silent, by_device, known)
    return out


def _ts(reading: SensorReading) -> datetime:
    return reading.ts
