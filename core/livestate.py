"""The layout of the live state in Redis: what "now" looks like, readable in O(areas).

Pure: key names, encodings and the server-side scripts as text. The worker runs the scripts
(store/live.py); the views read the keys (dashboard/live.py).

Keys (``P`` is the deployment prefix, default ``gw``):

- ``P:live:case``      hash  case id → ``grid|grade|status|overdue|warning|2`` (the case's counted state; the
    trailing layout mark says the grade's overdue counter ``oN`` was counted too — a state counted before those
    counters existed lacks it, so taking it back never moves them, and re-asserting it counts them)
- ``P:live:area:CODE`` hash  per district/street/community/grid code:
    ``total`` cases, ``open``, ``g1``..``g4`` open by grade, ``overdue`` open and overdue, ``o1``..``o4`` open and
    overdue by grade (the risk model weighs them), ``warning`` open and near the deadline (临期, not yet overdue),
    ``s:STATUS`` cases by status, ``alarms`` active sensor alarms
- ``P:live:alarm``     hash  device id → JSON of the active alarm (``grid`` inside)
- ``P:live:device``    hash  device id → JSON of the last reading
- ``P:live:feeds``     hash  source → ISO time of its last applied record
- ``P:live:feed_status`` hash feed → JSON health reported by pulling/subscribing feeds (ok, failures, error)
- ``P:live:feed_refused`` hash ``feed|source|reason`` → how many requests or messages a feed refused for lack of the
    right token or credentials (ingest/feedauth.py counts them; read back merged into the feed's status as
    ``refused: {source: {reason: n}}``, see :func:`with_refusals`)
- ``P:live:offline``   hash  device id → JSON of its open offline alarm (``grid`` inside); area field ``offline``
- ``P:live:last_event_at``  ISO time of the newest applied record
- ``P:live:worker:NAME`` JSON heartbeat of the worker (consumer) NAME, TTL 15 s, rewritten every 2 s: present while
    that worker process is alive. ``{name, host, pid, beat_at, applied_at, failing, error, failing_since}``
    (ingest/heartbeat.py); ``applied_at`` is when it last applied something, ``failing`` its batches failed in a row
- ``P:live:workers``   hash  worker name → the same JSON, the last word of every worker (kept after it stops)
- ``P:live:recent``    sorted set  case id, scored by its report time (Unix seconds): the located reports of the last
    ``RECENT_HORIZON_HOURS`` at most, the index by which the risk sweep trims ``P:live:recent_info``
- ``P:live:recent_info`` hash  case id → ``reported|category|grid|lon|lat`` (Unix seconds, 小类, grid, WGS84): what
    the hotspot finder reads; rewritten whenever the case is touched, so a reclassified or relocated case moves
- ``P:live:risk``      hash  area code → JSON ``{score, level, parts}`` as of the last risk sweep
- ``P:live:risk_levels`` JSON ``{area code: level}`` of the last risk sweep (how it sees what changed)
- ``P:live:hotspots``  JSON list of the hotspots found by the last risk sweep (core.risk.Hotspot.as_dict)
- ``P:live:risk_at``   ISO time of the last risk sweep

Counting is idempotent: the script compares the case's new state with the one it counted
before and moves counters by the difference, so applying the same state twice changes nothing,
and a worker that crashed after writing SQL but before Redis repairs the counters on redelivery.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.lifecycle import OPEN_STATUSES


@dataclass(frozen=True)
class LiveKeys:
    prefix: str = "gw"

    @property
    def cases(self) -> str:
        return f"{self.prefix}:live:case"

    def area(self, code: str) -> str:
        return f"{self.prefix}:live:area:{code}"

    @property
    def area_prefix(self) -> str:
        return f"{self.prefix}:live:area:"

    @property
    def alarms(self) -> str:
        return f"{self.prefix}:live:alarm"

    @property
    def devices(self) -> str:
        return f"{self.prefix}:live:device"

    @property
    def feeds(self) -> str:
        return f"{self.prefix}:live:feeds"

    @property
    def feed_status(self) -> str:
        return f"{self.prefix}:live:feed_status"

    @property
    def feed_refused(self) -> str:
        return f"{self.prefix}:live:feed_refused"

    @property
    def offline(self) -> str:
        return f"{self.prefix}:live:offline"

    @property
    def last_event_at(self) -> str:
        return f"{self.prefix}:live:last_event_at"

    @property
    def drill(self) -> str:
        """JSON {run_id, source, since} while a drill replay runs (a short TTL its process keeps renewing)."""
        return f"{self.prefix}:live:drill"

    def worker(self, name: str) -> str:
        return f"{self.prefix}:live:worker:{name}"

    @property
    def worker_prefix(self) -> str:
        return f"{self.prefix}:live:worker:"

    @property
    def workers(self) -> str:
        return f"{self.prefix}:live:workers"

    @property
    def recent(self) -> str:
        return f"{self.prefix}:live:recent"

    @property
    def recent_info(self) -> str:
        return f"{self.prefix}:live:recent_info"

    @property
    def risk(self) -> str:
        return f"{self.prefix}:live:risk"

    @property
    def risk_levels(self) -> str:
        return f"{self.prefix}:live:risk_levels"

    @property
    def hotspots(self) -> str:
        return f"{self.prefix}:live:hotspots"

    @property
    def risk_at(self) -> str:
        return f"{self.prefix}:live:risk_at"


# Reports older than this are never added to the recent reports (the risk sweep keeps its own, shorter window).
RECENT_HORIZON_HOURS = 168
STATE_LAYOUT = "2"  # the last field of a counted case state: o1..o4 were counted with it


def encode_recent(reported: float, category: str, grid: str, lon: float, lat: float) -> str:
    return f"{reported:.0f}|{category}|{grid}|{lon:.6f}|{lat:.6f}"


def decode_recent(value: str | bytes) -> tuple[float, str, str, float, float]:
    if isinstance(value, bytes):
        value = value.decode()
    reported, category, grid, lon, lat = value.split("|")
    return float(reported), category, grid, float(lon), float(lat)


def encode_case_state(grid: str | None, grade: int, status: str, overdue: bool, warning: bool = False) -> str:
    return f"{grid or ''}|{grade}|{status}|{1 if overdue else 0}|{1 if warning and not overdue else 0}|{STATE_LAYOUT}"


_OPEN = ",".join(f'["{s.value}"]=true' for s in sorted(OPEN_STATUSES))

# KEYS[1] case hash; ARGV: prefix, district code, then pairs (case id, new state).
CASE_STATE_LUA = f"""
local OPEN = {{{_OPEN}}}
local prefix = ARGV[1]
local district = ARGV[2]
local function areas(grid)
  if grid == '' then return {{district}} end
  return {{string.sub(grid, 1, 6), string.sub(grid, 1, 9), string.sub(grid, 1, 12), grid}}
end
local function count(state, sign)
  local grid, grade, status, overdue, warning, layout =
    string.match(state, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|?([^|]*)|?([^|]*)$')
  for _, code in ipairs(areas(grid)) do
    local key = prefix .. ':live:area:' .. code
    redis.call('HINCRBY', key, 'total', sign)
    redis.call('HINCRBY', key, 's:' .. status, sign)
    if OPEN[status] then
      redis.call('HINCRBY', key, 'open', sign)
      redis.call('HINCRBY', key, 'g' .. grade, sign)
      if overdue == '1' then
        redis.call('HINCRBY', key, 'overdue', sign)
        if layout ~= '' then redis.call('HINCRBY', key, 'o' .. grade, sign) end
      end
      if warning == '1' then redis.call('HINCRBY', key, 'warning', sign) end
    end
  end
end
local changed = 0
for i = 3, #ARGV, 2 do
  local id, new = ARGV[i], ARGV[i + 1]
  local old = redis.call('HGET', KEYS[1], id)
  if old ~= new then
    if old then count(old, -1) end
    count(new, 1)
    redis.call('HSET', KEYS[1], id, new)
    changed = changed + 1
  end
end
return changed
"""

# KEYS[1] alarm hash; ARGV: prefix, district code, area counter field ('alarms' or 'offline'),
# then triples (device id, grid or '', alarm JSON or '' to clear).
ALARM_STATE_LUA = """
local prefix = ARGV[1]
local district = ARGV[2]
local field = ARGV[3]
local function areas(grid)
  if grid == '' then return {district} end
  return {string.sub(grid, 1, 6), string.sub(grid, 1, 9), string.sub(grid, 1, 12), grid}
end
local function count(grid, sign)
  for _, code in ipairs(areas(grid)) do
    redis.call('HINCRBY', prefix .. ':live:area:' .. code, field, sign)
  end
end
local changed = 0
for i = 4, #ARGV, 3 do
  local device, grid, alarm = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local old = redis.call('HGET', KEYS[1], device)
  if alarm == '' then
    if old then
      local ok, prev = pcall(cjson.decode, old)
      local pgrid = ''
      if ok and type(prev) == 'table' and type(prev['grid']) == 'string' then pgrid = prev['grid'] end
      count(pgrid, -1)
      redis.call('HDEL', KEYS[1], device)
      changed = changed + 1
    end
  elseif not old then
    count(grid, 1)
    redis.call('HSET', KEYS[1], device, alarm)
    changed = changed + 1
  end
end
return changed
"""


def refusal_field(feed: str, source: str, reason: str) -> str:
    """The ``feed_refused`` hash field of one (feed, source, reason). ``|`` is in no feed, source or reason name."""
    return f"{feed}|{source}|{reason}"


def with_refusals(states: dict[str, dict], counts: dict[str, int]) -> dict[str, dict]:
    """Feed statuses with the refusal counters (``feed_refused``, field → count) merged in as
    ``refused: {source: {reason: n}}``. A feed with refusals but no status of its own (HTTP push: it is the web app,
    up whenever this is read) gets ``ok: true`` so its refusals show without marking anything down."""
    out = {feed: dict(state) for feed, state in states.items()}
    for name, n in sorted(counts.items()):
        feed, _, rest = name.partition("|")
        source, _, reason = rest.rpartition("|")
        state = out.setdefault(feed, {"ok": True, "detail": "no status of its own; refusals counted"})
        state.setdefault("refused", {}).setdefault(source, {})[reason] = int(n)
    return out


def drill_prefix(prefix: str) -> str:
    """The prefix of a drill's own live state (its cases' counters, its devices and alarms): ``P:drill``, so
    ``P:drill:live:…`` beside the city's ``P:live:…``. Every live figure of the city leaves drills out."""
    return f"{prefix}:drill"
