"""Command line: ``python -m ingest {worker,scheduler,simulate,demo,dead,rebuild-live,route,…}``. Each has --help."""

from __future__ import annotations

import argparse
import collections
import logging
import sys
import time

import orjson

from config.city import get_city
from config.settings import get_settings
from ingest import notify, rebuild, redrive, route, router, scheduler, supervisor
from ingest.feeds import mqtt, open311, replay, simulator, spreadsheet
from ingest.worker import Worker
from store.services import get_engine, get_redis, migrate
from store.streams import masked_letter, read_dead


def _logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    # Routine chatter of libraries: every migration plugin, every scheduled job run.
    for noisy in ("alembic.runtime.plugins", "apscheduler.executors.default", "apscheduler.scheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def cmd_worker(args) -> int:
    migrate()
    w = Worker(get_city(), name=args.name)
    w.install_signal_handlers()
    w.run()
    return 0


def cmd_scheduler(args) -> int:
    scheduler.run()
    return 0


def cmd_simulate(args) -> int:
    return simulator.main(args)


def cmd_demo(args) -> int:
    return supervisor.run(args)


def cmd_dead(args) -> int:
    if args.redrive or args.dry_run:
        return cmd_redrive(args)
    filtered = any(v is not None for v in (args.reason, args.since, args.stream, args.source))
    if filtered:
        try:
            sel = _selection(args)
        except ValueError as exc:
            print(exc, file=sys.stderr)
            return 2
        newest = collections.deque(redrive.select(get_redis(), get_settings(), sel), maxlen=args.count)
        rows = [{**row, "id": row_id, "raw": row["raw"].decode("utf-8", "replace")} for row_id, row in reversed(newest)]
    else:
        rows = read_dead(get_redis(), count=args.count)
    if not args.show_personal:  # what a reader sees is masked; the stored letters stay whole
        own = (get_city().county_code,)
        rows = [masked_letter(row, own) for row in rows]
    for row in rows:
        raw = row["raw"]
        if len(raw) > args.width:
            raw = raw[: args.width] + f"… ({row.get('size')} bytes)"
        print(orjson.dumps({k: row.get(k) for k in ("id", "at", "stream", "source", "reason")}).decode(), raw, sep="\n  ")
    return 0


def _selection(args):
    return redrive.Selection(reason=args.reason, since=redrive.parse_since(args.since) if args.since else None, stream=args.stream,
                     source=args.source, limit=args.limit)


def cmd_redrive(args) -> int:
    try:
        sel = _selection(args)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    city = get_city()
    mapping = None
    if args.mapping:
        try:
            mapping = spreadsheet.load_mapping(args.mapping, city)
        except spreadsheet.MappingError as exc:
            print(exc, file=sys.stderr)
            return 2
    try:
        report = redrive.redrive(get_redis(), get_settings(), city, sel, dry_run=args.dry_run, mapping=mapping,
                                 progress=redrive.progress_line)
    except redrive.Busy as exc:
        print(f"redrive: {exc}", file=sys.stderr)
        return 1
    print(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode() if args.json else report.text())
    return 0


def cmd_rebuild_live(args) -> int:
    settings = get_settings()
    r = get_redis(settings)
    prefix = settings.stream_prefix
    if args.here:
        migrate()

        def progress(done: int, total: int) -> None:
            print(f"\r  {done:,} of {total:,} cases", end="", file=sys.stderr, flush=True)

        report = rebuild.rebuild_live(get_engine(settings), r, prefix, get_city().county_code, progress)
        print(file=sys.stderr)
        print(orjson.dumps(report).decode())
        return 0
    r.delete(rebuild.progress_key(prefix))
    r.set(rebuild.request_key(prefix), "1")
    print("asked the worker to rebuild the live state from SQL (between two of its batches)…", file=sys.stderr)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        raw = r.get(rebuild.progress_key(prefix))
        state = orjson.loads(raw) if raw else {}
        if state.get("finished"):
            print(file=sys.stderr)
            print(orjson.dumps(state).decode())
            return 0
        if state:
            print(f"\r  {state.get('done', 0):,} of {state.get('total', 0):,} cases", end="", file=sys.stderr,
                  flush=True)
        time.sleep(0.5)
    print(f"\nno worker answered within {args.timeout:g} s: is one running (python -m ingest worker)? Without a "
          "worker, rebuild here with --here", file=sys.stderr)
    return 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ingest", description="Gridwatch ingest: workers, scheduler, feeds.")
    p.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING")
    sub = p.add_subparsers(dest="command", required=True)
    _processes(sub)
    _feeds(sub)
    _demo(sub)
    _rebuild_live(sub)
    _dead(sub)
    _route(sub)
    return p


def _processes(sub) -> None:
    w = sub.add_parser("worker", help="apply the streams to the store and live state (one consumer of the group)",
                       description="Read cases and sensor readings from the Redis streams as one consumer of the group, "
                                   "apply them to SQL and the live state, acknowledge. A second worker is a hot standby: it reclaims the "
                                   "entries a dead worker left pending.")
    w.add_argument("--name", default=None, help="consumer name, stable across restarts (default: WORKER_NAME, else "
                                                "<host>-worker); give each worker on one host its own")
    w.set_defaults(func=cmd_worker)

    s = sub.add_parser("scheduler", help="run periodic jobs (SLA sweep, device watch, feed polls)",
                       description="Run the periodic jobs: SLA sweep (30 s), device watch (60 s), Open311 polls. Run exactly one, as its own process.")
    s.set_defaults(func=cmd_scheduler)

    help_text = ("route each case that arrives without departments (智能分拨): register and dispatch it by "
                 "config/routing.yaml, or leave it for a dispatcher (待分拨)")
    rt = sub.add_parser("router", help=help_text, description=help_text[0].upper() + help_text[1:] + ". Run one.")
    router.add_router_arguments(rt)
    rt.set_defaults(func=router.main_router)


# (command, feed module, help): each module gives add_<command>_arguments or add_arguments, main_<command> or main
FEEDS = (
    ("import", spreadsheet, "import a CSV or XLSX export through a YAML mapping"),
    ("replay", replay, "play back an export or a stored period at N× speed, re-timed to now"),
    ("export", replay, "export a stored period as canonical records (JSON lines) for replay"),
    ("open311", open311, "pull an Open311 GeoReport v2 endpoint (once, or every N seconds)"),
    ("mqtt", mqtt, "subscribe to sensor readings over MQTT"),
    ("notify", notify, "deliver notifications (config/notify.yaml): find triggers, send, retry, rate-limit"),
)


def _feeds(sub) -> None:
    sim = sub.add_parser("simulate", help="publish a believable live city (cases and sensors)",
                         description="Publish simulated cases and sensor readings to the streams.")
    simulator.add_arguments(sim)
    sim.set_defaults(func=cmd_simulate)
    for name, feed, help_text in FEEDS:
        sp = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        add = getattr(feed, f"add_{name}_arguments", None) or feed.add_arguments
        add(sp)
        sp.set_defaults(func=getattr(feed, f"main_{name}", None) or feed.main)


def _demo(sub) -> None:
    d = sub.add_parser("demo", help="run the whole system: embedded Redis, worker, scheduler, simulator, web",
                       description="Run everything in the foreground. Ctrl-C stops every part cleanly.")
    d.add_argument("--rate", type=float, default=2.0, help="simulated cases per second of simulated time (default 2)")
    d.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second (default 1)")
    d.add_argument("--web-workers", type=int, default=2, help="gunicorn worker processes (default 2)")
    d.add_argument("--no-simulator", action="store_true", help="start without the simulator")
    d.add_argument("--backfill", type=float, default=2.0,
                   help="hours of simulated history to publish first when the store is empty (default 2; 0 for none)")
    d.add_argument("--access-log", action="store_true", help="print web access logs")
    d.set_defaults(func=cmd_demo)


def _rebuild_live(sub) -> None:
    rl = sub.add_parser("rebuild-live", help="rebuild the live state (counters, recent reports, alarms) from SQL",
                        description="Rebuild the live state in Redis (every area's counters, the recent reports and "
                                    "the open alarms) from SQL, the store of record. By default the running worker "
                                    "does it between two batches, so nothing is applied meanwhile, and this command "
                                    "shows its progress; the worker also does it by itself when it finds the live "
                                    "state missing or behind. Devices' last readings and risk levels come back with "
                                    "the next readings and risk sweep.")
    rl.add_argument("--here", action="store_true", help="rebuild in this process (only when no worker runs)")
    rl.add_argument("--timeout", type=float, default=600, help="seconds to wait for the worker (default 600)")
    rl.set_defaults(func=cmd_rebuild_live)


def _dead(sub) -> None:
    dl = sub.add_parser(
        "dead", help="show the newest dead letters, or re-drive them (--redrive)",
        description="Print the newest dead letters with their reasons (filtered by --reason/--since/--stream/--source "
                    "when given; personal data in them masked unless --show-personal), or with --redrive "
                    "re-validate the selected ones (oldest first) against today's configuration and re-publish what "
                    "now validates to the stream it came from.",
        epilog="Re-drive: a re-published letter is deleted from the dead-letter stream in the same MULTI/EXEC, so "
               "running it twice re-publishes nothing twice (and events are idempotent by (source, external_id, "
               "event_id) anyway). What still fails stays, reported with its reason today; what must never be "
               "re-driven (MQTT readings refused for their token, payloads cut short, letters without a stream, "
               "spreadsheet rows without --mapping, Open311 requests, replay lines, whole push bodies) is skipped with why. "
               "Restart the worker after changing config/ and before re-driving: it validates with the configuration "
               "it started with.")
    dl.add_argument("--count", type=int, default=20, help="how many to list (default 20)")
    dl.add_argument("--width", type=int, default=300, help="characters of raw payload to show (default 300)")
    dl.add_argument("--show-personal", action="store_true",
                    help="print raw payloads and reasons whole; by default the phone, ID and bank card numbers and "
                         "e-mail addresses in them are masked (the stored letters always stay whole)")
    dl.add_argument("--redrive", action="store_true", help="re-validate the selected letters and re-publish what applies")
    dl.add_argument("--dry-run", action="store_true", help="show what --redrive would do (implies it), change nothing")
    dl.add_argument("--reason", metavar="REGEX",
                    help="letters whose reason matches this Python regular expression, searched anywhere in the "
                         "reason and case-insensitively (a plain word is a substring match), e.g. 'unknown category'")
    dl.add_argument("--since", metavar="TIME",
                    help="letters dead-lettered at or after TIME: ISO 8601 (no zone: Asia/Shanghai) or a duration "
                         "back from now such as 30m, 2h, 7d")
    dl.add_argument("--stream", help="letters of one stream: cases, sensors, bulk (or a stream's full name)")
    dl.add_argument("--source", help="letters of one source (exactly, e.g. push, mqtt, simulator)")
    dl.add_argument("--limit", type=int, help="select at most this many letters (oldest first)")
    dl.add_argument("--mapping", metavar="M.yaml",
                    help="with --redrive: map spreadsheet rows again with this (fixed) import mapping; select one "
                         "file's rows with --stream import:FILE (without it, spreadsheet rows are skipped)")
    dl.add_argument("--json", action="store_true", help="with --redrive: print the summary as JSON")
    dl.set_defaults(func=cmd_dead)


def _route(sub) -> None:
    help_text = "show which routing rule (智能分拨) fires for each case record, and why the ones before it did not"
    rt = sub.add_parser("route", help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
    route.add_route_arguments(rt)
    rt.set_defaults(func=route.main_route)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _logging(args.log_level or get_settings().log_level)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
