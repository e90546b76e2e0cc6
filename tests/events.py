"""Case events as the test source sends them, built by hand: a report, a later event of the same case, and a random
history of cases walked through legal paths of different lengths. Times count from ``NOW`` (this run's start).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

NOW = datetime.now(UTC).replace(microsecond=0)


def public_categories(city):
    return [c for c in city.categories.values() if not c.sensor_only]


def report(city, ext: str, grid=None, when=None, cat=None, grade=None, lon=None, lat=None, **extra) -> dict:
    cat = cat or public_categories(city)[0]
    rec = {"source": "test", "external_id": ext, "event": "report", "occurred_at": (when or NOW).isoformat(),
           "category": cat.code, "title": f"案件 {ext}"}
    if grid is not None:
        lon, lat = grid.centroid
    if lon is not None:
        rec.update(lon=lon, lat=lat)
    if grade:
        rec["grade"] = grade
    rec.update(extra)
    return rec


def ev(ext: str, action: str, minutes: int, **extra) -> dict:
    return {"source": "test", "external_id": ext, "event": action, "event_id": f"{action}-{minutes}",
            "occurred_at": (NOW + timedelta(minutes=minutes)).isoformat(), **extra}


def random_history(city, n_cases: int, seed: int) -> list[dict]:
    """A mix of cases walked through legal paths of different lengths."""
    rnd = random.Random(seed)
    grids = city.geography.areas("grid")
    cats = public_categories(city)
    paths = [
        [],
        ["register"],
        ["register", "dispatch"],
        ["register", "dispatch", "accept"],
        ["register", "dispatch", "accept", "handle"],
        ["register", "dispatch", "accept", "handle", "resolve"],
        ["onsite"],
        ["onsite", "close"],
        ["register", "dispatch", "accept", "resolve", "close", "evaluate"],
        ["register", "dispatch", "return"],
        ["register", "dispatch", "accept", "handle", "resolve", "reopen"],
    ]
    out = []
    for i in range(n_cases):
        ext = f"h{seed}-{i}"
        g = rnd.choice(grids)
        out.append(report(city, ext, grid=g, cat=rnd.choice(cats), grade=rnd.randint(1, 4),
                          when=NOW - timedelta(hours=2)))
        for step, action in enumerate(rnd.choice(paths), start=1):
            extra = {"departments": [rnd.choice(list(city.departments))]} if action in ("dispatch", "whistle") else {}
            if action == "evaluate":
                extra["rating"] = 5
            out.append({**ev(ext, action, step - 120), **extra})
    return out
