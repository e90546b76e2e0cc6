"""Command line: ``python -m ingest {worker,scheduler,simulate,demo,dead}``. Each has --help."""

from __future__ import annotations

import argparse
import logging
import sys


def _logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    # Routine chatter of libraries: every migration plugin, every scheduled job run.
    for noisy in ("alembic.runtime.plugins", "apscheduler.executors.default", "apscheduler.scheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def cmd_worker(args) -> int:
    from config.city import get_city
    from config.services import migrate
    from ingest.worker import Worker

    migrate()
    w = Worker(get_city(), name=args.name)
    w.install_signal_handlers()
    w.run()
    return 0


def cmd_scheduler(args) -> int:
    from ingest.scheduler import run

    run()
    return 0


def cmd_simulate(args) -> int:
    from ingest.feeds.simulator import main

    return main(args)


def cmd_demo(args) -> int:
    from ingest.supervisor import run

    return run(args)


def cmd_dead(args) -> int:
    import orjson

    from config.services import get_redis
    from ingest.streams import read_dead

    for row in read_dead(get_redis(), count=args.count):
        raw = row["raw"]
        if len(raw) > args.width:
            raw = raw[: args.width] + f"… ({row.get('size')} bytes)"
        print(orjson.dumps({k: row.get(k) for k in ("id", "at", "stream", "source", "reason")}).decode(), raw, sep="\n  ")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ingest", description="Gridwatch ingest: workers, scheduler, feeds.")
    p.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING")
    sub = p.add_subparsers(dest="command", required=True)

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

    from ingest.feeds.simulator import add_arguments

    sim = sub.add_parser("simulate", help="publish a believable live city (cases and sensors)",
                         description="Publish simulated cases and sensor readings to the streams.")
    add_arguments(sim)
    sim.set_defaults(func=cmd_simulate)

    import importlib

    for name, module, help_text in (
        ("import", "spreadsheet", "import a CSV or XLSX export through a YAML mapping"),
        ("replay", "replay", "play back an export or a stored period at N× speed, re-timed to now"),
        ("export", "replay", "export a stored period as canonical records (JSON lines) for replay"),
        ("open311", "open311", "pull an Open311 GeoReport v2 endpoint (once, or every N seconds)"),
        ("mqtt", "mqtt", "subscribe to sensor readings over MQTT"),
    ):
        try:
            feed = importlib.import_module(f"ingest.feeds.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"ingest.feeds.{module}":
                raise
            continue  # not built yet
        sp = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        add = getattr(feed, f"add_{name}_arguments", None) or feed.add_arguments
        add(sp)
        sp.set_defaults(func=getattr(feed, f"main_{name}", None) or feed.main)

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

    dl = sub.add_parser("dead", help="show the newest dead letters", description="Print the newest dead letters with their reasons.")
    dl.add_argument("--count", type=int, default=20, help="how many (default 20)")
    dl.add_argument("--width", type=int, default=300, help="characters of raw payload to show (default 300)")
    dl.set_defaults(func=cmd_dead)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from config.settings import get_settings

    _logging(args.log_level or get_settings().log_level)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
