"""Redis streams: names, the producer every feed uses, the consumer group, and dead letters.

Each stream entry has a field ``d`` holding one record (a JSON object) or a batch of records
(a JSON array: feeds publish what arrives together as one entry), and ``s`` naming the feed
that published it. Feeds call :class:`Producer`; they never touch the store.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import socket
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import redis

from config.settings import Settings, get_settings
from core.access import mask_text
from core.streams import BULK, CASES, DEAD, KINDS, SENSORS, StreamNames  # noqa: F401 - re-exported for feeds

log = logging.getLogger(__name__)

DEAD_RAW_LIMIT = 1024 * 1024  # raw payloads larger than this are kept truncated, with their size and hash


def dumps(record: Any) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_NAIVE_UTC | orjson.OPT_SERIALIZE_NUMPY, default=str)


class Producer:
    """Publishes canonical records (plain dicts) to the streams, in pipelined batches."""

    def __init__(self, client: redis.Redis, settings: Settings | None = None, source: str = "feed", per_entry: int = 100):
        self.r = client
        self.per_entry = max(1, per_entry)
        self.settings = settings or get_settings()
        self.names = StreamNames.of(self.settings)
        self.source = source

    def _publish(self, stream: str, records: Iterable[Any], maxlen: int, pipe: Any = None) -> list[bytes]:
        """XADD the records, ``per_entry`` to an entry (a JSON array), pipelined. Returns one id per entry.

        With ``pipe`` the XADDs are only queued on the caller's pipeline (which the caller executes, e.g. in one
        MULTI with other commands) and nothing is returned.
        """
        ids: list[bytes] = []
        own = pipe is None
        if own:
            pipe = self.r.pipeline(transaction=False)
        src = self.source.encode()
        queued = 0
        chunk: list[bytes] = []

        def flush_chunk() -> None:
            nonlocal queued
            payload = chunk[0] if len(chunk) == 1 else b"[" + b",".join(chunk) + b"]"
            pipe.xadd(stream, {b"d": payload, b"s": src}, maxlen=maxlen, approximate=True)
            chunk.clear()
            queued += 1
            if own and queued % 200 == 0:
                ids.extend(pipe.execute())

        for rec in records:
            chunk.append(rec if isinstance(rec, bytes | bytearray) else dumps(rec))
            if len(chunk) >= self.per_entry:
                flush_chunk()
        if chunk:
            flush_chunk()
        if own and queued % 200:
            ids.extend(pipe.execute())
        return ids

    def queue(self, stream: str, records: Iterable[Any], pipe: Any) -> None:
        """Queue the records for ``stream`` (one of the three) on ``pipe``, which the caller executes."""
        self._publish(stream, records, self.settings.stream_maxlen, pipe)

    def cases(self, records: Iterable[Any]) -> list[bytes]:
        """Publish case events; returns the stream ids."""
        return self._publish(self.names.cases, records, self.settings.stream_maxlen)

    def bulk(self, records: Iterable[Any]) -> list[bytes]:
        """Publish case events of a bulk import (applied after live events; see BULK)."""
        return self._publish(self.names.bulk, records, self.settings.stream_maxlen)

    def sensors(self, records: Iterable[Any]) -> list[bytes]:
        """Publish sensor readings; returns the stream ids."""
        return self._publish(self.names.sensors, records, self.settings.stream_maxlen)

    def dead(self, raw: bytes | str | Any, reason: str, *, stream: str, source: str | None = None) -> bytes:
        """Record what cannot be applied, with the reason and the raw payload. Never raises on payload shape."""
        return dead_letter(self.r, self.names, self.settings, raw, reason, stream=stream, source=source or self.source)


def dead_letter(
    r: redis.Redis | Any,
    names: StreamNames,
    settings: Settings,
    raw: Any,
    reason: str,
    *,
    stream: str,
    source: str,
    entry_id: str | bytes | None = None,
    index: int | None = None,
) -> Any:
    """XADD one dead letter (works on a client or a pipeline)."""
    if isinstance(raw, str):
        raw_bytes = raw.encode("utf-8", "surrogatepass")
    elif isinstance(raw, bytes | bytearray):
        raw_bytes = bytes(raw)
    else:
        try:
            raw_bytes = dumps(raw)
        except TypeError:
            raw_bytes = repr(raw).encode()
    fields = {
        b"reason": reason.encode("utf-8", "replace")[:4000],
        b"stream": stream.encode(),
        b"source": (source or "unknown").encode("utf-8", "replace")[:64],
        b"at": datetime.now(UTC).isoformat().encode(),
        b"size": str(len(raw_bytes)).encode(),
    }
    if entry_id is not None:
        fields[b"entry"] = entry_id if isinstance(entry_id, bytes) else str(entry_id).encode()
    if index is not None:
        fields[b"index"] = str(index).encode()  # position of the record within a batch entry
    if len(raw_bytes) > DEAD_RAW_LIMIT:
        fields[b"sha256"] = hashlib.sha256(raw_bytes).hexdigest().encode()
        fields[b"truncated"] = b"1"
        raw_bytes = raw_bytes[:DEAD_RAW_LIMIT]
    fields[b"raw"] = raw_bytes
    res = r.xadd(names.dead, fields, maxlen=settings.dead_maxlen, approximate=True)
    r.incr(names.dead_count)
    return res


def ensure_groups(r: redis.Redis, settings: Settings | None = None) -> None:
    """Create the consumer group on each stream (idempotent, creates the streams too)."""
    settings = settings or get_settings()
    names = StreamNames.of(settings)
    for stream in (names.cases, names.sensors, names.bulk):
        try:
            r.xgroup_create(stream, settings.consumer_group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


def consumer_name(settings: Settings | None = None) -> str:
    """The worker's consumer name: WORKER_NAME, else ``<host>-worker``. Stable across restarts, so a restarted
    worker finds what it left pending and applies it before anything new."""
    settings = settings or get_settings()
    return settings.worker_name or f"{socket.gethostname()}-worker"


def entry_source(fields: dict[bytes, bytes]) -> str:
    return (fields.get(b"s") or b"unknown").decode("utf-8", "replace")


DEAD_TEXT_FIELDS = ("reason", "stream", "source", "at", "size", "entry", "index", "sha256", "truncated")


def iter_dead(r: redis.Redis, settings: Settings, start: str = "-", page: int = 500):
    """Every dead letter from ``start`` (an id, or ``-``), oldest first, as (id, fields); ``raw`` stays bytes.

    Pages through the stream by id, so letters deleted while iterating do not disturb it.
    """
    names = StreamNames.of(settings)
    while True:
        entries = r.xrange(names.dead, min=start, count=page)
        for entry_id, fields in entries:
            row: dict[str, Any] = {k.decode(): v for k, v in fields.items()}
            for k in DEAD_TEXT_FIELDS:
                if isinstance(row.get(k), bytes):
                    row[k] = row[k].decode("utf-8", "replace")
            row.setdefault("raw", b"")
            yield (entry_id.decode() if isinstance(entry_id, bytes) else entry_id), row
        if len(entries) < page:
            return
        last = entries[-1][0]
        start = "(" + (last.decode() if isinstance(last, bytes) else last)


def read_dead(r: redis.Redis, settings: Settings | None = None, count: int = 100) -> Sequence[dict[str, Any]]:
    """The newest dead letters, newest first, decoded for display."""
    settings = settings or get_settings()
    names = StreamNames.of(settings)
    out = []
    for entry_id, fields in r.xrevrange(names.dead, count=count):
        row = {k.decode(): v for k, v in fields.items()}
        row["id"] = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        for k in DEAD_TEXT_FIELDS:
            if isinstance(row.get(k), bytes):
                row[k] = row[k].decode("utf-8", "replace")
        raw = row.get("raw", b"")
        row["raw"] = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        out.append(row)
    return out


def masked_letter(row: dict[str, Any], own_prefixes: tuple[str, ...] | None = None) -> dict[str, Any]:
    """A dead letter (read_dead's row) as a reader sees it: the personal data in its raw payload and reason masked
    (core.access.mask_text). The stored letter stays whole, to be re-driven as it came."""
    raw = row.get("raw") or ""
    raw = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    if "\\u" in raw:  # JSON with escaped characters: as plain UTF-8, so an escape cannot hide the digits after it
        with contextlib.suppress(ValueError, TypeError):
            raw = orjson.dumps(orjson.loads(raw)).decode()
    return {**row, "raw": mask_text(raw, own_prefixes), "reason": mask_text(row.get("reason"), own_prefixes)}
