"""``python -m ingest notify``: the delivery job. Finds what happened since its cursors, queues one message per
trigger and channel (config/notify.yaml, core/notify.py), and delivers through Apprise: retried with backoff, at most
``rate_per_minute`` a minute per channel (the rest folded into one summary), each channel on its own thread so a
slow or failing one holds up no other. Runs as its own process (``make demo`` starts it), never in the worker.

Where triggers come from: ``case_events`` by id (超期 overdue, 升级督办 escalate, 督办 supervise, the worker's
``auto:unrouted`` note), ``sensor_alarms`` by id, 吹哨 assignments past their 报到 deadline without a check-in, the
risk sweep's levels in Redis (an area newly 红), and the feeds' health (a feed failing).
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import apprise
import orjson
import redis
from sqlalchemy.engine import Engine

from config.city import City, get_city
from config.notify import NotifyConfig, load_notify
from config.settings import Settings, get_settings
from core import notify as rules
from core.access import mask_text
from core.livestate import LiveKeys
from core.records import CITY_TZ
from core.risk import RISK_LEVELS
from ingest import feedhealth
from store import notify as store
from store.services import get_engine, get_redis, migrate

log = logging.getLogger(__name__)

RED = max(RISK_LEVELS)  # 红
WHISTLE_WINDOW = timedelta(hours=24)  # a 报到 deadline further back than this is history, not news
PAGE = 2000
# the loggers that may name a channel's URL (urllib3 logs every request's path at DEBUG): their records are masked
SCRUBBED = ("apprise", "urllib3.connectionpool", "urllib3.connection", "urllib3.util.retry", __name__)


class _Scrub(logging.Filter):
    """Masks the channels' secrets in whatever a library logs (Apprise names the URL it posts to)."""

    def __init__(self, secrets: set[str]):
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = rules.scrub(record.getMessage(), self.secrets)
        record.args = ()
        return True


class Notifier:
    """One delivery pass at a time (a Redis lock), safe to run again: what it queued is keyed, what it sent is
    marked."""

    def __init__(self, settings: Settings, city: City, engine: Engine, r: redis.Redis,
                 config: NotifyConfig | None = None):
        self.settings, self.city, self.engine, self.r = settings, city, engine, r
        self.cfg = config or load_notify(city, settings)
        self.keys = store.NotifyKeys(settings.stream_prefix)
        self.secrets = set().union(*(rules.secrets_of(c.url) for c in self.cfg.channels))
        self.names = {code: d.name for code, d in city.departments.items()}
        self.own = (city.county_code,)
        self._scrub = _Scrub(self.secrets)
        for name in SCRUBBED:
            logging.getLogger(name).addFilter(self._scrub)
        self.targets = {c.name: self._target(c.url) for c in self.cfg.channels}
        self._state: dict[str, Any] = {}  # where the cursors and the red areas move once a pass has queued

    def close(self) -> None:
        for name in SCRUBBED:
            logging.getLogger(name).removeFilter(self._scrub)

    def _target(self, url: str) -> str:
        plugin = apprise.Apprise.instantiate(url)
        shown = plugin.url(privacy=True).split("?")[0] if plugin is not None else url.split("://")[0] + "://"
        return rules.scrub(shown, self.secrets)[:300]

    # ----------------------------------------------------------------------- triggers

    def _area(self, code: str | None) -> tuple[str, str]:
        area = self.city.geography.get(code) if code else None
        return (area.name, area.level) if area else ("", "")

    def _case_trigger(self, row: dict[str, Any]) -> rules.Trigger | None:
        action, case_id = row["action"], row["case_id"]
        reason = rules.Reason.UNROUTED if action == "note" else rules.Reason(action)
        key = f"unrouted:{case_id}" if reason is rules.Reason.UNROUTED else f"{action}:{case_id}:{row['event_key']}"
        deps = tuple(row["departments"] or row["case_deps"] or ())
        code = row["grid_code"] or row["street_code"]
        deadline = row["deadline"] if isinstance(row["deadline"], datetime) else None
        return rules.Trigger(reason, key, row["occurred_at"], case_id, mask_text(row["title"], self.own) or "", code,
                             self._area(code)[0], deps, deadline, mask_text(row["note"], self.own) or "")

    def _alarm_trigger(self, row: dict[str, Any]) -> rules.Trigger:
        kind = self.city.sensor_types.get(row["type"])
        what = kind.name if kind else row["type"]
        detail = (f"{what}设备 {row['device_id']} 离线" if row["kind"] == "offline"
                  else f"{what}设备 {row['device_id']} 超阈值告警（峰值 {row['peak_value']:g}{kind.unit if kind else ''}）")
        code = row["grid_code"]
        return rules.Trigger(rules.Reason.ALARM, f"alarm:{row['id']}", row["opened_at"], row["case_id"], "", code,
                             self._area(code)[0], detail=detail)

    def _scan(self, name: str, read, now: datetime) -> list[dict[str, Any]]:
        """Rows after the cursor ``name`` (the first time: of the lookback window); the cursor's new place is kept
        for :meth:`_save`, once what was found is queued."""
        after = store.cursors(self.r, self.keys).get(name, 0)
        since = now - timedelta(minutes=self.cfg.lookback_minutes)
        top = store.last_id(self.engine, name) if not after else 0  # read first: nothing added meanwhile is skipped
        out: list[dict[str, Any]] = []
        while True:
            rows = read(self.engine, after, since, PAGE)
            out += rows
            if rows:
                after = rows[-1]["id"]
            if len(rows) < PAGE:
                break
        if after or top:
            self._state[name] = max(after, top)
        return out

    def _red_triggers(self, now: datetime) -> list[rules.Trigger]:
        raw = self.r.get(LiveKeys(self.settings.stream_prefix).risk_levels)
        levels = orjson.loads(raw) if raw else {}
        red = {code for code, level in levels.items() if level >= RED}
        before = store.red_areas(self.r, self.keys)
        self._state["red"] = red
        day = now.astimezone(CITY_TZ).strftime("%Y%m%d")
        return [rules.Trigger(rules.Reason.RED_RISK, f"red_risk:{code}:{day}", now, None, "", code, self._area(code)[0])
                for code in sorted(red - before)]

    def _save(self) -> None:
        """Move the cursors and the red areas on, now that what they found is queued."""
        for name, value in self._state.items():
            if name == "red":
                store.set_red_areas(self.r, self.keys, value)
            else:
                store.set_cursor(self.r, self.keys, name, value)
        self._state = {}

    def _feed_triggers(self, now: datetime) -> list[rules.Trigger]:
        out = []
        for feed, state in sorted(feedhealth.read_all(self.r, self.settings).items()):
            if state.get("ok", True):
                continue
            detail = f"{feed}（{mask_text(str(state.get('error', '故障')), self.own)[:200]}，连续失败 {state.get('failures', 1)} 次）"
            out.append(rules.Trigger(rules.Reason.FEED_SILENT, f"feed_silent:{feed}:{state.get('last_ok') or 'never'}",
                                     now, detail=rules.scrub(detail, self.secrets)))
        return out

    def find(self, now: datetime) -> list[rules.Trigger]:
        """Every trigger since the cursors (moving them), and the red areas and failing feeds of now."""
        found = [t for row in self._scan("events", store.case_events_after, now) if (t := self._case_trigger(row))]
        found += [self._alarm_trigger(row) for row in self._scan("alarms", store.alarms_after, now)]
        for row in store.missed_whistles(self.engine, now, now - WHISTLE_WINDOW):
            code = row["grid_code"]
            found.append(rules.Trigger(rules.Reason.WHISTLE_MISSED, f"whistle_missed:{row['id']}", row["due_at"],
                                       row["case_id"], mask_text(row["title"], self.own) or "", code,
                                       self._area(code)[0], (row["department"],), row["due_at"]))
        return found + self._red_triggers(now) + self._feed_triggers(now)

    def queue(self, triggers: Sequence[rules.Trigger], now: datetime) -> int:
        """One queued message per trigger and channel its rules name; returns how many were new."""
        rows = []
        for t in triggers:
            for rule, channel in rules.route(self.cfg.rules, self.cfg.channels, t, self._area(t.area_code)[1] or None):
                subject, body = rules.render(rule, t, self.cfg.base_url, CITY_TZ, self.names)
                rows.append({"key": t.key, "rule": rule.name, "reason": t.reason.value, "channel": channel.name,
                             "target": self.targets[channel.name], "subject": subject[:300], "body": body,
                             "case_id": t.case_id, "area_code": t.area_code, "status": "queued", "attempts": 0,
                             "next_at": now, "created_at": now})
        return store.queue(self.engine, rows)

    # ----------------------------------------------------------------------- delivery

    def send(self, channel: rules.Channel, subject: str, body: str) -> str | None:
        """Deliver one message; None when it went, else why not (masked)."""
        a = apprise.Apprise()
        a.add(channel.url)
        try:
            with a.notify(body=body, title=subject) as result:  # the call's own log: what went wrong, per call
                ok = bool(result)
                said = [e.message for e in result.logs() if e.level in ("WARNING", "ERROR", "CRITICAL")]
        except Exception as exc:  # noqa: BLE001 - a plugin's own failure is this channel's, never the job's
            ok, said = False, [f"{type(exc).__name__}: {exc}"]
        if ok:
            return None
        return rules.scrub(said[-1] if said else "the service refused the message", self.secrets)[:500]

    def _failed(self, channel: rules.Channel, row, error: str, now: datetime) -> None:
        attempts = row.attempts + 1
        later = rules.next_try(self.cfg.retry, attempts, now)
        store.mark_failed(self.engine, row.id, attempts, error, later, now)
        store.set_channel_status(self.r, self.keys, channel.name, False, error, now)
        log.warning("notification %s to %s failed (attempt %d): %s; %s", row.key, channel.name, attempts, error,
                    f"next try at {later.isoformat()}" if later else "given up")

    def _summary(self, channel: rules.Channel, folded: Sequence[Any], now: datetime) -> None:
        subject, body = rules.summary(Counter(r.reason for r in folded), self.cfg.base_url)
        store.fold(self.engine, [r.id for r in folded])
        store.queue(self.engine, [{
            "key": f"summary:{folded[0].id}-{folded[-1].id}", "rule": "summary", "reason": "summary",
            "channel": channel.name, "target": self.targets[channel.name], "subject": subject, "body": body,
            "case_id": None, "area_code": None, "status": "queued", "attempts": 0, "next_at": now, "created_at": now}])

    def deliver_channel(self, channel: rules.Channel, now: datetime) -> Counter:
        """The channel's due messages within its rate; on the first failure it stops until the next pass."""
        counts: Counter = Counter()
        send_n, fold_n = rules.plan(store.waiting(self.engine, channel.name, now),
                                    store.used(self.engine, channel.name, now), channel.rate_per_minute)
        rows = store.due(self.engine, channel.name, now, send_n + fold_n)
        if fold_n:
            self._summary(channel, rows[send_n:], now)
            counts["folded"] += len(rows) - send_n
            rows = store.due(self.engine, channel.name, now, send_n + 1)  # the summary is the newest of them
        for row in rows:
            error = self.send(channel, row.subject, row.body)
            if error is not None:
                self._failed(channel, row, error, now)
                counts["failed"] += 1
                break
            store.mark_sent(self.engine, [row.id], now)
            store.set_channel_status(self.r, self.keys, channel.name, True, None, now)
            counts["sent"] += 1
        return counts

    def deliver(self, now: datetime) -> Counter:
        counts: Counter = Counter()
        if not self.cfg.channels:
            return counts
        with ThreadPoolExecutor(max_workers=min(8, len(self.cfg.channels))) as pool:
            for c in pool.map(lambda ch: self.deliver_channel(ch, now), self.cfg.channels):
                counts.update(c)
        return counts

    def run_once(self, now: datetime | None = None) -> dict[str, int]:
        """One pass: find, queue, deliver. Returns counts (found, queued, sent, failed, folded); {} when another
        pass holds the lock."""
        now = now or datetime.now(UTC)
        lock = self.r.lock(self.keys.lock, timeout=300, blocking_timeout=0)
        if not lock.acquire(blocking=False):
            return {}
        try:
            store.forget_channels(self.r, self.keys, self.targets)
            found = self.find(now)
            counts = {"found": len(found), "queued": self.queue(found, now)}
            self._save()
            counts.update(self.deliver(now))
        finally:
            lock.release()
        if counts.get("sent") or counts.get("failed") or counts.get("folded"):
            log.info("notifications: %s", ", ".join(f"{k} {v}" for k, v in counts.items()))
        return counts


# --------------------------------------------------------------------------- the command


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--once", action="store_true", help="one pass (find, queue, deliver), print its counts as JSON")
    p.add_argument("--check", action="store_true",
                   help="check config/notify.yaml (NOTIFY_FILE) and list the channels (secrets masked), send nothing")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between passes (default 10)")


def main(args) -> int:
    settings, city = get_settings(), get_city()
    config = load_notify(city, settings)  # a broken file stops the start, naming the rule and the fix
    if config.disabled:
        log.warning("notification channels without a URL (their variable is unset), left out: %s",
                    ", ".join(config.disabled))
    if args.check:  # the file only: no store is opened
        shown = Notifier(settings, city, None, None, config)
        for c in config.channels:
            print(f"{c.name}\t{shown.targets[c.name]}\t{c.rate_per_minute}/min")
        print(f"{len(config.rules)} rules, {len(config.channels)} channels, links to {config.base_url}")
        return 0
    migrate()
    n = Notifier(settings, city, get_engine(settings), get_redis(settings), config)
    if args.once:
        print(orjson.dumps(n.run_once()).decode())
        return 0
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("notifications: %d channels, %d rules, every %g s", len(config.channels), len(config.rules), args.interval)
    while not stop.is_set():
        try:
            n.run_once()
        except (redis.RedisError, OSError) as exc:
            log.warning("notifications: pass failed (%s: %s); trying again", type(exc).__name__, exc)
        except Exception as exc:  # noqa: BLE001 - SQL away and the like: the next pass tries again
            log.warning("notifications: pass failed (%s: %s); trying again", type(exc).__name__,
                        rules.scrub(str(exc), n.secrets)[:300])
        stop.wait(args.interval)
    return 0
