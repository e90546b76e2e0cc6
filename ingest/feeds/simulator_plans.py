"""What happens to a simulated case, drawn whole when it is reported: handled on the spot, or through a department.

A dispatched case walks the lifecycle's forward path (``core.lifecycle.path_to``) through 处置 (handling); a return,
a whistle and a reopen are the detours drawn on the way. Each step's delay and fields are drawn in path order.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

from core import lifecycle
from core.lifecycle import Action, Status
from ingest.feeds.simulator_texts import ONSITE_NOTES

P_LATE = 0.15  # share of dispatched cases planned to run past a limit (≈ 10 % seen late within two days)
P_RETURN = 0.06
P_REOPEN = 0.02
P_WHISTLE = 0.5  # for dispatched cases of grade >= 3
CENTER = "街道指挥分中心"
STATION = "社区网格工作站"

Plan = list[tuple[datetime, str, dict[str, Any]]]


def _route(*statuses: Status) -> tuple[Action, ...]:
    """The lifecycle's forward steps through each of ``statuses`` in turn."""
    return tuple(a for start, goal in pairwise(statuses) for a in lifecycle.path_to(start, goal))


TO_DISPATCHED = _route(Status.REPORTED, Status.DISPATCHED)  # register, dispatch
TO_CLOSED = _route(Status.DISPATCHED, Status.HANDLING, Status.CLOSED)  # accept, handle, resolve, close
TO_EVALUATED = _route(Status.CLOSED, Status.EVALUATED)
REDONE = _route(Status.REGISTERED, Status.HANDLING, Status.CLOSED)  # after a reopen: dispatch … close


def secs(x: float) -> timedelta:
    return timedelta(seconds=max(1, math.ceil(x)))


def onsite_plan(rng: random.Random, t0: datetime, report: dict, cat, worker: str) -> Plan:
    """A minor case a grid worker handles on the spot (巡办合一): report → onsite → close, sometimes evaluate."""
    plan: Plan = [(t0, "report", report)]
    t = t0
    if rng.random() < 0.1:
        t += secs(rng.expovariate(1 / 180))
        plan.append((t, "register", {"actor": STATION}))
    t += secs(min(3600, 60 + rng.expovariate(1 / 480)))
    note = ONSITE_NOTES.get(cat.code[:2], "网格员现场处置完毕，已拍照留存。")
    plan.append((t, "onsite", {"actor": f"网格员{worker}", "note": note}))
    t += secs(60 + rng.expovariate(1 / 1800))
    plan.append((t, "close", {"actor": STATION, "note": "现场核查属实，予以结案。"}))
    if rng.random() < 0.25:
        t += secs(60 + rng.expovariate(1 / 3600))
        plan.append((t, "evaluate", {"rating": rng.choices((3, 4, 5), weights=(1, 3, 6))[0], "actor": "居民"}))
    return plan


class DispatchPlan:
    """The plan of a case that goes through a department, with SLA deadlines from the working calendar; about
    :data:`P_LATE` of them run late. :meth:`drawn` draws it."""

    def __init__(self, rng: random.Random, calendar, departments, t0: datetime, report: dict, cat, grid: str,
                 source: str, routed: str | None = None):
        self.rng, self.departments, self.report, self.cat, self.grid, self.source = (
            rng, departments, report, cat, grid, source)
        self.accept_due = calendar.add(t0, cat.accept_limit).due
        self.due = calendar.add(t0, cat.complete_limit).due
        self.wa = max(60.0, (self.accept_due - t0).total_seconds())
        self.wc = max(120.0, (self.due - t0).total_seconds())
        self.late = rng.random() < P_LATE
        self.late_accept = self.late and rng.random() < 0.4
        self.t = t0
        self.dept = routed or cat.department
        self.routed = routed is not None  # the router (智能分拨) registers and dispatches it: the plan starts at 签收
        self.plan: Plan = [(t0, "report", report)]
        self.extra: Plan = []  # events off the main line (check-ins), merged in by time at the end

    def drawn(self) -> Plan:
        rng = self.rng
        for action in () if self.routed else TO_DISPATCHED:
            self._step(action)
        if self.routed:  # the router dispatches within seconds of the report; the department then takes its time
            self.t = self.t + secs(max(20, rng.expovariate(1 / 120)))
        self._detour()
        for action in TO_CLOSED:
            self._step(action)
        if rng.random() < (0.8 if self.source in ("hotline12345", "citizen") else 0.4):
            for action in TO_EVALUATED:
                self._step(action)
        if rng.random() < P_REOPEN:
            self.add(600 + rng.expovariate(1 / 10800), Action.REOPEN, {"actor": CENTER, "note": "回访不满意，重新办理。"})
            for action in REDONE:
                self._again(action)
        return sorted(self.plan + self.extra, key=lambda step: step[0]) if self.extra else self.plan

    def add(self, delay: float, action: Action, fields: dict | None = None) -> None:
        self.t = self.t + secs(delay)
        self.plan.append((self.t, action.value, fields or {}))

    def short(self, dept: str) -> str:
        d = self.departments.get(dept)
        return d.short if d is not None else dept

    def street_unit(self) -> str | None:
        code = f"zf-{self.grid[6:9]}"
        return code if code in self.departments else None

    def _department(self) -> str:
        unit = self.street_unit()
        if self.cat.department == "cg" and unit and self.rng.random() < 0.5:
            return unit  # street-level law enforcement handles much of 城管's work
        return self.cat.department

    def _step(self, action: Action) -> None:
        """One step of the first pass, timed against the case's deadlines."""
        rng, wa = self.rng, self.wa
        if action is Action.REGISTER:
            self.add(min(max(20, rng.expovariate(1 / 360)), 0.15 * wa), action, {"actor": CENTER})
        elif action is Action.DISPATCH:
            self.dept = self._department()
            self.add(min(max(20, rng.expovariate(1 / 480)), 0.15 * wa), action,
                     {"departments": [self.dept], "actor": CENTER})
        elif action is Action.ACCEPT:
            self._accept()
        elif action is Action.HANDLE:
            self.add(max(30, rng.expovariate(1 / 900)), action, {"actor": self.short(self.dept)})
        elif action is Action.RESOLVE:
            self._resolve()
        elif action is Action.CLOSE:
            self.add(60 + rng.expovariate(1 / 1800), action, {"actor": CENTER, "note": "核查属实，予以结案。"})
        elif action is Action.EVALUATE:
            weights = (8, 10, 20, 30, 32) if self.late else (2, 4, 12, 32, 50)
            self.add(60 + rng.expovariate(1 / 7200), action,
                     {"rating": rng.choices((1, 2, 3, 4, 5), weights=weights)[0], "actor": "回访"})
        else:
            raise ValueError(f"the simulator draws no {action.value!r} on a first pass")

    def _accept(self) -> None:
        rng, actor = self.rng, {"actor": self.short(self.dept)}
        if self.late_accept:
            self.t = max(self.t, self.accept_due)
            self.add(60 + rng.expovariate(1 / min(max(0.5 * self.wa, 1200), 7200)), Action.ACCEPT, actor)
        else:
            room = (self.accept_due - self.t).total_seconds()
            self.add(max(20, min(rng.expovariate(1 / 1800), 0.8 * room)), Action.ACCEPT, actor)

    def _resolve(self) -> None:
        rng, short = self.rng, self.short(self.dept)
        room = (self.due - self.t).total_seconds()
        if (self.late and not self.late_accept) or room <= 60:
            self.t = max(self.t, self.due)
            self.add(60 + rng.expovariate(1 / min(max(0.3 * self.wc, 1800), 8 * 3600)), Action.RESOLVE,
                     {"actor": short, "note": "已处置完毕（超期）"})
        else:
            mean = min(max(0.25 * room, 600), 6 * 3600)
            self.add(max(60, min(rng.expovariate(1 / mean), 0.9 * room)), Action.RESOLVE,
                     {"actor": short, "note": "已处置完毕"})

    def _detour(self) -> None:
        """Now and then a return (退回) and a second dispatch; for a grade >= 3 case, maybe a whistle (吹哨)."""
        rng = self.rng
        if rng.random() < P_RETURN:
            self.add(max(30, min(rng.expovariate(1 / 1200), 0.3 * self.wa)), Action.RETURN,
                     {"actor": self.short(self.dept), "note": "非本单位职责，申请退回重新派遣。"})
            others = [d for d in (self.cat.department, self.street_unit(), "cg", "zj") if d and d != self.dept]
            self.dept = rng.choice(others) if others else self.dept
            # A return leads back to registered: dispatch again.
            self.add(max(30, rng.expovariate(1 / 600)), Action.DISPATCH,
                     {"departments": [self.dept], "actor": CENTER, "note": "退回后重新派遣"})
        elif self.report["grade"] >= 3 and rng.random() < P_WHISTLE:
            self._whistle()

    def _whistle(self) -> None:
        """Summon more departments; most check in (报到) within the limit, some late, a few never."""
        rng = self.rng
        pool = [d for d in ("yj", "ga", "xiaofang", "zj", "wj", self.street_unit())
                if d and d != self.dept and d in self.departments]
        extra = rng.sample(pool, min(len(pool), rng.choice((2, 3))))
        if not extra:
            return
        self.add(max(20, min(rng.expovariate(1 / 300), 0.1 * self.wa)), Action.WHISTLE,
                 {"departments": extra, "actor": CENTER, "note": "吹哨：多部门联合处置"})
        for d in extra:
            u = rng.random()
            delay = rng.uniform(120, 1680) if u < 0.8 else rng.uniform(1860, 5400) if u < 0.92 else None
            if delay is not None:
                self.extra.append((self.t + secs(delay), Action.CHECKIN.value,
                                   {"departments": [d], "actor": self.short(d), "note": "到场报到"}))

    def _again(self, action: Action) -> None:
        """One step after a reopen: the department known, no deadline to race."""
        rng, short = self.rng, self.short(self.dept)
        if action is Action.DISPATCH:
            self.add(max(30, rng.expovariate(1 / 600)), action, {"departments": [self.dept], "actor": CENTER})
        elif action is Action.ACCEPT:
            self.add(max(30, rng.expovariate(1 / 1800)), action, {"actor": short})
        elif action is Action.HANDLE:
            self.add(max(30, rng.expovariate(1 / 900)), action, {"actor": short})
        elif action is Action.RESOLVE:
            self.add(600 + rng.expovariate(1 / 7200), action, {"actor": short, "note": "重新处置完毕"})
        elif action is Action.CLOSE:
            self.add(60 + rng.expovariate(1 / 1800), action, {"actor": CENTER, "note": "复核通过，予以结案。"})
        else:
            raise ValueError(f"the simulator draws no {action.value!r} after a reopen")
