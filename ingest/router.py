"""The router (智能分拨): registers and dispatches, by the routing rules, each case that arrives without departments.

It reads the cases waiting (reported, of a source Gridwatch routes, no departments, not for the grid worker on the
spot) and publishes, through the case stream, the events a dispatcher would: 立案 ``register``, 派遣 ``dispatch``
to the rule's lead departments and 吹哨 ``whistle`` to those it summons — actor ``gridwatch``, event ids
``auto:…``, the dispatch's note naming the rule. The worker applies them like any other events. A case no rule can
route gets a note ``auto:unrouted`` saying why and waits for a dispatcher (待分拨 on /dispatch).

Event ids are fixed per case, so publishing again (after a restart, or while the worker is behind) changes nothing.
"""

from __future__ import annotations

import logging
import signal
import time
from datetime import UTC, datetime
from typing import Any

from config.calendar import get_calendar
from config.city import City, get_city
from config.routing import load_routing_config, tables_of
from config.settings import Settings, get_settings
from core.routing import auto_events, route
from ingest.route import facts_of
from store import routing_reads
from store.services import get_engine, get_redis
from store.streams import Producer

log = logging.getLogger(__name__)

SOURCE = "gridwatch"  # the stream entries' source
REPUBLISH_S = 60.0  # a case still waiting this long after its events were published gets them again


def case_facts(case: dict[str, Any], city: City, calendar):
    """What routing looks at in a stored case (its report time decides office hours)."""
    at = case["reported_at"]
    return facts_of({"category": case["category"], "grid_code": case["grid_code"], "source": case["source"],
                     "grade": case["grade"], "occurred_at": at.isoformat() if at else None}, city, calendar)


class Router:
    def __init__(self, city: City | None = None, settings: Settings | None = None):
        self.settings = settings or get_settings()
        self.city = city or get_city()
        config = load_routing_config(self.city, self.settings.routing_file)
        self.rules, self.sources = config.rules, config.sources
        self.tables = tables_of(self.city)
        self.calendar = get_calendar(self.settings.holidays_file)
        self.engine = get_engine(self.settings)
        self.producer = Producer(get_redis(self.settings), self.settings, source=SOURCE)
        self.published: dict[int, float] = {}  # case id → when its events were last published
        self._stop = False

    def route_once(self) -> dict[str, int]:
        """One pass over the waiting cases. Returns counts: routed, unrouted (published now), waiting (published
        before, not yet applied), with_dispatcher (unrouted before: in 待分拨)."""
        now_m, now = time.monotonic(), datetime.now(UTC)
        waiting = routing_reads.waiting(self.engine, self.sources)
        ids = {c["id"] for c in waiting}
        self.published = {k: v for k, v in self.published.items() if k in ids}
        counts = {"routed": 0, "unrouted": 0, "waiting": 0, "with_dispatcher": 0}
        out: list[dict[str, Any]] = []
        for case in waiting:
            if case["noted"]:  # 待分拨: said once, now the dispatcher's
                counts["with_dispatcher"] += 1
                continue
            if now_m - self.published.get(case["id"], -REPUBLISH_S) < REPUBLISH_S:
                counts["waiting"] += 1
                continue
            r = route(self.rules, case_facts(case, self.city, self.calendar), self.tables)
            out += auto_events(case["source"], case["external_id"], r, now)
            self.published[case["id"]] = now_m
            counts["routed" if r.routed else "unrouted"] += 1
            if r.routed:
                log.info("case %s (%s/%s): rule %r → %s%s", case["id"], case["source"], case["external_id"], r.rule,
                         ",".join(r.lead), f", summoning {','.join(r.summon)}" if r.summon else "")
            else:
                log.info("case %s (%s/%s): 待分拨 — %s", case["id"], case["source"], case["external_id"],
                         r.why[-1] if r.why else "no rule applies")
        if out:
            self.producer.cases(out)
        return counts

    def run(self, interval: float = 0.5) -> None:
        log.info("router: %d rules, routing cases of %s without departments, every %.1f s", len(self.rules),
                 ", ".join(sorted(self.sources)), interval)
        while not self._stop:
            started = time.monotonic()
            try:
                self.route_once()
            except Exception as exc:  # noqa: BLE001 - a store away: say so, try again next pass
                log.warning("router pass failed (%s: %s); retrying", type(exc).__name__, exc)
            time.sleep(max(0.0, interval - (time.monotonic() - started)))

    def stop(self, *_args) -> None:
        self._stop = True


def add_router_arguments(p) -> None:
    p.add_argument("--interval", type=float, default=0.5, help="seconds between passes (default 0.5)")
    p.add_argument("--once", action="store_true", help="one pass, print what it did, exit")


def main_router(args) -> int:
    router = Router()
    if args.once:
        print(router.route_once())
        return 0
    signal.signal(signal.SIGTERM, router.stop)
    signal.signal(signal.SIGINT, router.stop)
    router.run(args.interval)
    return 0
