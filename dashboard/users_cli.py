"""The users command line (``python -m dashboard.auth``): users, the wall's kiosk links, the demo's accounts and the
audit log.

    python -m dashboard.auth add NAME --role leader --area 440311001 [--password …]   (and: disable, enable, passwd,
    list, screen-link, revoke-link, demo, audit) — see --help.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import sys
from dataclasses import dataclass

import orjson
from sqlalchemy import select
from sqlalchemy.engine import Engine

from config.city import City, load_city
from config.settings import Settings, get_settings
from core import access
from dashboard.accounts import (
    MIN_PASSWORD,
    AuthError,
    create_screen_link,
    create_user,
    list_users,
    locks,
    revoke_screen_links,
    set_disabled,
    set_password,
    user_exists,
)
from dashboard.viewers import Viewer, audit
from store.schema import AuditEntry
from store.services import get_engine, get_redis, migrate

DEMO_WALL = "demo-wall"


def demo_accounts(engine, r, settings, city, base: str) -> str:
    """The demo's accounts — an administrator, a dispatcher and a leader for the district, a leader for the first
    street — made or given new random passwords, and a new wall link (the old demo link revoked): printable text."""
    geo = city.geography
    street = geo.areas("street")[0]
    wanted = [("admin", "admin", geo.district), ("dispatcher", "dispatcher", geo.district),
              ("leader", "leader", geo.district), ("street-leader", "leader", street)]
    lines = ["demo accounts (new passwords at every start; log in at " + base.rstrip("/") + "/login):"]
    for name, role, area in wanted:
        password = secrets.token_urlsafe(9)
        if user_exists(engine, name):
            set_password(engine, r, settings, name, password)
            set_disabled(engine, r, settings, name, False)
        else:
            create_user(engine, city, name, password, role, area.code)
        lines.append(f"  {name:<14} {password:<14} {role:<11} {area.name} ({area.code})")
    revoke_screen_links(engine, DEMO_WALL)
    token = create_screen_link(engine, city, DEMO_WALL)
    lines.append(f"wall (kiosk link, read-only): {base.rstrip('/')}/s/{token}")
    audit("demo_accounts", None, {"users": [w[0] for w in wanted]}, who=Viewer("demo", "admin", geo.district.code),
          engine=engine)
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line


@dataclass(frozen=True)
class _Env:
    """What every command works with: the settings, the database, the city, and the command line as the actor."""

    settings: Settings
    engine: Engine
    city: City
    who: Viewer


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m dashboard.auth", description="Manage users, wall links and the audit log.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("add", help="add a user")
    a.add_argument("name")
    a.add_argument("--role", required=True, choices=access.ROLES)
    a.add_argument("--area", help="the jurisdiction's area code (default: the district)")
    a.add_argument("--password", help=f"at least {MIN_PASSWORD} characters (default: a random one, printed)")
    for cmd, text in (("disable", "disable a user and end their sessions"), ("enable", "enable a user")):
        sub.add_parser(cmd, help=text).add_argument("name")
    pw = sub.add_parser("passwd", help="set a user's password (ends their sessions, unlocks them)")
    pw.add_argument("name")
    pw.add_argument("--password", help="default: a random one, printed")
    sub.add_parser("list", help="list the users")
    sl = sub.add_parser("screen-link", help="make a kiosk link for the wall (printed once; only its hash is kept)")
    sl.add_argument("label")
    sl.add_argument("--area", help="default: the district")
    sl.add_argument("--base", default="http://127.0.0.1:8050", help="the site's address, for the printed link")
    rv = sub.add_parser("revoke-link", help="revoke the wall links with this label")
    rv.add_argument("label")
    dm = sub.add_parser("demo", help="(make demo) make or reset the demo accounts with new passwords and a new wall "
                                     "link, and print them")
    dm.add_argument("--base", default="http://127.0.0.1:8050", help="the site's address, for the printed link")
    au = sub.add_parser("audit", help="print the latest audit entries")
    au.add_argument("--limit", type=int, default=50)
    return ap


def _add(args, env: _Env) -> None:
    password = args.password or secrets.token_urlsafe(12)
    area = args.area or env.city.geography.district.code
    create_user(env.engine, env.city, args.name, password, args.role, area)
    audit("user_add", args.name, {"role": args.role, "area": area}, who=env.who, engine=env.engine)
    print(f"user {args.name} ({args.role}, {area}) added" + ("" if args.password else f"; password: {password}"))


def _disable_or_enable(args, env: _Env) -> None:
    set_disabled(env.engine, get_redis(env.settings), env.settings, args.name, args.cmd == "disable")
    audit(f"user_{args.cmd}", args.name, who=env.who, engine=env.engine)
    print(f"user {args.name} {args.cmd}d")


def _passwd(args, env: _Env) -> None:
    password = args.password or secrets.token_urlsafe(12)
    set_password(env.engine, get_redis(env.settings), env.settings, args.name, password)
    audit("user_passwd", args.name, who=env.who, engine=env.engine)
    print(f"password of {args.name} changed" + ("" if args.password else f": {password}"))


def _list(args, env: _Env) -> None:
    r = get_redis(env.settings)
    for u in list_users(env.engine):
        n = 0 if u["disabled"] else locks(r, env.settings, u["username"])
        state = "disabled" if u["disabled"] else f"locked ({n} address(es))" if n else "active"
        print(f"{u['username']:<24} {u['role']:<11} {u['area_code']:<16} {state}")


def _screen_link(args, env: _Env) -> None:
    token = create_screen_link(env.engine, env.city, args.label, args.area)
    audit("screen_link_add", args.label, {"area": args.area or env.city.geography.district.code}, who=env.who,
          engine=env.engine)
    print(f"{args.base.rstrip('/')}/s/{token}")


def _revoke_link(args, env: _Env) -> None:
    n = revoke_screen_links(env.engine, args.label)
    audit("screen_link_revoke", args.label, {"links": n}, who=env.who, engine=env.engine)
    print(f"{n} link(s) revoked")


def _demo(args, env: _Env) -> None:
    print(demo_accounts(env.engine, get_redis(env.settings), env.settings, env.city, args.base))


def _audit(args, env: _Env) -> None:
    with env.engine.connect() as conn:
        rows = conn.execute(select(AuditEntry.__table__).order_by(AuditEntry.id.desc())
                            .limit(max(1, args.limit))).mappings().all()
        for row in rows:
            e = argparse.Namespace(**row)
            print(f"{e.at:%Y-%m-%d %H:%M:%S} {'ok  ' if e.ok else 'FAIL'} {e.username or '-':<16} "
                  f"{e.action:<18} {e.target or ''} {e.address or ''} {orjson.dumps(e.detail).decode() if e.detail else ''}")


COMMANDS = {"add": _add, "disable": _disable_or_enable, "enable": _disable_or_enable, "passwd": _passwd,
            "list": _list, "screen-link": _screen_link, "revoke-link": _revoke_link, "demo": _demo, "audit": _audit}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    engine = get_engine(settings)
    migrate(engine)
    city = load_city(settings.city_dir)
    env = _Env(settings, engine, city, Viewer("cli", "admin", city.geography.district.code))
    try:
        COMMANDS[args.cmd](args, env)
    except AuthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
