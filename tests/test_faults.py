"""Faults against the whole running system, under a load of a few thousand case events a minute.

Each test starts the system as `make demo` does (its own VAR_DIR, embedded Redis, SQLite or its own PostgreSQL),
pushes known case sequences over HTTP, does one fault to real processes and counts: every event answered "accepted"
must be stored exactly once, every case must end in the status of its last accepted event, nothing of the load may
be dead-lettered, the live counters must equal an SQL recount, and the system must recover with no hand on it.
The table of every fault's figures is printed at the end of the run (and written to var/test-artifacts/faults.md).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.faults import TABLE_HEAD, Count, Load, PostgresServer, System, count, live_matches_sql, wait_stored

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

RESULTS: list[Count] = []
RATE = 50.0  # events a second: 3,000 a minute
RECOVER_TIMEOUT = 120


@pytest.fixture
def system_factory(tmp_path):
    made: list[System] = []

    def make(env: dict[str, str] | None = None) -> System:
        s = System(tmp_path / f"sys{len(made)}", env)
        made.append(s)
        s.start()
        return s

    yield make
    for s in made:
        s.stop()


def _finish(name: str, system: System, load: Load, city, fault_end: float, more: float = 8) -> Count:
    """Keep the load on ``more`` seconds after the fault, stop it, wait until everything accepted is stored, count,
    and check the live state. Recovery: from the fault's end until every event accepted before it is stored."""
    before = load.accepted_before(fault_end)
    waited = wait_stored(system.database_url(), before, RECOVER_TIMEOUT)
    recover = None if waited is None else time.monotonic() - fault_end
    time.sleep(max(0.0, fault_end + more - time.monotonic()))
    load.stop()
    wait_stored(system.database_url(), set(load.accepted), 60 if waited is not None else 5)
    c = count(name, load, system, recover)
    RESULTS.append(c)
    assert c.accepted > 500, f"the load hardly ran ({c.accepted} accepted; refused: {load.refused})"
    assert (c.lost, c.doubled, c.wrong_status, c.dead) == (0, 0, 0, 0), (c, system.tail())
    assert recover is not None, f"not recovered within {RECOVER_TIMEOUT} s:\n{system.tail()}"
    deadline = time.monotonic() + 30  # the live state follows SQL within a batch or two
    while (problems := live_matches_sql(system, city)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert problems == []
    return c


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def test_worker_killed_three_times_mid_batch(system_factory, city):
    system = system_factory()
    load = Load(system.base, system.token, city, rate=RATE)
    load.start()
    time.sleep(5)
    r = system.redis()
    stream = "gw:stream:cases"
    for _ in range(3):
        victim = system.wait_for("worker")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # mid-batch: while it holds entries it has not acknowledged
            if r.xpending(stream, "workers")["pending"] > 0:
                break
        _kill(victim)
        system.wait_for("worker", other_than={victim})
        time.sleep(4)
    end = time.monotonic()
    _finish("worker SIGKILL ×3 mid-batch", system, load, city, end, more=8)


def test_redis_killed_and_restarted_by_the_supervisor(system_factory, city):
    system = system_factory()
    load = Load(system.base, system.token, city, rate=RATE)
    load.start()
    time.sleep(6)
    victim = system.pids("redis")
    assert len(victim) == 1
    _kill(victim[0])
    system.wait_for("redis", other_than=set(victim), timeout=60)
    end = time.monotonic()
    _finish("embedded Redis SIGKILL, restarted", system, load, city, end, more=12)


def test_postgresql_stopped_for_30_seconds(system_factory, city):
    pg = PostgresServer()
    if not pg.available:
        pytest.skip("no PostgreSQL server binaries (pg_ctl) on this machine")
    pg.init()
    pg.start()
    try:
        system = system_factory({"DATABASE_URL": pg.url})
        load = Load(system.base, system.token, city, rate=RATE)
        load.start()
        time.sleep(5)
        pg.stop()
        time.sleep(30)
        pg.start()
        end = time.monotonic()
        _finish("PostgreSQL stopped 30 s", system, load, city, end, more=8)
    finally:
        pg.remove()


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(path: Path) -> None:
    """Write zeros to ``path`` until the disk is full."""
    with contextlib.suppress(OSError), open(path, "wb", buffering=0) as f:
        for size in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * size)


def test_sqlite_on_a_full_disk(system_factory, city, small_disk):
    system = system_factory({"DATABASE_URL": f"sqlite:///{small_disk / 'gridwatch.db'}"})
    load = Load(system.base, system.token, city, rate=RATE)
    load.start()
    time.sleep(5)
    filler = small_disk / "filler"
    _fill(filler)
    time.sleep(40)
    filler.unlink()
    end = time.monotonic()
    _finish("SQLite disk full 40 s", system, load, city, end, more=8)


def test_a_gunicorn_worker_killed_twice(system_factory, city):
    system = system_factory()
    load = Load(system.base, system.token, city, rate=RATE)
    load.start()
    time.sleep(5)
    for _ in range(2):
        before = set(system.pids("web-worker"))
        assert before
        _kill(sorted(before)[0])
        system.wait_for("web-worker", other_than=before)
        time.sleep(4)
    end = time.monotonic()
    _finish("gunicorn worker SIGKILL ×2", system, load, city, end, more=6)


def test_the_scheduler_killed(system_factory, city):
    system = system_factory()
    load = Load(system.base, system.token, city, rate=RATE)
    load.start()
    time.sleep(5)
    victim = system.wait_for("scheduler")
    _kill(victim)
    system.wait_for("scheduler", other_than={victim})
    end = time.monotonic()
    _finish("scheduler SIGKILL", system, load, city, end, more=8)


def faults_table() -> str:
    return "\n".join([TABLE_HEAD, *(c.row() for c in RESULTS)])
