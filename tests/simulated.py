"""A simulated stretch of a city's cases, and applying what was published with one worker."""

from __future__ import annotations

from datetime import datetime, timedelta

from core.records import CITY_TZ
from ingest.feeds.simulator import Simulator
from ingest.worker import Worker

START = datetime(2025, 3, 4, 7, 0, tzinfo=CITY_TZ)  # a Tuesday morning: quiet hours, then the rise to the peak
SLICE = timedelta(seconds=30)


def simulate(city, hours: float, rate: float = 0.05, start: datetime = START, seed: int = 3) -> list[dict]:
    sim = Simulator(city, seed=seed, rate=rate, start=start, sensors=False)
    out: list[dict] = []
    now = start
    while now < start + timedelta(hours=hours):
        now += SLICE
        cases, _ = sim.step(now, SLICE)
        out += cases
    return out


def apply_all(city, settings, engine, r) -> Worker:
    w = Worker(city, settings, engine, r, name="t")
    while w.run_once(50):
        pass
    return w
