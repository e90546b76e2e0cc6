"""Runtime settings: one typed object, read from environment variables.

Every variable is optional; the defaults run the whole system on one machine with an
embedded Redis and a SQLite file under ``var/``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    redis_url: str | None = Field(None, description="Redis URL; unset starts an embedded Redis under VAR_DIR")
    database_url: str | None = Field(None, description="SQLAlchemy URL; unset uses SQLite at VAR_DIR/gridwatch.db")
    var_dir: Path = Field(ROOT / "var", description="where the embedded Redis, SQLite and archives live")
    city_dir: Path = Field(ROOT / "config" / "city", description="the city: geography and reference data")
    port: int = Field(8050, description="web port")
    host: str = Field("127.0.0.1", description="web bind address")
    timezone: str = Field("Asia/Shanghai", description="the city's time zone for display")
    stream_prefix: str = Field("gw", description="prefix of every Redis key this system writes")
    stream_maxlen: int = Field(1_000_000, description="approximate MAXLEN of each stream")
    dead_maxlen: int = Field(100_000, description="approximate MAXLEN of the dead-letter stream")
    consumer_group: str = Field("workers", description="consumer group name")
    worker_batch: int = Field(50, description="entries read per XREADGROUP (an entry holds up to 100 records)")
    bulk_batch: int = Field(10, description="bulk-import entries applied per loop between live batches")
    worker_block_ms: int = Field(1000, description="longest wait for new entries")
    claim_idle_ms: int = Field(30_000, description="pending entries idle this long are reclaimed from dead consumers")
    max_payload_bytes: int = Field(64 * 1024, description="largest single record accepted")
    max_push_bytes: int = Field(8 * 1024 * 1024, description="largest HTTP push body accepted")
    max_push_items: int = Field(5000, description="most items in one HTTP push")
    log_level: str = Field("INFO", description="logging level")
    # Feeds
    mqtt_url: str | None = Field(None, description="MQTT broker, e.g. mqtt://user:pass@127.0.0.1:1883; unset: no MQTT feed")
    mqtt_username: str | None = Field(None, description="MQTT user (overrides the URL's)")
    mqtt_password: str | None = Field(None, description="MQTT password (overrides the URL's)")
    mqtt_topic_root: str = Field("gridwatch", description="topics are ROOT/<district>/<device_type>/<device_id>")
    holidays_file: Path = Field(ROOT / "config" / "holidays.yaml", description="holiday schedule for years chinesecalendar does not know")
    risk_file: Path = Field(ROOT / "config" / "risk.yaml", description="the risk model: weights, hotspot rule, thresholds")
    feeds_file: Path = Field(ROOT / "config" / "feeds.yaml", description="pulling feeds (Open311 endpoints) and their mappings")
    rankings_file: Path = Field(ROOT / "config" / "rankings.yaml", description="department rankings: composite weights, minimum volume, list size")
    screen_title: str | None = Field(None, description="big screen title (default: 光明区党建引领基层治理 · 实时风险预警图)")
    map_tile_url: str | None = Field(None, description="tile layer URL template drawn under the maps, e.g. an intranet tile server; none by default")
    sla_warn_share: float = Field(0.2, ge=0, le=1, description="a deadline is 'warning' when this share of its window is left")
    sla_escalate_after_hours: float = Field(24.0, description="overdue this long escalates to the department head / district")
    whistle_report_minutes: int = Field(30, description="吹哨报到: a summoned department must check in within this many minutes")
    device_offline_factor: float = Field(2.0, description="a device is offline after this many heartbeats of silence")
    cookie_secure: bool = Field(False, description="send the session cookie over HTTPS only (set it when served over "
                                                   "HTTPS, as in production)")
    trust_proxy: bool = Field(False, description="take the client's address from X-Forwarded-For (behind a reverse "
                                                 "proxy only: otherwise anyone can claim any address)")
    briefing_time: str = Field("07:30", pattern=r"^([01]\d|2[0-3]):[0-5]\d$",
                               description="when the scheduler archives the briefings (HH:MM, city time): yesterday's "
                                           "daily, on Mondays last week's, on the 1st last month's")

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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
