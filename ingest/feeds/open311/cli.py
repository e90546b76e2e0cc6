"""``python -m ingest open311``: its arguments and what it runs."""

from __future__ import annotations

import argparse
import signal
import threading
from datetime import datetime

import orjson

from config.settings import get_settings
from ingest.feeds.open311.endpoints import Open311ConfigError, endpoint_of, load_endpoints
from ingest.feeds.open311.poller import poll_context, poll_once, run_forever


def _iso(value: str) -> datetime:
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r} (e.g. 2026-11-01T00:00:00+08:00)") from None
    return t


def add_open311_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Pull Open311 GeoReport v2 service requests (config/feeds.yaml, 'open311:' list) in time windows "
                     "and pages, and publish them as case events. Resumes from the last completed window stored in Redis.")
    p.add_argument("--endpoint", metavar="NAME", help="poll only this endpoint (also one marked enabled: false)")
    p.add_argument("--once", action="store_true", help="poll once, print a JSON report per endpoint, and exit")
    p.add_argument("--since", type=_iso, metavar="ISO", help="start at this time instead of the stored window")
    p.add_argument("--base-url", metavar="URL", help="poll this endpoint instead of the configured ones (needs --mapping)")
    p.add_argument("--mapping", metavar="FILE", help="mapping file for --base-url (e.g. config/mappings/open311_chicago.yaml)")
    p.add_argument("--format", choices=("json", "xml"), default="json", help="response format for --base-url (default json)")
    p.add_argument("--feeds", metavar="FILE", help="feeds file (default: FEEDS_FILE, config/feeds.yaml)")


def main_open311(args: argparse.Namespace) -> int:
    settings = get_settings()
    try:
        if args.base_url:
            if not args.mapping:
                print("--base-url needs --mapping FILE (e.g. config/mappings/open311_chicago.yaml)")
                return 2
            endpoints = [endpoint_of({"name": args.endpoint or "adhoc", "base_url": args.base_url,
                                      "mapping": args.mapping, "format": args.format}, "--base-url")]
        else:
            configured = load_endpoints(settings, args.feeds)
            if args.endpoint:
                endpoints = [ep for ep in configured if ep.name == args.endpoint]
                if not endpoints:
                    print(f"no endpoint {args.endpoint!r} in the feeds file; configured: "
                          f"{', '.join(ep.name for ep in configured) or 'none'}")
                    return 2
            else:
                endpoints = [ep for ep in configured if ep.enabled]
                if not endpoints:
                    print("no enabled Open311 endpoint in the feeds file (set enabled: true, or name one with --endpoint)")
                    return 2
        for ep in endpoints:  # fail early on a broken mapping
            poll_context(ep, settings)
    except Open311ConfigError as exc:
        print(f"configuration error: {exc}")
        return 2
    if args.once:
        worst = 0
        for ep in endpoints:
            rep = poll_once(ep, settings, since=args.since)
            print(orjson.dumps(rep.as_dict()).decode())
            worst = worst or (0 if rep.ok else 1)
        return worst
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    run_forever(endpoints, settings, stop=stop, since=args.since)
    return 0
