"""One consumer of the streams' group: reads entries, takes over a dead consumer's, finds older pending ones."""

from __future__ import annotations

import logging

import orjson
import redis

from config.settings import Settings
from core import ordering
from core.streams import StreamNames
from store.streams import dead_letter

log = logging.getLogger(__name__)

Batch = dict[str, list[tuple[bytes, dict[bytes, bytes]]]]  # stream → [(entry id, fields)]


def as_text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def item_bytes(entry_raw: bytes | None, key) -> bytes | None:
    """The bytes a feed sent for one record of an entry (the entry itself when it held one record).

    ``key``: (entry id, index of the record in the entry).
    """
    if entry_raw is None or key is None:
        return None
    if entry_raw.lstrip()[:1] != b"[":
        return entry_raw
    try:
        return orjson.dumps(orjson.loads(entry_raw)[key[1]])
    except (orjson.JSONDecodeError, IndexError, TypeError):
        return None


class Consumer:
    def __init__(self, r: redis.Redis, settings: Settings, names: StreamNames, name: str):
        self.r = r
        self.settings = settings
        self.names = names
        self.name = name

    @property
    def streams(self) -> tuple[str, ...]:
        return (*self.names.live, self.names.bulk)

    def read(self, ids: str = ">", block: int | None = None, count: int | None = None, streams=None) -> Batch:
        """XREADGROUP from ``ids`` (">": new entries, "0": this consumer's own pending ones).

        Pending entries trimmed by MAXLEN meanwhile are dead-lettered and acknowledged: nothing is left to apply.
        """
        streams = {s: ids for s in (streams or self.streams)}
        resp = self.r.xreadgroup(self.settings.consumer_group, self.name, streams,
                                 count=count or self.settings.worker_batch, block=block)
        out = {}
        for stream, entries in resp or []:
            stream = as_text(stream)
            gone = [eid for eid, f in entries if f is None]
            if gone:
                self._trimmed(stream, gone)
            entries = [(eid, f) for eid, f in entries if f is not None]
            if entries:
                out[stream] = entries
        return out

    def _trimmed(self, stream: str, gone: list) -> None:
        """Say so where an operator looks: in the log and the dead letters."""
        log.error("%d pending entries of %s were trimmed before they were applied (raise STREAM_MAXLEN)",
                  len(gone), stream)
        pipe = self.r.pipeline(transaction=False)
        for eid in gone:
            dead_letter(pipe, self.names, self.settings, b"", "entry trimmed from the stream before it was "
                        "applied (STREAM_MAXLEN too small for the backlog)", stream=stream, source="unknown",
                        entry_id=eid)
        pipe.xack(stream, self.settings.consumer_group, *gone)
        pipe.execute()

    def claim_stale(self) -> int:
        """Take over what other consumers left pending longer than claim_idle_ms (a consumer that died).

        The entries move to this consumer's own pending list, where the next ``read("0")`` finds them. Returns how
        many it took over.
        """
        n = 0
        for stream in self.streams:
            start = "0-0"
            while True:
                resp = self.r.xautoclaim(stream, self.settings.consumer_group, self.name,
                                         min_idle_time=self.settings.claim_idle_ms, start_id=start,
                                         count=max(self.settings.worker_batch, 100))
                start, ids = resp[0], resp[1]  # (the entries come along: they are read again from our own list)
                if ids:
                    log.info("took over %d entries another consumer left pending on %s", len(ids), stream)
                    n += len(ids)
                if start in (b"0-0", "0-0"):
                    break
        return n

    def pending_before(self, stream: str) -> str | None:
        """The oldest entry of ``stream`` that another consumer of the group holds unacknowledged (None: none)."""
        group = self.settings.consumer_group
        summary = self.r.xpending(stream, group)
        oldest = None
        for c in summary.get("consumers") or ():
            name = as_text(c["name"])
            if name == self.name or not int(c["pending"]):
                continue
            first = self.r.xpending_range(stream, group, min="-", max="+", count=1, consumername=name)
            if first:
                eid = as_text(first[0]["message_id"])
                if oldest is None or ordering.older(eid, oldest):
                    oldest = eid
        return oldest
