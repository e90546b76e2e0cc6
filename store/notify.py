"""Notifications' I/O: the delivery log (SQL ``notifications``), the reads that find triggers, and the small state
the delivery job keeps in Redis (its cursors, the areas it last saw red, each channel's health).

Redis keys (``P`` the deployment prefix): ``P:notify:cursor`` hash (``events`` / ``alarms`` → the last id read),
``P:notify:red`` set (area codes red at the last look), ``P:notify:channels`` hash (channel → JSON health: ok,
failures, error (masked), at), ``P:notify:lock`` (one delivery pass at a time).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import redis
from sqlalchemy import (
    BigInteger,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    and_,
    func,
    inspect,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, mapped_column

from core.routing import UNROUTED_KEY
from store.schema import Base, BigId, Case, CaseAssignment, CaseEvent, Device, SensorAlarm, UTCDateTime
from store.writes import insert_ignoring

STATUSES = ("queued", "sent", "failed", "folded")
EVENT_ACTIONS = ("overdue", "escalate", "supervise")


class Notification(Base):
    """One message to one channel. (key, channel) is unique: a trigger found again reaches each channel once."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("key", "channel", name="uq_notifications_key_channel"),
        Index("ix_notifications_channel_status", "channel", "status", "next_at"),
        Index("ix_notifications_channel_attempted", "channel", "attempted_at"),
        Index("ix_notifications_created", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(200))  # the trigger's: reason and case or area
    rule: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str] = mapped_column(String(24))
    channel: Mapped[str] = mapped_column(String(100))
    target: Mapped[str] = mapped_column(String(300))  # where it went, secrets masked
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    case_id: Mapped[int | None] = mapped_column(BigInteger)
    area_code: Mapped[str | None] = mapped_column(String(15))  # the jurisdiction a reader needs to see it
    status: Mapped[str] = mapped_column(String(8))  # queued | sent | failed | folded (into a summary)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)  # masked
    next_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # the next try; None: sent, folded or given up
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attempted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


N = Notification.__table__


@dataclass(frozen=True)
class NotifyKeys:
    prefix: str

    @property
    def cursor(self) -> str:
        return f"{self.prefix}:notify:cursor"

    @property
    def red(self) -> str:
        return f"{self.prefix}:notify:red"

    @property
    def channels(self) -> str:
        return f"{self.prefix}:notify:channels"

    @property
    def lock(self) -> str:
        return f"{self.prefix}:notify:lock"


# --------------------------------------------------------------------------- the log


def queue(engine: Engine, rows: Sequence[dict[str, Any]]) -> int:
    """Log new messages as queued; one whose (key, channel) is there already is left as it is. Returns how many
    were new."""
    new = 0
    with engine.begin() as conn:
        for i in range(0, len(rows), 500):
            chunk = list(rows[i : i + 500])
            there = {(k, c) for k, c in conn.execute(select(N.c.key, N.c.channel).where(
                N.c.key.in_({r["key"] for r in chunk})))}
            new += len({(r["key"], r["channel"]) for r in chunk} - there)
            conn.execute(insert_ignoring(conn, N).on_conflict_do_nothing(index_elements=["key", "channel"]), chunk)
    return new


def due(engine: Engine, channel: str, now: datetime, limit: int) -> list[Any]:
    """The channel's messages waiting to be (re)tried now, oldest first."""
    with engine.connect() as conn:
        return conn.execute(select(N.c.id, N.c.key, N.c.reason, N.c.subject, N.c.body, N.c.attempts)
                            .where(N.c.channel == channel, N.c.status.in_(("queued", "failed")), N.c.next_at <= now)
                            .order_by(N.c.id).limit(limit)).all()


def waiting(engine: Engine, channel: str, now: datetime) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(N).where(
            N.c.channel == channel, N.c.status.in_(("queued", "failed")), N.c.next_at <= now))


def used(engine: Engine, channel: str, now: datetime) -> int:
    """Deliveries tried on the channel in the minute before ``now`` (the rate limit's count)."""
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(N).where(
            N.c.channel == channel, N.c.attempted_at > now - timedelta(minutes=1)))


def mark_sent(engine: Engine, ids: Iterable[int], now: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(update(N).where(N.c.id.in_(list(ids))).values(
            status="sent", attempts=N.c.attempts + 1, attempted_at=now, sent_at=now, next_at=None, last_error=None))


def mark_failed(engine: Engine, ident: int, attempts: int, error: str, next_at: datetime | None, now: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(update(N).where(N.c.id == ident).values(
            status="failed", attempts=attempts, attempted_at=now, next_at=next_at, last_error=error[:2000]))


def fold(engine: Engine, ids: Sequence[int]) -> None:
    """These messages are told in a summary instead of one by one."""
    with engine.begin() as conn:
        for i in range(0, len(ids), 500):
            conn.execute(update(N).where(N.c.id.in_(list(ids[i : i + 500]))).values(status="folded", next_at=None))


LOG_COLUMNS = ("id", "key", "rule", "reason", "channel", "target", "subject", "body", "case_id", "area_code",
               "status", "attempts", "last_error", "next_at", "created_at", "attempted_at", "sent_at")


def read_log(engine: Engine, scope: str, *, status: str | None = None, channel: str | None = None,
             limit: int = 100, before: int | None = None) -> list[dict[str, Any]]:
    """The newest messages within the jurisdiction ``scope`` (a message of no area belongs to the district only)."""
    where = [or_(N.c.area_code.like(f"{scope}%"), N.c.area_code.is_(None) if len(scope) == 6 else False)]
    if status:
        where.append(N.c.status == status)
    if channel:
        where.append(N.c.channel == channel)
    if before:
        where.append(N.c.id < before)
    with engine.connect() as conn:
        rows = conn.execute(select(*(N.c[c] for c in LOG_COLUMNS)).where(*where).order_by(N.c.id.desc())
                            .limit(limit)).all()
    return [dict(r._mapping) for r in rows]


# --------------------------------------------------------------------------- triggers in SQL

_CASE = (Case.id.label("case_id"), Case.title, Case.grid_code, Case.street_code, Case.departments.label("case_deps"))


def _deadline_column(engine: Engine):
    """A 督办's deadline: ``case_events.deadline`` where the schema has it, else the event's ``due_at``."""
    if "deadline" in CaseEvent.__table__.c:
        return CaseEvent.__table__.c.deadline
    if "deadline" in {c["name"] for c in inspect(engine).get_columns("case_events")}:
        return literal_column("case_events.deadline", UTCDateTime)
    return CaseEvent.due_at


def case_events_after(engine: Engine, after: int, since: datetime, limit: int = 2000) -> list[dict[str, Any]]:
    """Timeline events that notify (overdue, escalate, supervise, an unrouted case's note) after id ``after`` (when 0:
    received since ``since``), of cases that are not drills, in id order."""
    deadline = _deadline_column(engine)
    wanted = or_(CaseEvent.action.in_(EVENT_ACTIONS), and_(CaseEvent.action == "note",
                                                          CaseEvent.event_key == UNROUTED_KEY))
    start = CaseEvent.id > after if after else CaseEvent.received_at >= since
    with engine.connect() as conn:
        rows = conn.execute(select(CaseEvent.id, CaseEvent.action, CaseEvent.event_key, CaseEvent.occurred_at,
                                   CaseEvent.departments, CaseEvent.note, CaseEvent.actor, deadline.label("deadline"),
                                   *_CASE)
                            .join(Case, Case.id == CaseEvent.case_id)
                            .where(start, wanted, Case.drill.is_(False)).order_by(CaseEvent.id).limit(limit)).all()
    return [dict(r._mapping) for r in rows]


def last_id(engine: Engine, what: str) -> int:
    """The newest id of ``events`` (case_events) or ``alarms`` (sensor_alarms): where a first run's cursor starts."""
    column = {"events": CaseEvent.id, "alarms": SensorAlarm.id}[what]
    with engine.connect() as conn:
        return conn.scalar(select(func.max(column))) or 0


def alarms_after(engine: Engine, after: int, since: datetime, limit: int = 2000) -> list[dict[str, Any]]:
    """Sensor alarms opened after id ``after`` (when 0: opened since ``since``), not of a drill's devices."""
    start = SensorAlarm.id > after if after else SensorAlarm.opened_at >= since
    with engine.connect() as conn:
        rows = conn.execute(select(SensorAlarm.id, SensorAlarm.device_id, SensorAlarm.type, SensorAlarm.kind,
                                   SensorAlarm.grid_code, SensorAlarm.opened_at, SensorAlarm.peak_value,
                                   SensorAlarm.case_id)
                            .join(Device, Device.id == SensorAlarm.device_id)
                            .where(start, Device.drill.is_(False)).order_by(SensorAlarm.id).limit(limit)).all()
    return [dict(r._mapping) for r in rows]


def missed_whistles(engine: Engine, now: datetime, since: datetime, limit: int = 2000) -> list[dict[str, Any]]:
    """吹哨 assignments whose 报到 deadline passed (after ``since``) with no check-in, of open, non-drill parts."""
    a = CaseAssignment
    with engine.connect() as conn:
        rows = conn.execute(select(a.id, a.department, a.due_at, a.grid_code, *_CASE)
                            .join(Case, Case.id == a.case_id)
                            .where(a.role == "whistle", a.checked_in_at.is_(None), a.ended_at.is_(None),
                                   a.due_at <= now, a.due_at > since, a.drill.is_(False))
                            .order_by(a.id).limit(limit)).all()
    return [dict(r._mapping) for r in rows]


# --------------------------------------------------------------------------- state in Redis


def cursors(r: redis.Redis, keys: NotifyKeys) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in r.hgetall(keys.cursor).items()}


def set_cursor(r: redis.Redis, keys: NotifyKeys, name: str, value: int) -> None:
    r.hset(keys.cursor, name, value)


def red_areas(r: redis.Redis, keys: NotifyKeys) -> set[str]:
    return {m.decode() for m in r.smembers(keys.red)}


def set_red_areas(r: redis.Redis, keys: NotifyKeys, codes: set[str]) -> None:
    pipe = r.pipeline(transaction=True)
    pipe.delete(keys.red)
    if codes:
        pipe.sadd(keys.red, *codes)
    pipe.execute()


def set_channel_status(r: redis.Redis, keys: NotifyKeys, channel: str, ok: bool, error: str | None, at: datetime) -> None:
    """A channel's health after a delivery (``error`` already masked): failures in a row count up until one works."""
    raw = r.hget(keys.channels, channel)
    state = orjson.loads(raw) if raw else {}
    failures = 0 if ok else int(state.get("failures", 0)) + 1
    state.update(ok=ok, failures=failures, at=at.isoformat(), error=None if ok else error)
    if ok:
        state["last_ok"] = at.isoformat()
    r.hset(keys.channels, channel, orjson.dumps(state))


def forget_channels(r: redis.Redis, keys: NotifyKeys, keep: Iterable[str]) -> None:
    """Drop the health of channels no longer configured (a removed channel must not keep /healthz degraded)."""
    gone = [k for k in r.hkeys(keys.channels) if (k.decode() if isinstance(k, bytes) else k) not in set(keep)]
    if gone:
        r.hdel(keys.channels, *gone)


def channel_status(r: redis.Redis, prefix: str) -> dict[str, dict[str, Any]]:
    """Channel → its health as the delivery job last saw it (for /healthz)."""
    raw = r.hgetall(NotifyKeys(prefix).channels)
    return {(k.decode() if isinstance(k, bytes) else k): orjson.loads(v) for k, v in sorted(raw.items())}
