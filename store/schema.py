"""The SQL schema (SQLAlchemy 2 declarative): cases, their events, departments, devices, sensor alarms.

Schema only — no connections here. Migrations under ``migrations/`` create and change it; the
worker writes it, the views read it. Times are timezone-aware UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def to_db_time(value: datetime | None, dialect_name: str):
    """An aware datetime as the database stores it: UTC; on SQLite fixed-width text (see UTCDateTime)."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    if dialect_name == "sqlite":
        return value.isoformat(" ", "microseconds")[:26]
    return value


class UTCDateTime(TypeDecorator):
    """Aware datetimes stored as UTC; read back as aware UTC datetimes on every backend.

    SQLite has no date type: values are stored as fixed-width text ``YYYY-MM-DD HH:MM:SS.ffffff``
    (UTC), which sorts and compares correctly as text — SQLAlchemy's own format, written here in one
    step instead of three (this is on the worker's hot path).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(26))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value, dialect):
        return to_db_time(value, dialect.name)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Integer primary keys that autoincrement on SQLite (INTEGER) and are 64-bit on PostgreSQL.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Department(Base):
    __tablename__ = "departments"
    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    short: Mapped[str | None] = mapped_column(String(32))
    street_code: Mapped[str | None] = mapped_column(String(9))


# A period's cases counted by area, category, source, grade or status from the index alone (the drill-down).
# Every cover ends with ``drill``: figures leave a replay's drill cases out without reading the table.
REPORTED_COVER = ("reported_at", "district_code", "street_code", "community_code", "grid_code", "category", "source", "grade",
                  "status", "drill")


class Case(Base):
    __tablename__ = "cases"
    __table_args__ = (
        UniqueConstraint("source", "external_id", name="uq_cases_source_external"),
        Index("ix_cases_street_status", "street_code", "status"),
        Index("ix_cases_community_status", "community_code", "status"),
        Index("ix_cases_grid_status", "grid_code", "status"),
        Index("ix_cases_status_due", "status", "due_at"),
        Index("ix_cases_reported_cover", *REPORTED_COVER),  # leads with reported_at: every report-time range
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(128))
    category: Mapped[str] = mapped_column(String(8))
    grade: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    address: Mapped[str | None] = mapped_column(String(300))
    reporter_name: Mapped[str | None] = mapped_column(String(64))  # personal data: never shown on the wall
    reporter_phone: Mapped[str | None] = mapped_column(String(32))  # personal data
    lon: Mapped[float | None] = mapped_column(Float)
    lat: Mapped[float | None] = mapped_column(Float)
    district_code: Mapped[str] = mapped_column(String(6))
    street_code: Mapped[str | None] = mapped_column(String(9))
    community_code: Mapped[str | None] = mapped_column(String(12))
    grid_code: Mapped[str | None] = mapped_column(String(15))
    located: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16))
    departments: Mapped[list[str]] = mapped_column(JSON, default=list)
    onsite: Mapped[bool] = mapped_column(Boolean, default=False)
    overdue: Mapped[bool] = mapped_column(Boolean, default=False)
    due_provisional: Mapped[bool] = mapped_column(Boolean, default=False)
    suspended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # 挂起: the clock stopped at
    warned: Mapped[bool] = mapped_column(Boolean, default=False)  # 临期 marked for the current deadline
    escalated: Mapped[bool] = mapped_column(Boolean, default=False)  # 升级督办 for the current deadline
    rating: Mapped[int | None] = mapped_column(Integer)
    flags: Mapped[list[str] | None] = mapped_column(JSON)  # data-quality flags from feeds
    drill: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())  # 演练: a replay's case
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime)
    accept_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # the first dispatch or whistle
    evaluated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # the first evaluation (kept through a reopen)
    supervised_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # 督办: the newest supervision order
    supervise_note: Mapped[str | None] = mapped_column(Text)  # its 批示
    supervise_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # its deadline, if it set one
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)  # when Gridwatch first stored it


class CaseEvent(Base):
    """The append-only timeline. (case_id, event_key) is unique: applying an event twice changes nothing."""

    __tablename__ = "case_events"
    __table_args__ = (
        UniqueConstraint("case_id", "event_key", name="uq_case_events_case_key"),
        Index("ix_case_events_case_time", "case_id", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    event_key: Mapped[str] = mapped_column(String(160))
    action: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status_before: Mapped[str | None] = mapped_column(String(16))
    status_after: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str | None] = mapped_column(String(64))
    departments: Mapped[list[str] | None] = mapped_column(JSON)
    note: Mapped[str | None] = mapped_column(Text)
    rating: Mapped[int | None] = mapped_column(Integer)  # evaluate: the rating given (1–5)
    # The case's completion deadline this event set or moved: report (the first), extend (延期, the approved one),
    # resume (moved by the held time), a source's correction. None when the event left the deadline alone.
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class HeldEvent(Base):
    """A case event that arrived before its case or its predecessors: kept until it can be applied in order.

    The worker holds an event here (in the same transaction as the rest of its batch, then acknowledges the
    stream entry) when its move is illegal only because earlier events are missing: the case is not there yet,
    or an older stream entry is still pending with another consumer. Each later batch that names the case retries
    its held events in stream order; what is still illegal once its predecessors were applied and ``HOLD_SECONDS``
    have passed goes to the dead letters (core/ordering.py).
    """

    __tablename__ = "held_events"
    __table_args__ = (
        UniqueConstraint("source", "external_id", "event_key", name="uq_held_events_case_key"),
        Index("ix_held_events_held_at", "held_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(128))
    event_key: Mapped[str] = mapped_column(String(160))
    stream: Mapped[str] = mapped_column(String(128))  # where it came from, and its place there:
    entry_id: Mapped[str] = mapped_column(String(48))  # the stream entry id and
    position: Mapped[int] = mapped_column(Integer)  # the record's index within the entry
    record: Mapped[str] = mapped_column(Text)  # the validated record (JSON), to apply
    raw: Mapped[str] = mapped_column(Text)  # what the feed sent, for the dead letter if it never applies
    feed: Mapped[str] = mapped_column(String(64))  # the entry's publisher (its ``s`` field)
    reason: Mapped[str] = mapped_column(Text)  # why it is held (the lifecycle's words, the latest try)
    held_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Device(Base):
    __tablename__ = "devices"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    type: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(32))
    lon: Mapped[float | None] = mapped_column(Float)
    lat: Mapped[float | None] = mapped_column(Float)
    grid_code: Mapped[str | None] = mapped_column(String(15), index=True)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    drill: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())  # a replay's device


class SensorAlarm(Base):
    __tablename__ = "sensor_alarms"
    __table_args__ = (
        UniqueConstraint("device_id", "opened_at", name="uq_sensor_alarms_device_opened"),
        Index("ix_sensor_alarms_open", "cleared_at", "grid_code"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"))
    type: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16), default="threshold", server_default="threshold")  # or "offline"
    grid_code: Mapped[str | None] = mapped_column(String(15))
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    peak_value: Mapped[float] = mapped_column(Float)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))


# Covering indexes led by (role, department, time): a ranking statement names every department (an IN list), so the
# database reads one short range per department, already in department order — no sort, never the table.
ASSIGNED_COVER = ("role", "department", "assigned_at", "grid_code", "accepted_at", "accepted_on_time", "due_at",
                  "ended_at", "returned_at", "checked_in_at", "drill")
RESOLVED_COVER = ("role", "department", "resolved_at", "grid_code", "resolved_on_time", "reopened_at", "handling_s",
                  "drill")
EVALUATED_COVER = ("role", "department", "evaluated_at", "grid_code", "rating", "drill")
OPEN_COVER = ("role", "department", "finished_at", "assigned_at", "grid_code", "case_id", "drill")


class CaseAssignment(Base):
    """A department's part in a case (core/assignments.py projects these from the timeline): the rankings' input."""

    __tablename__ = "case_assignments"
    __table_args__ = (
        Index("ix_case_assignments_case", "case_id"),
        Index("ix_case_assignments_assigned", *ASSIGNED_COVER),
        Index("ix_case_assignments_resolved", *RESOLVED_COVER),
        Index("ix_case_assignments_evaluated", *EVALUATED_COVER),
        Index("ix_case_assignments_open", *OPEN_COVER),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    department: Mapped[str] = mapped_column(String(32))
    role: Mapped[str] = mapped_column(String(8))  # lead (主办) | whistle (吹哨报到)
    grid_code: Mapped[str | None] = mapped_column(String(15))  # the case's grid when assigned: the area scope
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # acknowledge by: 签收 (lead), 报到 (whistle)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    accepted_on_time: Mapped[bool | None] = mapped_column(Boolean)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_on_time: Mapped[bool | None] = mapped_column(Boolean)
    returned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reopened_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # lead: resolved, or else ended
    checked_in_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    rating: Mapped[int | None] = mapped_column(Integer)
    evaluated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    handling_s: Mapped[float | None] = mapped_column(Float)  # lead: seconds from dispatch to resolution
    drill: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())  # the case's mark


class User(Base):
    """A person who logs in (dashboard/auth.py): a role (core.access.ROLES) within a jurisdiction (an area code)."""

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("username", name="uq_users_username"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64))
    password_hash: Mapped[str] = mapped_column(String(255))  # argon2id, with its parameters and salt
    role: Mapped[str] = mapped_column(String(16))
    area_code: Mapped[str] = mapped_column(String(15))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)  # in a row; reset by a good login
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ScreenLink(Base):
    """A kiosk link for the wall: whoever holds the token sees /screen of the area, read-only, no personal data.
    Only the token's SHA-256 is kept."""

    __tablename__ = "screen_links"
    __table_args__ = (UniqueConstraint("token_sha256", name="uq_screen_links_token_sha256"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    token_sha256: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(64))
    area_code: Mapped[str] = mapped_column(String(15))
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuditEntry(Base):
    """Who did what, when, from where: logins and failures, case views, exports, changes to users and links."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_at", "at"), Index("ix_audit_log_username_at", "username", "at"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    username: Mapped[str | None] = mapped_column(String(64))  # None: nobody logged in (a failed login names the try)
    role: Mapped[str | None] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(32))
    target: Mapped[str | None] = mapped_column(String(255))
    detail: Mapped[dict | None] = mapped_column(JSON)
    address: Mapped[str | None] = mapped_column(String(64))  # the client's address
    ok: Mapped[bool] = mapped_column(Boolean, default=True)
