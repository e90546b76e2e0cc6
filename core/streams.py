"""The Redis stream layout: names of the streams and of the dead-letter counter.

Pure: names only. Feeds publish through store/streams.py, the worker consumes there, and the
views read lengths and lags in dashboard/live.py — all from these names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

CASES = "cases"
SENSORS = "sensors"
BULK = "bulk"  # case events from bulk imports: applied after live ones, so an import never holds up the wall
DEAD = "dead"
KINDS = (CASES, SENSORS, BULK)


class _Keyed(Protocol):
    def key(self, *parts: str) -> str: ...


@dataclass(frozen=True)
class StreamNames:
    cases: str
    sensors: str
    bulk: str
    dead: str
    dead_count: str

    @classmethod
    def of(cls, settings: _Keyed) -> StreamNames:
        """The names under a deployment's key prefix (``settings.key``)."""
        return cls(
            cases=settings.key("stream", CASES),
            sensors=settings.key("stream", SENSORS),
            bulk=settings.key("stream", BULK),
            dead=settings.key("stream", DEAD),
            dead_count=settings.key("dead", "count"),
        )

    def for_kind(self, kind: str) -> str:
        return {CASES: self.cases, SENSORS: self.sensors, BULK: self.bulk}[kind]

    @property
    def live(self) -> tuple[str, str]:
        return (self.cases, self.sensors)

    @property
    def case_streams(self) -> tuple[str, str]:
        return (self.cases, self.bulk)
