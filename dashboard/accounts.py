"""Users and their passwords (argon2id, lockouts), sessions (Redis) and the wall's kiosk links: what logging in
checks and keeps. Why it works this way: docs/decisions/0009-logins-and-the-gate.md."""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import orjson
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import insert, select, update

from core import access
from dashboard.viewers import Viewer
from store.schema import ScreenLink, User

SESSION_HOURS = 12
LOCK_AFTER = 5  # failed logins in a row lock the user …
LOCK_MINUTES = 15  # … for this long
ADDRESS_TRIES = 20  # login attempts one address may make …
ADDRESS_WINDOW_S = 600  # … in this many seconds
MIN_PASSWORD = 10
USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{2,64}$")


class AuthError(ValueError):
    """A request to change users that cannot be done (bad name, role, area or password): the message says why."""


# --------------------------------------------------------------------------- users


def _hasher() -> PasswordHasher:
    return PasswordHasher()  # argon2id with the library's current recommended parameters


def _check_user(city, username: str, role: str, area: str) -> None:
    if not USERNAME_RE.match(username or ""):
        raise AuthError(f"name: {username[:70]!r} is not a user name; use 2–64 letters, digits or . _ @ -")
    if role not in access.ROLES:
        raise AuthError(f"role: unknown role {role!r}; use one of: {', '.join(access.ROLES)}")
    if city.geography.get(area) is None:
        raise AuthError(f"area: no area with code {area[:32]!r}; the district is {city.geography.district.code}")


def _check_password(password: str) -> None:
    if len(password or "") < MIN_PASSWORD:
        raise AuthError(f"password: at least {MIN_PASSWORD} characters")


def create_user(engine, city, username: str, password: str, role: str, area: str) -> None:
    """Add a user; AuthError if the name is taken or anything is malformed."""
    _check_user(city, username, role, area)
    _check_password(password)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        if conn.execute(select(User.id).where(User.username == username)).first():
            raise AuthError(f"name: a user {username!r} exists already; pick another name or change theirs (passwd)")
        conn.execute(insert(User).values(username=username, password_hash=_hasher().hash(password), role=role,
                                         area_code=area, disabled=False, failed_logins=0, created_at=now,
                                         updated_at=now))


def _row(conn, q):
    """The first row of a select on a table, with its columns as attributes (or None)."""
    found = conn.execute(q).mappings().first()
    return None if found is None else SimpleNamespace(**found)


def _user(conn, username: str):
    return _row(conn, select(User.__table__).where(User.username == username))


def user_exists(engine, username: str) -> bool:
    with engine.connect() as conn:
        return _user(conn, username) is not None


def set_disabled(engine, r, settings, username: str, disabled: bool) -> None:
    """Disable (ending every session of theirs at once) or enable a user."""
    with engine.begin() as conn:
        u = _user(conn, username)
        if u is None:
            raise AuthError(f"name: no user {username!r}")
        conn.execute(update(User).where(User.id == u.id).values(
            disabled=disabled, failed_logins=0, locked_until=None, updated_at=datetime.now(UTC)))
    if disabled:
        end_sessions_of(r, settings, u.id)
    else:
        _unlock(r, settings, username)


def set_password(engine, r, settings, username: str, password: str) -> None:
    """A new password (ending every session of theirs); unlocks the user."""
    _check_password(password)
    with engine.begin() as conn:
        u = _user(conn, username)
        if u is None:
            raise AuthError(f"name: no user {username!r}")
        conn.execute(update(User).where(User.id == u.id).values(
            password_hash=_hasher().hash(password), failed_logins=0, locked_until=None, updated_at=datetime.now(UTC)))
    end_sessions_of(r, settings, u.id)
    _unlock(r, settings, username)


def list_users(engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(User.username, User.role, User.area_code, User.disabled, User.locked_until,
                                   User.created_at).order_by(User.username)).all()
    return [dict(r._mapping) for r in rows]


_DUMMY_HASH: list[str] = []  # an argon2id hash of nothing anyone types: verified for unknown names (same work)


def _verify(password_hash: str | None, password: str) -> bool:
    """One argon2 verify, whatever is asked: of the user's hash, or of a stand-in for an unknown name."""
    if password_hash is None:
        if not _DUMMY_HASH:
            _DUMMY_HASH.append(_hasher().hash(secrets.token_urlsafe(24)))
        password_hash = _DUMMY_HASH[0]
    try:
        return _hasher().verify(password_hash, password or "")
    except (VerificationError, InvalidHashError):
        return False


def _fail_key(settings, username: str, addr: str | None) -> str:
    return settings.key("auth", "fail", username, addr or "-")  # a valid user name holds no ':' nor a glob character


def locks(r, settings, username: str) -> int:
    """From how many addresses ``username`` is locked out now."""
    keys = list(r.scan_iter(settings.key("auth", "fail", username) + ":*", count=1000))
    return sum(1 for n in (r.mget(keys) if keys else []) if n is not None and int(n) >= LOCK_AFTER)


def _unlock(r, settings, username: str) -> None:
    keys = list(r.scan_iter(settings.key("auth", "fail", username) + ":*", count=1000))
    if keys:
        r.delete(*keys)


def authenticate(engine, r, settings, username: str, password: str,
                 addr: str | None = None) -> tuple[Viewer | None, str]:
    """(the viewer, "ok") for a good login; (None, reason) otherwise — "unknown", "wrong", "locked", "disabled".
    LOCK_AFTER wrong passwords from one address lock the user out from that address (``addr``) only, for
    LOCK_MINUTES (Redis): nobody elsewhere can lock a user out. Every way runs exactly one argon2 verify, and the
    caller gives the same answer whatever the reason, so neither the answer nor its time tells which names exist."""
    with engine.connect() as conn:
        u = _user(conn, username) if USERNAME_RE.match(username or "") else None
    good = _verify(u.password_hash if u is not None else None, password)
    if u is None:
        return None, "unknown"
    key = _fail_key(settings, u.username, addr)
    failed = int(r.get(key) or 0)
    if failed >= LOCK_AFTER:
        return None, "locked"
    if u.disabled:
        return None, "disabled"
    if not good:
        pipe = r.pipeline()
        pipe.incr(key)
        pipe.expire(key, LOCK_MINUTES * 60)  # in a row: a failure within LOCK_MINUTES of the last one counts on
        failed = pipe.execute()[0]
        return None, "locked" if failed >= LOCK_AFTER else "wrong"
    r.delete(key)
    return Viewer(u.username, u.role, u.area_code, u.id), "ok"


def address_allowed(r, settings, addr: str | None) -> bool:
    """Count a password login attempt from ``addr``; False once it has made ADDRESS_TRIES in the window. (A wall's
    kiosk link is neither counted nor refused here: behind a NAT, everyone's guesses would block the wall.)"""
    key = settings.key("auth", "tries", addr or "-")
    n = r.incr(key)
    if n == 1:
        r.expire(key, ADDRESS_WINDOW_S)
    return n <= ADDRESS_TRIES


# --------------------------------------------------------------------------- sessions (Redis)


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_session(r, settings, v: Viewer) -> tuple[str, str]:
    """A session for ``v``: (the cookie's token, its CSRF token)."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
    key = settings.key("session", _sha(token))
    pipe = r.pipeline()
    pipe.set(key, orjson.dumps({"u": v.username, "r": v.role, "a": v.area, "i": v.user_id, "c": csrf}),
             ex=SESSION_HOURS * 3600)
    if v.user_id is not None:
        pipe.sadd(settings.key("sessions", str(v.user_id)), key)
        pipe.expire(settings.key("sessions", str(v.user_id)), SESSION_HOURS * 3600)
    pipe.execute()
    return token, csrf


def load_session(r, settings, token: str | None) -> tuple[Viewer, str] | None:
    """(the viewer, the CSRF token) of a live session, its life extended; None for no, an ended or a forged token."""
    if not token or len(token) > 100:
        return None
    key = settings.key("session", _sha(token))
    raw = r.getex(key, ex=SESSION_HOURS * 3600)  # read and extend in one round trip (every request passes here)
    if raw is None:
        return None
    d = orjson.loads(raw)
    return Viewer(d["u"], d["r"], d["a"], d.get("i")), d["c"]


def end_session(r, settings, token: str | None) -> None:
    if token and len(token) <= 100:
        r.delete(settings.key("session", _sha(token)))


def end_sessions_of(r, settings, user_id: int) -> None:
    keys = r.smembers(settings.key("sessions", str(user_id)))
    if keys:
        r.delete(*keys)
    r.delete(settings.key("sessions", str(user_id)))


# --------------------------------------------------------------------------- screen links


def create_screen_link(engine, city, label: str, area: str | None = None) -> str:
    """A new kiosk token for the wall of ``area`` (default the district); only its hash is stored. Returns the token."""
    area = area or city.geography.district.code
    if city.geography.get(area) is None:
        raise AuthError(f"area: no area with code {area[:32]!r}")
    token = secrets.token_urlsafe(32)
    with engine.begin() as conn:
        conn.execute(insert(ScreenLink).values(token_sha256=_sha(token), label=label[:64], area_code=area,
                                               revoked=False, created_at=datetime.now(UTC)))
    return token


def revoke_screen_links(engine, label: str) -> int:
    with engine.begin() as conn:
        return conn.execute(update(ScreenLink).where(ScreenLink.label == label).values(revoked=True)).rowcount


def screen_viewer(engine, token: str) -> Viewer | None:
    if not token or len(token) > 100:
        return None
    with engine.connect() as conn:
        row = _row(conn, select(ScreenLink.__table__).where(ScreenLink.token_sha256 == _sha(token)))
    if row is None or row.revoked:
        return None
    return Viewer(f"screen:{row.label}", "screen", row.area_code)
