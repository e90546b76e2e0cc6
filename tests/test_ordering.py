"""Per-case order after faults: a failed batch, a dead consumer, a restart, a lost group, a source's own disorder.

Each case walks a known legal path; whatever the fault, every event ends up applied once, in order, and none is
dead-lettered. The rule itself (core/ordering.py) is tested without stores at the end.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.exc import OperationalError

from core import ordering
from ingest.worker import Worker
from store.schema import Case, CaseEvent, HeldEvent
from store.streams import Producer, StreamNames, ensure_groups, read_dead
from tests.checks import assert_live_matches_sql
from tests.events import ev, report

PATH = ["register", "dispatch", "accept", "resolve"]  # report first, then these: ends "resolved"


def reports(city, n: int, tag: str) -> list[dict]:
    grids = city.geography.areas("grid")
    return [report(city, f"{tag}{i}", grid=grids[i % len(grids)]) for i in range(n)]


def steps(n: int, tag: str, actions=PATH) -> list[dict]:
    out = []
    for i in range(n):
        for k, action in enumerate(actions, start=1):
            extra = {"departments": ["cg"]} if action == "dispatch" else {}
            out.append({**ev(f"{tag}{i}", action, k), **extra})
    return out


def drain(w: Worker, rounds: int = 200) -> None:
    for _ in range(rounds):
        if not w.run_once(20):
            return


def statuses(engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(select(Case.external_id, Case.status)).all())


def event_count(engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(CaseEvent))


def held_count(engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(HeldEvent))


@contextlib.contextmanager
def locked_store(engine):
    """Another writer holds the store locked; yields an engine of the worker's that gives up on a lock at once."""
    if engine.dialect.name == "sqlite":
        impatient = create_engine(engine.url, connect_args={"timeout": 0.05})
        locker = sqlite3.connect(engine.url.database, timeout=5)
        locker.execute("BEGIN EXCLUSIVE")
        release = locker.rollback
    else:
        impatient = create_engine(engine.url, connect_args={"options": f"{engine.url.query.get('options', '')} "
                                                                       "-c lock_timeout=50"})
        locker = engine.raw_connection()
        locker.cursor().execute("LOCK TABLE cases IN ACCESS EXCLUSIVE MODE")
        release = locker.rollback
    try:
        yield impatient
    finally:
        release()
        locker.close()


def test_a_failed_batch_is_retried_before_anything_newer_is_read(settings, r, engine, city):
    """The store is locked by another writer: the reports' batch fails; the registers published meanwhile wait."""
    n = 30
    Producer(r, settings, source="test").cases(reports(city, n, "f"))
    with locked_store(engine) as impatient:
        w = Worker(city, settings, impatient, r, name="w1")
        with pytest.raises(OperationalError, match="lock"):
            w.run_once(20)
        Producer(r, settings, source="test").cases(steps(n, "f"))
        with pytest.raises(OperationalError, match="lock"):
            w.run_once(20)  # still failing: it retries its own pending entries, it does not read past them
    drain(w)
    assert statuses(engine) == {f"f{i}": "resolved" for i in range(n)}
    assert event_count(engine) == n * (1 + len(PATH))
    assert read_dead(r, settings) == []
    assert held_count(engine) == 0
    assert_live_matches_sql(r, settings, engine, city)
    impatient.dispose()


def test_a_restarted_worker_applies_what_it_left_pending_first(settings, r, engine, city):
    """A worker read the reports and died before applying them; restarted under its stable name, it applies them
    before the later events of the same cases."""
    n = 25
    names = StreamNames.of(settings)
    ensure_groups(r, settings)
    Producer(r, settings, source="test").cases(reports(city, n, "s"))
    got = r.xreadgroup(settings.consumer_group, "host-worker", {names.cases: ">"}, count=1000)  # read, never acked
    assert sum(len(e) for _, e in got) > 0
    Producer(r, settings, source="test").cases(steps(n, "s"))
    slow_claim = settings.model_copy(update={"claim_idle_ms": 3_600_000})  # nobody else would take them over
    w = Worker(city, slow_claim, engine, r, name="host-worker")
    drain(w)
    assert statuses(engine) == {f"s{i}": "resolved" for i in range(n)}
    assert read_dead(r, settings) == []
    assert r.xpending(names.cases, settings.consumer_group)["pending"] == 0


def test_a_dead_consumers_entries_are_applied_before_the_later_events_of_their_cases(settings, r, engine, city):
    """Consumer A read the reports and vanished; worker B, another name, gets the later events first. They wait
    (held) until B takes A's entries over, then everything applies in order."""
    n = 20
    names = StreamNames.of(settings)
    ensure_groups(r, settings)
    Producer(r, settings, source="test").cases(reports(city, n, "d"))
    r.xreadgroup(settings.consumer_group, "vanished", {names.cases: ">"}, count=1000)
    Producer(r, settings, source="test").cases(steps(n, "d"))
    w = Worker(city, settings, engine, r, name="b")
    w._last_claim = time.monotonic()  # B has just looked: A's entries are not idle long enough yet
    w.run_once(20)
    assert statuses(engine) == {}
    assert held_count(engine) == n * len(PATH)
    time.sleep(settings.claim_idle_ms / 1000 + 0.1)
    drain(w)
    assert statuses(engine) == {f"d{i}": "resolved" for i in range(n)}
    assert event_count(engine) == n * (1 + len(PATH))
    assert held_count(engine) == 0
    assert read_dead(r, settings) == []
    assert_live_matches_sql(r, settings, engine, city)


def test_events_a_source_sends_before_the_report_wait_for_it(settings, r, engine, city):
    """A source's own disorder: register … resolve pushed a moment before the report. Applied in order, not dead."""
    n = 10
    p = Producer(r, settings, source="test")
    w = Worker(city, settings, engine, r, name="w1")
    p.cases(steps(n, "o"))
    drain(w)
    assert held_count(engine) == n * len(PATH)
    p.cases(reports(city, n, "o"))
    drain(w)
    assert statuses(engine) == {f"o{i}": "resolved" for i in range(n)}
    with engine.connect() as conn:
        rows = conn.execute(select(Case.external_id, CaseEvent.action).join(Case, Case.id == CaseEvent.case_id)
                            .order_by(CaseEvent.id)).all()
    by_case: dict[str, list[str]] = {}
    for ext, action in rows:
        by_case.setdefault(ext, []).append(action)
    assert by_case == {f"o{i}": ["report", *PATH] for i in range(n)}
    assert held_count(engine) == 0 and read_dead(r, settings) == []


def test_a_lost_consumer_group_is_created_again_and_the_worker_goes_on(settings, r, engine, city):
    names = StreamNames.of(settings)
    p = Producer(r, settings, source="test")
    w = Worker(city, settings, engine, r, name="w1")
    p.cases(reports(city, 5, "g"))
    drain(w)
    for stream in (names.cases, names.sensors, names.bulk):
        r.xgroup_destroy(stream, settings.consumer_group)
    p.cases(steps(5, "g"))
    drain(w)
    assert statuses(engine) == {f"g{i}": "resolved" for i in range(5)}
    assert read_dead(r, settings) == []


# ---- the rule, without stores ---------------------------------------------------------------------------------

NOW = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
HOLD = timedelta(seconds=60)


@pytest.mark.parametrize(("exists", "older", "earlier", "since", "expected"), [
    (True, False, False, None, "dead"),  # a move its case's status refuses, nothing older pending: truly illegal
    (False, False, False, None, "hold"),  # no case yet: the report may still come
    (True, True, False, None, "hold"),  # an older entry is pending elsewhere: maybe its predecessor
    (True, False, True, None, "hold"),  # behind an earlier waiting event of its case
    (False, False, False, NOW - timedelta(seconds=59), "hold"),
    (False, False, False, NOW - timedelta(seconds=60), "dead"),  # waited long enough, nothing older pending
    (True, False, False, NOW - timedelta(seconds=61), "dead"),
    (False, True, False, NOW - timedelta(hours=5), "hold"),  # its predecessors are still pending: never dead
])
def test_the_verdict(exists, older, earlier, since, expected):
    v = ordering.verdict(case_exists=exists, older_pending=older, earlier_waiting=earlier, held_since=since, now=NOW,
                         hold=HOLD)
    assert v.value == expected


def test_stream_order():
    assert ordering.older("1700000000000-5", "1700000000001-0")
    assert ordering.older(b"1700000000000-5", "1700000000000-6")
    assert not ordering.older("1700000000000-6", "1700000000000-6")
    assert not ordering.older(None, "1-0") and not ordering.older("1-0", None)
    assert sorted([("2-0", 1), ("1-9", 3), ("2-0", 0), (None, 0)], key=lambda x: ordering.entry_order(*x)) == [
        ("1-9", 3), ("2-0", 0), ("2-0", 1), (None, 0)]
