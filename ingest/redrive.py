"""Re-drive dead letters: re-validate each with the current configuration and re-publish what now applies.

``python -m ingest dead --redrive [--reason RE] [--since 2h] [--stream cases] [--source push] [--limit N] [--dry-run]``

Oldest first, each letter is skipped (it must never be re-driven: the Planner says why), still failing (today's
reason), or re-driven: published again to its stream and deleted from the dead letters in one MULTI/EXEC, so a second
run re-publishes nothing. One re-drive at a time (a Redis lock). What is skipped and why: README, "Dead letters".
"""

from __future__ import annotations

import ast
import contextlib
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import redis

from config.city import catalog_of
from config.settings import Settings
from core.records import CITY_TZ, CaseEvent, SensorReading, parse_json_entry
from core.streams import KINDS, StreamNames
from ingest.feeds.mqtt import REGISTRY_FILE, Decoder, load_registry
from ingest.feeds.spreadsheet import MappingError, map_rows
from store.streams import Producer, iter_dead

REDRIVEN, SKIPPED, FAILING = "redriven", "skipped", "still_failing"
TXN_LETTERS = 200  # letters re-published (and deleted) per MULTI/EXEC
LOCK_SECONDS = 300
EXAMPLES = 20  # still-failing letters listed by id in the summary

# --------------------------------------------------------------------------- selection

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.I)
_UNIT = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 time (without a zone: Asia/Shanghai, like every feed) or a duration back from now (30m, 2h, 7d)."""
    m = _DURATION.match(text)
    if m:
        return (now or datetime.now(UTC)) - timedelta(**{_UNIT[m.group(2).lower()]: float(m.group(1))})
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--since: {text!r} is neither an ISO time (2026-12-01T08:00) nor a duration (30m, 2h, 7d)") from None
    return (t if t.tzinfo else t.replace(tzinfo=CITY_TZ)).astimezone(UTC)


@dataclass
class Selection:
    """Which dead letters: every given filter must match. ``reason`` is a regular expression searched anywhere
    in the reason, case-insensitively (so a plain word matches as a substring)."""

    reason: str | None = None
    since: datetime | None = None
    stream: str | None = None  # cases, sensors, bulk, or a stream's full name
    source: str | None = None
    limit: int | None = None

    def __post_init__(self):
        try:
            self._reason = re.compile(self.reason, re.I) if self.reason else None
        except re.error as exc:
            raise ValueError(f"--reason: {self.reason!r} is not a regular expression ({exc})") from None

    def start(self) -> str:
        """The first dead-letter id to read (ids are their time in milliseconds)."""
        return f"{int(self.since.timestamp() * 1000)}-0" if self.since else "-"

    def matches(self, row: dict[str, Any], names: StreamNames) -> bool:
        if self._reason is not None and not self._reason.search(row.get("reason") or ""):
            return False
        if self.source is not None and row.get("source") != self.source:
            return False
        if self.stream is not None:
            want = names.for_kind(self.stream) if self.stream in KINDS else self.stream
            if row.get("stream") != want:
                return False
        return True


def select(r: redis.Redis, settings: Settings, sel: Selection) -> Iterable[tuple[str, dict[str, Any]]]:
    """The selected letters, oldest first, as (id, fields) with ``raw`` as bytes."""
    names = StreamNames.of(settings)
    n = 0
    for entry_id, row in iter_dead(r, settings, sel.start()):
        if sel.limit is not None and n >= sel.limit:
            return
        if sel.matches(row, names):
            n += 1
            yield entry_id, row


# --------------------------------------------------------------------------- one letter

# The MQTT feed's reasons (ingest/feeds/mqtt_readings.py): "mqtt topic '<topic>'[ item <i>]: <what>". What the feed refuses
# before it reads the objects (and so before it checks their tokens) starts with one of these.
_MQTT_REASON = re.compile(r"^mqtt topic (?P<topic>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")(?: item \d+)?: (?P<what>.*)$", re.S)
_MQTT_BEFORE_TOKEN = re.compile(r"^(topic does not match|district |unknown device type|device id |payload of \d+ bytes|"
                                r"payload is not valid JSON|empty batch|\d+ readings in one message|payload must be)")
# The push feed's letters for a whole request body (ingest/feeds/push.py), as opposed to one of its records.
_PUSH_BODY = re.compile(r"^(body of \d+ bytes exceeds|body exceeds the limit|unsupported content type|"
                        r"body is not valid JSON|body must be a JSON array|\d+ items exceed the limit)")

WHY_NO_STREAM = "names no stream to re-publish to"
WHY_TRUNCATED = "its raw payload was cut short when it was dead-lettered (only its size and sha256 are whole); resend it from the source"
WHY_TOKEN = "an MQTT reading refused for its token is never re-driven; fix the device's token and let it send again"
WHY_BEFORE_TOKEN = ("an MQTT payload refused before its token was checked cannot be re-driven unauthenticated; "
                    "fix the cause and let the device send again")
WHY_IMPORT = ("a spreadsheet row in the export's own shape: fix the mapping and re-drive with --mapping M.yaml, or "
              "import the file again (event ids are fixed per row, so nothing is stored twice)")
WHY_OPEN311 = ("an Open311 request in the source's own shape: fix the mapping and pull the window again "
               "(python -m ingest open311 --once --since ...; event ids come from the source, so nothing is stored twice)")
WHY_REPLAY = "a replay line in the export's own shape: fix it and replay the file again"
WHY_PUSH_BODY = "a whole HTTP push request body that was never read as records: the caller must send it again"
WHY_EMPTY = "holds no payload"


@dataclass
class Plan:
    """What to do with one letter: re-publish ``records`` to ``stream``, or leave it (skipped / still failing)."""

    outcome: str
    why: str = ""  # skipped: why not; still failing: the current reason
    stream: str | None = None
    records: list[bytes] = field(default_factory=list)


class Planner:
    """Decides each letter's fate from its fields and today's configuration. Writes nothing."""

    def __init__(self, city, settings: Settings, mqtt_decoder=None, mapping=None):
        self.city = city
        self.settings = settings
        self.names = StreamNames.of(settings)
        self.catalog = catalog_of(city)
        self._mqtt = mqtt_decoder
        self.mapping = mapping  # a spreadsheet mapping (ingest/feeds/spreadsheet/) to map import rows again with

    @property
    def mqtt(self):
        if self._mqtt is None:
            registry = load_registry(Path(self.settings.city_dir) / REGISTRY_FILE, self.city)
            self._mqtt = Decoder(self.city, self.settings, registry)
        return self._mqtt

    def plan(self, row: dict[str, Any]) -> Plan:
        stream = row.get("stream")
        reason = row.get("reason") or ""
        source = row.get("source") or ""
        raw = row.get("raw") or b""
        if not stream:
            return Plan(SKIPPED, WHY_NO_STREAM)
        if row.get("truncated") == "1":
            return Plan(SKIPPED, WHY_TRUNCATED)
        if stream.startswith("import:"):
            return self._import_row(stream, source, raw) if self.mapping is not None else Plan(SKIPPED, WHY_IMPORT)
        if stream not in (self.names.cases, self.names.sensors, self.names.bulk):
            return Plan(SKIPPED, f"names {stream[:80]!r}, which is not one of this deployment's streams")
        if "entry" in row:  # the worker's: a record a feed published, refused when applied
            return self._records(stream, raw)
        m = _MQTT_REASON.match(reason) if source == "mqtt" else None
        if m is not None:
            return self._mqtt_reading(m, raw, row.get("at"))
        return self._never_a_record(source, reason) or self._pushed(stream, source, raw)

    @staticmethod
    def _never_a_record(source: str, reason: str) -> Plan | None:
        """A letter refused before it was a record (a bad topic, an Open311 page, a replay file, a push body)."""
        if source == "mqtt" and reason.startswith("mqtt topic"):
            return Plan(SKIPPED, WHY_BEFORE_TOKEN)  # a topic too long to be read back, or not UTF-8
        if reason.startswith("open311 "):
            return Plan(SKIPPED, WHY_OPEN311)
        if reason.startswith("replay "):
            return Plan(SKIPPED, WHY_REPLAY)
        if _PUSH_BODY.match(reason):
            return Plan(SKIPPED, WHY_PUSH_BODY)
        return None

    def _pushed(self, stream: str, source: str, raw: bytes) -> Plan:
        """A record refused at the edge (HTTP push): the letter's source is the one its token was for."""
        try:
            item = orjson.loads(raw)
        except orjson.JSONDecodeError:
            item = None
        if isinstance(item, dict) and "source" in item and item["source"] != source:
            return Plan(SKIPPED, f"the record names source {str(item['source'])[:40]!r} but came with the token of "
                                 f"{source[:40]!r}; a token writes only its own source's records")
        if len(raw) > self.settings.max_payload_bytes:  # the edge's per-record limit, which the worker does not check
            return Plan(FAILING, f"record: {len(raw)} bytes exceeds the per-record limit of {self.settings.max_payload_bytes}")
        return self._records(stream, raw)

    def _import_row(self, stream: str, source: str, raw: bytes) -> Plan:
        """A spreadsheet row mapped again with ``self.mapping``: its events go to the bulk stream, as an import's."""
        try:
            row = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return Plan(FAILING, f"record: payload is not valid JSON ({exc})")
        if not isinstance(row, dict):
            return Plan(FAILING, "record: a spreadsheet row is a JSON object")
        number = row.pop("_row", 1)
        try:
            events, dead = map_rows([row], self.mapping, self.city, source, stream.removeprefix("import:"),
                                    int(number) if isinstance(number, int) else 1)
        except MappingError as exc:
            return Plan(FAILING, "; ".join(exc.problems))
        if dead:
            return Plan(FAILING, dead[0][1])
        return Plan(REDRIVEN, stream=self.names.bulk, records=events)

    def _records(self, stream: str, raw: bytes) -> Plan:
        if not raw.strip():
            return Plan(SKIPPED, WHY_EMPTY)
        model = SensorReading if stream == self.names.sensors else CaseEvent
        _, rejects = parse_json_entry(raw, model, self.catalog)
        if rejects:
            return Plan(FAILING, "; ".join(p for _, _, problems in rejects for p in problems))
        return Plan(REDRIVEN, stream=stream, records=[raw])

    def _mqtt_reading(self, m: re.Match, raw: bytes, at: str | None) -> Plan:
        what = m.group("what")
        if what.startswith("token refused"):
            return Plan(SKIPPED, WHY_TOKEN)
        if _MQTT_BEFORE_TOKEN.match(what):
            return Plan(SKIPPED, WHY_BEFORE_TOKEN)
        topic = ast.literal_eval(m.group("topic"))
        if len(topic) >= 200:  # the reason holds the first 200 characters only
            return Plan(SKIPPED, WHY_BEFORE_TOKEN)
        try:
            dtype, device = self.mqtt.parse_topic(topic)
        except ValueError as exc:
            return Plan(FAILING, f"mqtt topic {topic!r}: {exc}")
        try:
            item = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return Plan(FAILING, f"record: payload is not valid JSON ({exc})")
        # A reading without its own time was received when it was dead-lettered.
        rec, problems = self.mqtt.reading(item, dtype, device, at or datetime.now(UTC).isoformat())
        if rec is None:
            return Plan(FAILING, f"mqtt topic {topic!r}: {'; '.join(problems)}")
        return Plan(REDRIVEN, stream=self.names.sensors, records=[orjson.dumps(rec)])


# --------------------------------------------------------------------------- the run

_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_CASE = re.compile(r"\(case [^)]*\)")
_NUMBER = re.compile(r"\d+")


def reason_kind(reason: str) -> str:
    """A reason without what differs letter by letter (quoted values, case ids, numbers): the summary's key."""
    s = _CASE.sub("(case …)", reason)
    s = _QUOTED.sub("'…'", s)
    return _NUMBER.sub("N", s)[:200]


@dataclass
class Report:
    dry_run: bool = False
    examined: int = 0
    counts: Counter = field(default_factory=Counter)  # outcome → letters
    streams: Counter = field(default_factory=Counter)  # stream → letters re-driven
    by_reason: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))  # reason kind → outcome → n
    skipped_why: Counter = field(default_factory=Counter)
    failing: list[dict[str, str]] = field(default_factory=list)  # the first EXAMPLES still failing: id, reason now

    def add(self, entry_id: str, row: dict[str, Any], plan: Plan) -> None:
        self.examined += 1
        self.counts[plan.outcome] += 1
        self.by_reason[reason_kind(row.get("reason") or "")][plan.outcome] += 1
        if plan.outcome == SKIPPED:
            self.skipped_why[plan.why] += 1
        elif plan.outcome == FAILING and len(self.failing) < EXAMPLES:
            self.failing.append({"id": entry_id, "reason": plan.why[:500]})
        elif plan.outcome == REDRIVEN:
            self.streams[plan.stream] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "examined": self.examined,
            REDRIVEN: self.counts[REDRIVEN],
            SKIPPED: self.counts[SKIPPED],
            FAILING: self.counts[FAILING],
            "redriven_to": dict(self.streams),
            "by_reason": {k: {o: v[o] for o in (REDRIVEN, SKIPPED, FAILING)} for k, v in
                          sorted(self.by_reason.items(), key=lambda kv: -sum(kv[1].values()))},
            "skipped_why": dict(self.skipped_why.most_common()),
            "still_failing_examples": self.failing,
        }

    def text(self) -> str:
        verb = "would be re-driven" if self.dry_run else "re-driven"
        lines = [f"dead letters examined: {self.examined:,}",
                 f"  {verb}: {self.counts[REDRIVEN]:,}"
                 + (f" ({', '.join(f'{n:,} to {s}' for s, n in self.streams.items())})" if self.streams else ""),
                 f"  skipped: {self.counts[SKIPPED]:,}", f"  still failing: {self.counts[FAILING]:,}"]
        if self.by_reason:
            lines.append("by reason (re-driven / skipped / still failing):")
            for k, v in sorted(self.by_reason.items(), key=lambda kv: -sum(kv[1].values())):
                lines.append(f"  {v[REDRIVEN]:>7,} {v[SKIPPED]:>7,} {v[FAILING]:>7,}  {k}")
        if self.skipped_why:
            lines.append("skipped because:")
            lines += [f"  {n:>7,}  {why}" for why, n in self.skipped_why.most_common()]
        if self.failing:
            lines.append("still failing (left in place), e.g.:")
            lines += [f"  {f['id']}  {f['reason']}" for f in self.failing]
        return "\n".join(lines)


class Busy(RuntimeError):
    """Another re-drive holds the lock."""


def redrive(r: redis.Redis, settings: Settings, city, sel: Selection, *, dry_run: bool = False,
            mqtt_decoder=None, mapping=None, progress: Callable[[Report], None] | None = None, progress_every: int = 1000) -> Report:
    """Re-drive the selected dead letters (see the module's description). Returns the report."""
    names = StreamNames.of(settings)
    planner = Planner(city, settings, mqtt_decoder, mapping)
    report = Report(dry_run=dry_run)
    lock = None if dry_run else r.lock(settings.key("dead", "redrive", "lock"), timeout=LOCK_SECONDS, blocking=False)
    if lock is not None and not lock.acquire():
        raise Busy("another re-drive is running (it holds the lock for up to "
                   f"{LOCK_SECONDS} s after its last step); try again when it has finished")
    pending: list[tuple[str, dict[str, Any], Plan]] = []

    def flush() -> None:
        # Each letter's XADD and its XDEL in one MULTI/EXEC: both happen or neither.
        pipe = r.pipeline(transaction=True)
        for entry_id, row, plan in pending:
            Producer(r, settings, source=row.get("source") or "redrive").queue(plan.stream, plan.records, pipe)
            pipe.xdel(names.dead, entry_id)
        pipe.execute()
        pending.clear()
        lock.reacquire()

    last = time.monotonic()
    try:
        for entry_id, row in select(r, settings, sel):
            plan = planner.plan(row)
            report.add(entry_id, row, plan)
            if plan.outcome == REDRIVEN and not dry_run:
                pending.append((entry_id, row, plan))
                if len(pending) >= TXN_LETTERS:
                    flush()
            if progress is not None and (report.examined % progress_every == 0 or time.monotonic() - last > 2):
                last = time.monotonic()
                progress(report)
        if pending:
            flush()
    finally:
        if lock is not None:
            with contextlib.suppress(redis.exceptions.LockError):  # expired: nothing to release
                lock.release()
    return report


def progress_line(report: Report, stream=None) -> None:
    """One line of progress on stderr."""
    c = report.counts
    print(f"redrive: {report.examined:,} examined, {c[REDRIVEN]:,} re-driven, {c[SKIPPED]:,} skipped, "
          f"{c[FAILING]:,} still failing", file=stream or sys.stderr, flush=True)
