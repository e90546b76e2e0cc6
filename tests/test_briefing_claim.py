"""The briefing claim expires with its process: a generation killed mid-way (SIGKILL, as a web worker is killed)
leaves nothing that blocks the same briefing, which can be generated again at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from core.records import CITY_TZ

ROOT = Path(__file__).resolve().parents[1]

WRITER = textwrap.dedent("""
    import sys, time
    from datetime import date
    from pathlib import Path
    from config.city import load_city
    from store.services import get_engine, get_redis, migrate
    from config.settings import Settings
    from dashboard import briefing

    s = Settings()
    engine = get_engine(s)
    migrate(engine)

    def progress(step, share):
        if step == "read":  # under the claim: say so, then hang as a worker stuck mid-generation
            print("claimed", flush=True)
            time.sleep(600)

    briefing.produce(engine, get_redis(s), s, load_city(s.city_dir), "day", date.fromisoformat(sys.argv[1]), None,
                     Path(sys.argv[2]), progress=progress)
""")


def test_a_killed_generation_does_not_block_the_briefing(settings, r, engine, city, tmp_path):
    from dashboard import briefing

    day = (datetime.now(CITY_TZ) - timedelta(days=1)).date()
    folder = tmp_path / "archive"
    env = {**os.environ, "REDIS_URL": settings.redis_url, "DATABASE_URL": settings.database_url,
           "VAR_DIR": str(settings.var_dir), "STREAM_PREFIX": settings.stream_prefix, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, day.isoformat(), str(folder)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "claimed"
        with pytest.raises(briefing.Busy):  # held by the other process: turned away, across processes
            briefing.produce(engine, r, settings, city, "day", day, None, folder, formats=("xlsx",))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    written = briefing.produce(engine, r, settings, city, "day", day, None, folder, formats=("xlsx",))
    assert [p.name for p in written] == [f"gridwatch-day-{day.isoformat()}-{city.geography.district.code}.xlsx"]
    assert sorted(p.name for p in folder.iterdir()) == [written[0].name]  # no claim left behind
