"""The scheduler process (APScheduler): periodic jobs that publish, never write the store.

Run it as its own process (``python -m ingest scheduler``), never inside the web workers:
under gunicorn each worker would run every job. Jobs are safe to run twice — what they
publish is idempotent — so a second scheduler during a restart does no harm.
"""

from __future__ import annotations

import logging
import signal
from datetime import UTC, datetime

from apscheduler.schedulers.blocking import BlockingScheduler
from sqlalchemy import select

from config.settings import Settings, get_settings
from core.lifecycle import OPEN_STATUSES, Action
from core.models import Case
from ingest.streams import Producer

log = logging.getLogger(__name__)

SWEEP_BATCH = 5000


def sla_sweep(settings: Settings | None = None, now: datetime | None = None) -> int:
    """Publish an ``overdue`` event for every open case whose deadline has passed and is not yet marked.

    The event id carries the deadline, so a case that is extended and runs late again is marked again,
    and a sweep that runs twice publishes nothing new to apply.
    """
    from config.services import get_engine, get_redis

    settings = settings or get_settings()
    now = now or datetime.now(UTC)
    engine = get_engine(settings)
    producer = Producer(get_redis(settings), settings, source="scheduler")
    published = 0
    last_id = 0
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                select(Case.id, Case.source, Case.external_id, Case.due_at)
                .where(Case.status.in_([s.value for s in OPEN_STATUSES]), Case.overdue.is_(False),
                       Case.due_at.is_not(None), Case.due_at <= now, Case.id > last_id)
                .order_by(Case.id)
                .limit(SWEEP_BATCH)
            ).all()
        if not rows:
            break
        producer.cases(
            {
                "source": r.source,
                "external_id": r.external_id,
                "event": Action.OVERDUE.value,
                "event_id": f"overdue@{r.due_at.strftime('%Y%m%dT%H%M%S')}",
                "occurred_at": r.due_at.isoformat(),  # the moment it became overdue
                "actor": "system",
            }
            for r in rows
        )
        published += len(rows)
        last_id = rows[-1].id
    if published:
        log.info("SLA sweep: %d cases newly overdue", published)
    return published


def device_watch(settings: Settings | None = None, now: datetime | None = None, city=None) -> int:
    """Publish an ``offline`` record for every device silent for longer than its type's heartbeat × factor.

    Reads the live state (the last reading of each device) in pages; the worker opens the
    device-offline alarm, and clears it when the device is heard from again. Devices already
    offline are skipped here, and the worker ignores repeats, so running twice is harmless.
    """
    import orjson

    from config.city import get_city
    from config.services import get_redis
    from core.livestate import LiveKeys

    settings = settings or get_settings()
    city = city or get_city()
    now = now or datetime.now(UTC)
    r = get_redis(settings)
    keys = LiveKeys(settings.stream_prefix)
    offline = {k.decode() for k in r.hkeys(keys.offline)}
    limits = {code: t.heartbeat_s * settings.device_offline_factor for code, t in city.sensor_types.items()}
    silent = []
    for device, raw in r.hscan_iter(keys.devices, count=1000):
        device = device.decode()
        if device in offline:
            continue
        last = orjson.loads(raw)
        limit = limits.get(last.get("t"))
        if limit is None:
            continue
        seen = datetime.fromisoformat(last["ts"])
        quiet = (now - seen).total_seconds()
        if quiet > limit:
            silent.append({"source": "watch", "device_id": device, "type": last["t"], "kind": "offline",
                           "value": round(quiet), "ts": now.isoformat()})
    if silent:
        Producer(r, settings, source="watch").sensors(silent)
        log.info("device watch: %d devices newly silent", len(silent))
    return len(silent)


def build(settings: Settings | None = None) -> BlockingScheduler:
    settings = settings or get_settings()
    sched = BlockingScheduler(timezone=settings.timezone)
    sched.add_job(sla_sweep, "interval", seconds=30, id="sla_sweep", kwargs={"settings": settings},
                  max_instances=1, coalesce=True, next_run_time=datetime.now(UTC))
    sched.add_job(device_watch, "interval", seconds=60, id="device_watch", kwargs={"settings": settings},
                  max_instances=1, coalesce=True, next_run_time=datetime.now(UTC))
    from ingest.feeds.open311 import scheduled_polls

    for name, seconds, poll in scheduled_polls(settings):
        sched.add_job(poll, "interval", seconds=seconds, id=name, max_instances=1, coalesce=True,
                      next_run_time=datetime.now(UTC))
    return sched


def run(settings: Settings | None = None) -> None:
    sched = build(settings)

    def stop(signum, _frame) -> None:
        log.info("signal %s: stopping the scheduler", signum)
        sched.shutdown(wait=False)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("scheduler started: %s", ", ".join(j.id for j in sched.get_jobs()))
    sched.start()
    log.info("scheduler stopped")
