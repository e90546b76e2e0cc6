"""One poll of an endpoint (windows, pages, the resume point in Redis), the scheduler's jobs, the loop."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import redis
import requests

from config.city import load_city
from config.settings import Settings, get_settings
from core.lifecycle import TransitionError
from core.records import Catalog, RecordError
from ingest.feedhealth import FeedHealth
from ingest.feeds.open311.client import Client, SourceDown, iso_z
from ingest.feeds.open311.endpoints import Endpoint, Open311ConfigError, endpoint_of, load_endpoints, load_mapping
from ingest.feeds.open311.events import Context, request_events
from ingest.feeds.open311.parsing import Item
from store.services import get_redis
from store.streams import Producer

log = logging.getLogger(__package__)


@dataclass
class PollReport:
    endpoint: str
    fetched: int = 0  # request records read
    published: int = 0  # case events published
    cases: int = 0  # requests that became events
    dead: int = 0  # records or texts dead-lettered
    windows: int = 0  # windows completed
    pages: int = 0
    retried: int = 0  # failed HTTP attempts that were retried
    window_end: str | None = None  # end of the last completed window (stored in Redis)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def state_key(settings: Settings, name: str) -> str:
    return settings.key("feed", "open311", name)


def poll_context(ep: Endpoint, settings: Settings, city=None) -> Context:
    if city is None:
        city = load_city(settings.city_dir)
    mapping = load_mapping(ep.mapping_path(), city)
    catalog = Catalog(categories=city.categories, departments=frozenset(city.departments))
    return Context(ep, mapping, catalog, {c: cat.department for c, cat in city.categories.items()})


def _services(client: Client, ctx: Context, r: redis.Redis, key: str, producer: Producer, rep: PollReport,
              now: datetime) -> None:
    """Refresh the service list (code -> name) once a day; a failure here does not stop the poll."""
    cached = r.hget(key, "services")
    at = r.hget(key, "services_at")
    if cached and at and now - datetime.fromisoformat(at.decode()) < timedelta(hours=24):
        ctx.service_names = orjson.loads(cached)
        return
    try:
        items, bad, _ = client.services()
    except SourceDown as exc:
        log.warning("open311 %s: services list unavailable (%s); continuing with requests", ctx.ep.name, exc)
        if cached:
            ctx.service_names = orjson.loads(cached)
        return
    names = {}
    for item, _raw in items:
        if isinstance(item, dict) and item.get("service_code") is not None:
            names[str(item["service_code"])] = str(item.get("service_name") or "")
    for raw, reason in bad:
        producer.dead(raw, f"open311 {ctx.ep.name} services: {reason}", stream=producer.names.cases)
        rep.dead += 1
    unmapped = sorted(n for c, n in names.items() if ctx.mapping.category(c, n) is None)
    if unmapped:
        log.info("open311 %s: %d of %d services have no category mapping (they use %s): %s", ctx.ep.name,
                 len(unmapped), len(names), ctx.mapping.fallback_category, ", ".join(unmapped[:20]))
    ctx.service_names = names
    r.hset(key, mapping={"services": orjson.dumps(names), "services_at": now.isoformat()})


@dataclass
class _Pull:
    """One poll's reading side: it fetches the pages of a window, converts them and dead-letters the unreadable."""

    ctx: Context
    client: Client
    producer: Producer
    rep: PollReport
    page_errors: list[str] = field(default_factory=list)

    def window(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """The case events of every request in ``start``..``end``, page by page."""
        ep = self.ctx.ep
        events: list[dict[str, Any]] = []
        for page in range(1, ep.max_pages + 1):
            items, error = self._page(start, end, page)
            events.extend(self._events(items))
            # A short clean page is the last; an unreadable page may have been cut short, so look further.
            if len(items) < ep.page_size and not error:
                break
        return events

    def _page(self, start: datetime, end: datetime, page: int) -> tuple[list[Item], str | None]:
        """One page's readable records; what is unreadable is dead-lettered and the page's error kept."""
        items, bad, error = self.client.requests_page(start, end, page)
        self.rep.pages += 1
        self.rep.fetched += len(items)
        for raw, reason in bad:
            self.producer.dead(raw, f"open311 {self.ctx.ep.name} requests {iso_z(start)}..{iso_z(end)} page {page}: {reason}",
                               stream=self.producer.names.cases)
            self.rep.dead += 1
        if error:
            self.page_errors.append(f"page {page} of {iso_z(start)}..{iso_z(end)}: {error}")
        return items, error

    def _events(self, items: list[Item]) -> list[dict[str, Any]]:
        """The events of each record; a record that cannot become events is dead-lettered with the reason."""
        events: list[dict[str, Any]] = []
        for item, raw in items:
            try:
                evs = request_events(item, self.ctx)
            except (ValueError, RecordError, TransitionError) as exc:
                rid = item.get("service_request_id") if isinstance(item, dict) else None
                self.producer.dead(raw, f"open311 {self.ctx.ep.name} request {rid or '?'}: {exc}",
                                   stream=self.producer.names.cases)
                self.rep.dead += 1
                continue
            events.extend(evs)
            self.rep.cases += 1
        return events


def _resume_at(stored: bytes | None, since: datetime | None, now: datetime, ep: Endpoint, tz: ZoneInfo) -> datetime:
    """Where a poll starts: ``since``, else the stored window end less the overlap, else ``backfill_hours`` back."""
    if since is not None:
        return since.astimezone(UTC) if since.tzinfo else since.replace(tzinfo=tz).astimezone(UTC)
    if stored:
        return datetime.fromisoformat(stored.decode()) - timedelta(minutes=ep.overlap_minutes)
    return now - timedelta(hours=ep.backfill_hours)


def poll_once(endpoint_cfg: Endpoint | dict[str, Any], settings: Settings | None = None, r: redis.Redis | None = None,
              now: datetime | None = None, *, since: datetime | None = None, city=None,
              session: requests.Session | None = None, sleep: Callable[[float], Any] = time.sleep) -> PollReport:
    """Pull every window from the stored resume point (or ``since``) up to ``now`` and publish the events.

    Never raises for the source's problems: they are in the report, in FeedHealth and in the dead letters.
    """
    ep = endpoint_of(endpoint_cfg)
    settings = settings or get_settings()
    if r is None:
        r = get_redis(settings)
    now = (now or datetime.now(UTC)).astimezone(UTC)
    ctx = poll_context(ep, settings, city)
    producer = Producer(r, settings, source=ep.source_name)
    health = FeedHealth(r, settings, f"open311:{ep.name}")
    client = Client(ep, session, sleep)
    key = state_key(settings, ep.name)
    rep = PollReport(ep.name)
    pull = _Pull(ctx, client, producer, rep)
    start = _resume_at(r.hget(key, "window_end"), since, now, ep, ctx.tz)

    try:
        _services(client, ctx, r, key, producer, rep, now)
        window = timedelta(hours=ep.window_hours)
        while start < now and rep.windows < ep.max_windows_per_poll:
            end = min(start + window, now)
            events = pull.window(start, end)
            if events:
                producer.cases(events)
                rep.published += len(events)
            rep.windows += 1
            rep.window_end = end.isoformat()
            r.hset(key, mapping={"window_end": rep.window_end, "polled_at": datetime.now(UTC).isoformat()})
            start = end
    except SourceDown as exc:
        rep.error = str(exc)
    finally:
        rep.retried = client.retried
    _tell(health, ep, rep, pull.page_errors)
    return rep


def _tell(health: FeedHealth, ep: Endpoint, rep: PollReport, page_errors: list[str]) -> None:
    """Report the poll's outcome to FeedHealth and the log: source down, unreadable pages, or fine."""
    if rep.error:
        health.failed(rep.error, endpoint=ep.name, fetched=rep.fetched, dead=rep.dead)
        log.error("open311 %s: source down: %s (windows done %d, fetched %d, published %d, dead %d)",
                  ep.name, rep.error, rep.windows, rep.fetched, rep.published, rep.dead)
    elif page_errors:
        health.failed(f"unreadable response: {page_errors[0]}" + (f" (+{len(page_errors) - 1} more)" if len(page_errors) > 1 else ""),
                      endpoint=ep.name, fetched=rep.fetched, dead=rep.dead)
        log.warning("open311 %s: %d unreadable pages; fetched %d, published %d events of %d requests, dead %d, windows %d",
                    ep.name, len(page_errors), rep.fetched, rep.published, rep.cases, rep.dead, rep.windows)
    else:
        health.ok(f"fetched {rep.fetched}, published {rep.published} events, dead {rep.dead}",
                  endpoint=ep.name, window_end=rep.window_end, dead=rep.dead)
        log.info("open311 %s: fetched %d requests in %d windows (%d pages), published %d events of %d requests, dead %d",
                 ep.name, rep.fetched, rep.windows, rep.pages, rep.published, rep.cases, rep.dead)


def enabled_endpoints(settings: Settings | None = None) -> list[Endpoint]:
    return [ep for ep in load_endpoints(settings) if ep.enabled]


def _scheduled_poll(ep: Endpoint, settings: Settings) -> PollReport:
    return poll_once(ep, settings)


def scheduled_polls(settings: Settings | None = None) -> list[tuple[str, float, Callable[[], PollReport]]]:
    """One (job name, interval in seconds, callable) per enabled endpoint, for the scheduler."""
    settings = settings or get_settings()
    return [(f"open311:{ep.name}", ep.poll_seconds, partial(_scheduled_poll, ep, settings)) for ep in enabled_endpoints(settings)]


def run_forever(endpoints: Iterable[Endpoint], settings: Settings | None = None, r: redis.Redis | None = None,
                stop: threading.Event | None = None, since: datetime | None = None) -> None:
    """Poll each endpoint every ``poll_seconds`` until ``stop`` is set. A failing poll is logged, never fatal."""
    endpoints = list(endpoints)
    settings = settings or get_settings()
    stop = stop or threading.Event()
    due = {ep.name: 0.0 for ep in endpoints}
    first = {ep.name: since for ep in endpoints}
    while not stop.is_set():
        for ep in endpoints:
            if stop.is_set():
                break
            if time.monotonic() >= due[ep.name]:
                try:
                    poll_once(ep, settings, r, since=first[ep.name], sleep=stop.wait)
                    first[ep.name] = None
                except Open311ConfigError:
                    raise
                except Exception:
                    log.exception("open311 %s: poll failed", ep.name)
                due[ep.name] = time.monotonic() + ep.poll_seconds
        stop.wait(max(0.2, min(due.values()) - time.monotonic()))
