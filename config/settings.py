"""Runtime settings: one typed object, read from environment variables.

Every variable is optional; the defaults run the whole system on one machine with an
embedded Redis and a SQLite file under ``var/``.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent

# A feed token's source: a record's source name (core/records.py: Ident, at most 32 characters).
_SOURCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/#@+-]{0,31}$")
# A bearer token's syntax (RFC 6750 b64token): fits a header as it is and a JSON string without escapes.
_TOKEN = re.compile(r"^(?=.{16,256}$)[A-Za-z0-9._~+/-]+=*$")
TOKEN_HINT = "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"


class Settings(BaseSettings):
    # hide_input_in_errors: a validation error must never print FEED_TOKENS' (or any other secret's) value.
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False, hide_input_in_errors=True)

    redis_url: str | None = Field(None, description="Redis URL; unset starts an embedded Redis under VAR_DIR")
    database_url: str | None = Field(None, description="SQLAlchemy URL; unset uses SQLite at VAR_DIR/gridwatch.db")
    var_dir: Path = Field(ROOT / "var", description="where the embedded Redis, SQLite and archives live")
    city_dir: Path = Field(ROOT / "config" / "city", description="the city: geography and reference data")
    port: int = Field(8050, description="web port")
    host: str = Field("127.0.0.1", description="web bind address")
    stream_prefix: str = Field("gw", description="prefix of every Redis key this system writes")
    stream_maxlen: int = Field(1_000_000, description="approximate MAXLEN of each stream")
    dead_maxlen: int = Field(100_000, description="approximate MAXLEN of the dead-letter stream")
    consumer_group: str = Field("workers", description="consumer group name")
    worker_batch: int = Field(50, description="entries read per XREADGROUP (an entry holds up to 100 records)")
    bulk_batch: int = Field(10, description="bulk-import entries applied per loop between live batches")
    worker_block_ms: int = Field(1000, description="longest wait for new entries")
    claim_idle_ms: int = Field(30_000, description="pending entries idle this long are reclaimed from dead consumers")
    health_pending_max_s: float = Field(120.0, gt=0, description="/healthz is degraded when an entry waits this long "
                                                                 "to be applied")
    health_stale_s: float = Field(120.0, gt=0, description="/healthz is degraded when nothing was applied this long "
                                                           "although feeds publish")
    worker_name: str | None = Field(None, description="the worker's consumer name, stable across restarts so a restarted "
                                                      "worker re-applies what it left pending first (default: "
                                                      "<host>-worker; give each worker on one host its own)")
    action_wait_seconds: float = Field(3.0, ge=0, le=30, description="how long an action's answer waits for the "
                                       "worker to apply it (then 202: accepted, not yet applied)")
    hold_seconds: float = Field(60.0, gt=0, description="how long a case event whose case is not there yet (or whose "
                                                        "predecessor is still pending) waits before it is dead-lettered")
    max_payload_bytes: int = Field(64 * 1024, description="largest single record accepted")
    max_push_bytes: int = Field(8 * 1024 * 1024, description="largest HTTP push body accepted")
    max_push_items: int = Field(5000, description="most items in one HTTP push")
    retry_after_s: int = Field(10, ge=1, description="Retry-After (seconds) of a 503 while Redis or SQL is away")
    log_level: str = Field("INFO", description="logging level")
    # Feeds
    mqtt_url: str | None = Field(None, description="MQTT broker, e.g. mqtt://user:pass@127.0.0.1:1883; unset: no MQTT feed")
    mqtt_username: str | None = Field(None, description="MQTT user (overrides the URL's)")
    mqtt_password: str | None = Field(None, description="MQTT password (overrides the URL's)")
    mqtt_topic_root: str = Field("gridwatch", description="topics are ROOT/<district>/<device_type>/<device_id>")
    feed_tokens: Annotated[dict[str, SecretStr], NoDecode] = Field(
        default_factory=dict,
        description="FEED_TOKENS: a JSON object of source name → token, e.g. {\"citizen\": \"…\", \"mqtt\": \"…\"}. "
                    "HTTP push takes a source's records only with 'Authorization: Bearer <its token>'; MQTT devices "
                    "put the 'mqtt' token in each reading's \"token\" field. A source without a token is refused. "
                    "Tokens are 16-256 letters, digits or - . _ ~ + / (bearer token syntax). `make demo` makes its "
                    "own when unset (VAR_DIR/feed-tokens.json).")
    holidays_file: Path = Field(ROOT / "config" / "holidays.yaml", description="holiday schedule for years chinesecalendar does not know")
    risk_file: Path = Field(ROOT / "config" / "risk.yaml", description="the risk model: weights, hotspot rule, thresholds")
    feeds_file: Path = Field(ROOT / "config" / "feeds.yaml", description="pulling feeds (Open311 endpoints) and their mappings")
    rankings_file: Path = Field(ROOT / "config" / "rankings.yaml", description="department rankings: composite weights, minimum volume, list size")
    routing_file: Path = Field(ROOT / "config" / "routing.yaml", description="智能分拨: the rules that route a case without departments")
    notify_file: Path = Field(ROOT / "config" / "notify.yaml", description="notifications: channels (Apprise URLs) "
                                                                         "and the rules that send to them")
    notify_base_url: str | None = Field(None, description="the address people open the links of notifications at "
                                                          "(default: the file's base_url, else http://HOST:PORT)")
    screen_title: str | None = Field(None, description="big screen title (default: 光明区党建引领基层治理 · 实时风险预警图)")
    map_tile_url: str | None = Field(None, description="tile layer URL template drawn under the maps, e.g. an intranet tile server; none by default")
    sla_warn_share: float = Field(0.2, ge=0, le=1, description="a deadline is 'warning' when this share of its window is left")
    sla_escalate_after_hours: float = Field(24.0, description="overdue this long escalates to the department head / district")
    whistle_report_minutes: int = Field(30, description="吹哨报到: a summoned department must check in within this many minutes")
    device_offline_factor: float = Field(2.0, description="a device is offline after this many heartbeats of silence")
    cookie_secure: bool = Field(False, description="send the session cookie over HTTPS only (set it when served over "
                                                   "HTTPS, as in production)")
    trust_proxy: int = Field(0, ge=0, le=10, description="how many reverse proxies stand in front of the app (0: none): "
                                                        "the client's address is the one the outermost of them saw, read "
                                                        "from the right of X-Forwarded-For (Werkzeug's ProxyFix); true / "
                                                        "false still mean 1 / 0")
    briefing_time: str = Field("07:30", pattern=r"^([01]\d|2[0-3]):[0-5]\d$",
                               description="when the scheduler archives the briefings (HH:MM, city time): yesterday's "
                                           "daily, on Mondays last week's, on the 1st last month's")

    @field_validator("trust_proxy", mode="before")
    @classmethod
    def _trust_proxy(cls, value: Any) -> Any:
        """TRUST_PROXY was a flag: true / false (yes / no, on / off) still read as 1 / 0 hops."""
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, str):
            word = value.strip().lower()
            return {"true": 1, "yes": 1, "on": 1, "false": 0, "no": 0, "off": 0, "": 0}.get(word, word)
        return value

    @field_validator("feed_tokens", mode="before")
    @classmethod
    def _feed_tokens(cls, value: Any) -> Any:
        return feed_tokens(value)

    def feed_token(self, source: str) -> str | None:
        """The token FEED_TOKENS holds for ``source``, or None. The one place a token's value is read."""
        token = self.feed_tokens.get(source)
        if token is None:
            return None
        return token.get_secret_value() if isinstance(token, SecretStr) else str(token)  # model_copy keeps plain str

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            url = self.database_url
            if url.startswith("postgres://"):
                url = "postgresql+psycopg://" + url[len("postgres://"):]
            elif url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url[len("postgresql://"):]
            return url
        return f"sqlite:///{self.var_dir / 'gridwatch.db'}"

    def key(self, *parts: str) -> str:
        """A Redis key under this deployment's prefix: key('stream', 'cases') -> 'gw:stream:cases'."""
        return ":".join((self.stream_prefix, *parts))


def feed_tokens(value: Any, name: str = "FEED_TOKENS") -> dict[str, Any]:
    """Feed tokens given as JSON (the environment, a file) or a mapping, checked: source → token. Every problem
    names ``name``, the source and the fix, never the token."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{name} is not valid JSON ({exc.msg} at character {exc.pos}); it must be a JSON "
                             'object of source → token, e.g. {"citizen": "<token>"}') from None
    if not isinstance(value, dict):
        raise ValueError(f'{name} must be a JSON object of source → token, e.g. {{"citizen": "<token>"}}')
    problems = []
    for source, token in value.items():
        if not isinstance(source, str) or not _SOURCE.match(source):
            problems.append(f"source {str(source)[:40]!r} is not a source name (1-32 letters, digits or "
                            "_ . : / # @ + -, starting with a letter or digit)")
        secret = token.get_secret_value() if isinstance(token, SecretStr) else token
        if not isinstance(secret, str) or not _TOKEN.match(secret):
            problems.append(f"the token of source {str(source)[:40]!r} must be 16-256 letters, digits or "
                            f"- . _ ~ + / (then = padding only); {TOKEN_HINT}")
    if problems:
        raise ValueError(f"{name}: " + "; ".join(problems))
    return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
