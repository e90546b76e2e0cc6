"""Per-case order: whether an event whose move is illegal now waits for its predecessors or is dead.

A case's events must be applied in the order they happened. Streams deliver them in publish order, but a fault can
leave an older entry pending with a consumer that died (or a batch that failed) while newer entries are read, and a
source can send a case's ``register`` a moment before its ``report``. So an event that the lifecycle refuses is not
dead-lettered at once when its refusal may only mean "too early":

- an older entry of its stream is still pending with another consumer → it waits (that entry may be its predecessor);
- its case is not there yet → it waits, at most ``hold`` (the report may still come);
- it waited before (its case now exists, the move is still illegal) → it waits until ``hold`` has passed;
- an earlier event of the same case is waiting → it waits behind it;
- otherwise (its case exists, nothing older is pending, it is new) the move is truly illegal → dead.

A waiting event is retried each time an event of its case applies, in stream order, and by the worker's sweep once
its time is up. Pure: the worker (ingest/worker.py) supplies the facts.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import Enum


class Verdict(Enum):
    HOLD = "hold"
    DEAD = "dead"


def verdict(*, case_exists: bool, older_pending: bool, earlier_waiting: bool, held_since: datetime | None,
            now: datetime, hold: timedelta) -> Verdict:
    """What to do with an event the lifecycle refused (see the module's rules)."""
    if older_pending or earlier_waiting:
        return Verdict.HOLD
    if held_since is None:
        return Verdict.DEAD if case_exists else Verdict.HOLD
    return Verdict.DEAD if now - held_since >= hold else Verdict.HOLD


def entry_order(entry_id: str | bytes | None, position: int | None = 0) -> tuple[int, int, int]:
    """A sortable place for record ``position`` of stream entry ``entry_id`` (``ms-seq``); None sorts last."""
    if entry_id is None:
        return (1 << 62, 0, 0)
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    ms, _, seq = text.partition("-")
    return (int(ms), int(seq or 0), position or 0)


def older(entry_id: str | bytes | None, than: str | bytes | None) -> bool:
    """Whether stream entry ``entry_id`` comes before ``than`` (both ``ms-seq``; None is never older)."""
    if entry_id is None or than is None:
        return False
    return entry_order(entry_id)[:2] < entry_order(than)[:2]
