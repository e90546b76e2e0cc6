"""Three cases with everything known: ``full_case`` goes through every stage (whistle, check-ins, suspension,
extension, evaluation) with the deadlines given by the source, ``late_case`` is dispatched and never accepted (its
accept deadline long past), ``unlocated_case`` has no place. Times count from ``NOW`` (this run's start).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

NOW = datetime.now(UTC).replace(microsecond=0)
H = timedelta(hours=1)
M = timedelta(minutes=1)
SECRET_NAME = "李秘密"
SECRET_PHONE = "13800138000"


def case_grid(city, i=5):
    return city.geography.areas("grid")[i]


def _category(city):
    return next(c for c in city.categories.values() if not c.sensor_only)


def full_case(city) -> list[dict]:
    """A case through report → register → dispatch → accept → whistle → check-ins → accept → suspend/resume →
    extend → resolve → close → evaluate (the deadlines given by the source, so the test knows them)."""
    t0 = NOW - 30 * H
    g = case_grid(city)

    def rec(action, at, **extra):
        return {"source": "hotline12345", "external_id": "full-1", "event": action, "event_id": f"{action}-{at:%H%M%S}",
                "occurred_at": at.isoformat(), **extra}

    return [
        rec("report", t0, category=_category(city).code, grade=3, title="人行道井盖缺失", grid_code=g.code,
            lon=g.centroid[0], lat=g.centroid[1], address="光明大道 88 号对面", description="井盖缺失，已设临时围挡",
            reporter_name=SECRET_NAME, reporter_phone=SECRET_PHONE,
            accept_due_at=(t0 + 2 * H).isoformat(), due_at=(t0 + 8 * H).isoformat()),
        rec("register", t0 + 5 * M, actor="受理员甲"),
        rec("dispatch", t0 + 10 * M, departments=["cg"]),
        rec("accept", t0 + 40 * M),
        rec("whistle", t0 + 50 * M, departments=["ga", "zj"], note="涉及道路安全"),
        rec("checkin", t0 + 70 * M, departments=["ga"]),
        rec("checkin", t0 + 100 * M, departments=["zj"]),
        rec("accept", t0 + 110 * M),
        rec("suspend", t0 + 2 * H, actor="张科长", note="等待产权人确认"),
        rec("resume", t0 + 3 * H),
        rec("extend", t0 + 5 * H, due_at=(t0 + 12 * H).isoformat(), actor="王主任", note="需协调供电局"),
        rec("resolve", t0 + 11 * H),
        rec("close", t0 + 12 * H),
        rec("evaluate", t0 + 13 * H, rating=4, note="处理及时"),
    ]


def late_case(city) -> list[dict]:
    """Dispatched 4 h 40 min ago and never accepted: the accept deadline passed 4 h ago."""
    t1 = NOW - 5 * H
    g = case_grid(city, 9)

    def rec(action, at, **extra):
        return {"source": "patrol", "external_id": "late-1", "event": action, "occurred_at": at.isoformat(), **extra}

    return [
        rec("report", t1, category=_category(city).code, grade=2, title="道路积水", grid_code=g.code,
            lon=g.centroid[0], lat=g.centroid[1], accept_due_at=(t1 + H).isoformat(), due_at=(t1 + 3 * H).isoformat()),
        rec("register", t1 + 10 * M),
        rec("dispatch", t1 + 20 * M, departments=["sw"]),
    ]


def unlocated_case(city) -> list[dict]:
    return [{"source": "citizen", "external_id": "nopos-1", "event": "report", "occurred_at": (NOW - H).isoformat(),
             "category": _category(city).code, "title": "噪音扰民", "reporter_name": SECRET_NAME,
             "reporter_phone": SECRET_PHONE, "description": "夜间施工噪音"}]
