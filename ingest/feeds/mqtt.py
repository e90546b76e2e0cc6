"""MQTT feed: subscribe to sensor readings on a broker and publish them to the sensor stream.

Topics are ``<root>/<district>/<device_type>/<device_id>``; the feed subscribes to the whole district with QoS 1, so
a topic off the layout is dead-lettered, not ignored. What a reading may hold, and the device registry, are in
mqtt_readings.py (the README's "MQTT sensors" in full). paho's network thread only queues messages; a publisher
thread decodes and publishes them every 100 ms or 500 messages (docs/decisions/0008-mqtt-acknowledges-on-receipt.md).
Run: ``python -m ingest mqtt [--url URL] [--topic-root ROOT]``, or :func:`run` in a thread.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

import redis

from config import settings as config_settings
from config.city import CityConfigError, load_city
from config.settings import Settings
from ingest import feedauth
from ingest.feedhealth import FeedHealth
from ingest.feeds.mqtt_readings import (
    REGISTRY_FILE,
    SOURCE,
    Decoder,
    RegisteredDevice,
    Reject,
    load_registry,
    topic_root,
)
from store.services import get_redis
from store.streams import Producer, dead_letter

log = logging.getLogger(__name__)

FEED = "mqtt"
BATCH_SECONDS = 0.1  # publish what arrived at least this often ...
BATCH_MAX = 500  # ... or as soon as this many messages are waiting
HEALTH_EVERY = 30.0  # seconds between FeedHealth.ok() while connected
LOG_EVERY = 60.0  # seconds between count log lines
# CONNACK codes of a broker refusing the client's credentials (paho maps MQTT 3.1.1's 4 and 5 to these)
CREDENTIAL_CODES = frozenset({134, 135})  # bad user name or password, not authorized
NO_TOKEN = (f"FEED_TOKENS holds no token for source {SOURCE!r}, so every reading would be refused: set FEED_TOKENS, "
            f"e.g. '{{\"{SOURCE}\": \"<token>\"}}', and give the devices that token in each reading's \"token\" field")


# --------------------------------------------------------------------------- broker address


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __str__(self) -> str:  # for logs and health: never the credentials
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def broker_address(url: str, settings: Settings | None = None) -> BrokerAddress:
    """Parse ``mqtt://[user[:password]@]host[:port]`` (or ``mqtts://`` for TLS). ``MQTT_USERNAME`` and
    ``MQTT_PASSWORD`` override the URL's credentials. ValueError says what is wrong."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme in ("mqtt", "tcp"):
        tls, default_port = False, 1883
    elif scheme in ("mqtts", "ssl", "tls"):
        tls, default_port = True, 8883
    else:
        raise ValueError(f"MQTT URL {url!r}: unsupported scheme {parts.scheme!r}; use mqtt://host:1883 or mqtts://host:8883")
    if not parts.hostname:
        raise ValueError(f"MQTT URL {url!r}: no host; use e.g. mqtt://127.0.0.1:1883")
    try:
        port = parts.port or default_port
    except ValueError as exc:
        raise ValueError(f"MQTT URL: bad port ({exc})") from None
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    if settings is not None:
        username = settings.mqtt_username or username
        password = settings.mqtt_password or password
    return BrokerAddress(parts.hostname, port, tls, username, password)


# --------------------------------------------------------------------------- the feed


@dataclass
class Counts:
    messages: int = 0
    readings: int = 0
    dead: int = 0
    skipped: int = 0
    token_refused: int = 0  # readings refused for a missing or wrong token (also among ``dead``)
    connects: int = 0
    disconnects: int = 0
    credentials_refused: int = 0  # connections the broker refused for MQTT_USERNAME / MQTT_PASSWORD

    def snapshot(self) -> dict[str, int]:
        return dict(self.__dict__)


_STOP = object()


class MqttFeed:
    """One MQTT subscription publishing to the sensor stream. ``start()``, then ``stop()``; see :func:`run`."""

    def __init__(self, settings: Settings, r: redis.Redis, *, city=None, url: str | None = None,
                 topic_root: str | None = None, registry: Mapping[str, RegisteredDevice] | None = None,
                 client_id: str | None = None):
        import paho.mqtt.client as mqtt

        if city is None:
            city = load_city(settings.city_dir)
        url = url or settings.mqtt_url
        if not url:
            raise ValueError("no MQTT broker: set MQTT_URL (e.g. mqtt://127.0.0.1:1883) or pass --url")
        self.settings = settings
        self.broker = broker_address(url, settings)
        if registry is None:
            registry = load_registry(Path(settings.city_dir) / REGISTRY_FILE, city)
        self.decoder = Decoder(city, settings, registry, topic_root or settings.mqtt_topic_root)
        self.subscription = self.decoder.subscription
        self.producer = Producer(r, settings, source=SOURCE)
        self.health = FeedHealth(r, settings, FEED)
        self.counts = Counts()
        self.connected = threading.Event()
        self.subscribed = threading.Event()  # set when the broker granted the subscription (again after a reconnect)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._stopping = False
        self._lock = threading.Lock()
        self._publisher: threading.Thread | None = None
        self._refusals_logged_at: float | None = None
        if settings.feed_token(SOURCE) is None:
            log.error("mqtt: %s", NO_TOKEN)

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"gridwatch-{uuid.uuid4().hex[:12]}",
                             clean_session=True, protocol=mqtt.MQTTv311)
        if self.broker.username is not None:
            client.username_pw_set(self.broker.username, self.broker.password)
        if self.broker.tls:
            client.tls_set()
        client.reconnect_delay_set(1, 60)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self.client = client

    # ---- paho callbacks (network thread: keep them short) ----------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure and reason_code.value in CREDENTIAL_CODES:
            self._credentials_refused(str(reason_code))
            return
        if reason_code.is_failure:
            log.warning("mqtt: %s refused the connection: %s", self.broker, reason_code)
            self._failed(f"{self.broker} refused the connection: {reason_code}")
            return
        self.connected.set()
        self.counts.connects += 1
        log.info("mqtt: connected to %s; subscribing to %s", self.broker, self.subscription)
        client.subscribe(self.subscription, qos=1)

    def _on_connect_fail(self, client, userdata) -> None:
        log.warning("mqtt: cannot connect to %s; retrying with backoff (up to 60 s)", self.broker)
        self._failed(f"cannot connect to {self.broker}")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        self.subscribed.clear()
        if self._stopping:
            log.info("mqtt: disconnected from %s", self.broker)
            return
        if not was_connected:  # the end of an attempt the broker refused: _on_connect reported it
            log.debug("mqtt: %s closed a refused connection (%s)", self.broker, reason_code)
            return
        self.counts.disconnects += 1
        log.warning("mqtt: lost the connection to %s (%s); reconnecting with backoff", self.broker, reason_code)
        self._failed(f"disconnected from {self.broker}: {reason_code}")

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        refused = [str(rc) for rc in reason_codes if rc.is_failure]
        if refused:
            log.error("mqtt: the broker refused the subscription to %s: %s", self.subscription, ", ".join(refused))
            self._failed(f"subscription to {self.subscription} refused: {', '.join(refused)}")
            return
        self.subscribed.set()
        self._ok()

    def _on_message(self, client, userdata, msg) -> None:
        self._queue.put((msg, datetime.now(UTC)))

    def _credentials_refused(self, reason: str) -> None:
        """The broker refused MQTT_USERNAME / MQTT_PASSWORD: say which settings to fix, count it; paho retries."""
        self.counts.credentials_refused += 1
        who = f"user {self.broker.username!r}" if self.broker.username else "no user name"
        log.error("mqtt: %s refused the credentials (%s, %s): set MQTT_USERNAME and MQTT_PASSWORD (or user:password "
                  "in MQTT_URL) to an account the broker accepts; retrying with backoff (up to 60 s)",
                  self.broker, who, reason)
        try:
            feedauth.count_refused(self.producer.r, self.settings, FEED, str(self.broker), feedauth.CREDENTIALS_REFUSED)
        except redis.RedisError as exc:
            log.warning("mqtt: cannot count a refusal: %s", exc)
        self._failed(f"{self.broker} refused the credentials ({who}, {reason}): fix MQTT_USERNAME / MQTT_PASSWORD")

    # ---- health ---------------------------------------------------------------------------------
    def _ok(self) -> None:
        try:
            self.health.ok(f"subscribed to {self.subscription} on {self.broker}", **self.counts.snapshot())
        except redis.RedisError as exc:
            log.warning("mqtt: cannot record feed health: %s", exc)

    def _failed(self, error: str) -> None:
        try:
            self.health.failed(error)
        except redis.RedisError as exc:
            log.warning("mqtt: cannot record feed health: %s", exc)

    # ---- publisher thread -------------------------------------------------------------------------
    def _collect(self) -> tuple[list, bool]:
        """Wait for messages; return (batch, stop) once BATCH_SECONDS passed since the first or BATCH_MAX are in."""
        try:
            first = self._queue.get(timeout=0.5)
        except queue.Empty:
            return [], False
        if first is _STOP:
            return [], True
        batch = [first]
        deadline = time.monotonic() + BATCH_SECONDS
        while len(batch) < BATCH_MAX:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                item = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _publish_loop(self) -> None:
        while True:
            batch, stop = self._collect()
            if batch:
                try:
                    self.handle(batch)
                except Exception:  # never let one batch end the feed
                    log.exception("mqtt: could not handle a batch of %d messages", len(batch))
            if stop:
                # drain what the network thread queued before it stopped
                rest = []
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is not _STOP:
                        rest.append(item)
                if rest:
                    self.handle(rest)
                return

    def handle(self, batch: list) -> None:
        """Decode a batch of (message, received) and publish the readings and dead letters."""
        records: list[dict] = []
        rejects: list[Reject] = []
        refused: Counter = Counter()
        refused_topic = None
        skipped = 0
        for msg, received in batch:
            try:
                topic = msg.topic
            except UnicodeDecodeError:
                rejects.append(Reject(feedauth.scrub(bytes(msg.payload), self.settings), "mqtt topic is not valid UTF-8"))
                continue
            d = self.decoder.decode(topic, msg.payload, received, bool(msg.retain))
            records.extend(d.records)
            rejects.extend(d.rejects)
            skipped += d.skipped
            if d.refused:
                refused.update(d.refused)
                refused_topic = refused_topic or topic
        self._write(records, rejects, refused)
        with self._lock:
            self.counts.messages += len(batch)
            self.counts.readings += len(records)
            self.counts.dead += len(rejects)
            self.counts.skipped += skipped
            self.counts.token_refused += sum(refused.values())
        if refused:
            self._log_refusals(refused, refused_topic)

    def _log_refusals(self, refused: Counter, topic: str) -> None:
        """Log token refusals: the first at once, then at most one line a minute (the run's summary counts them
        all), so a fleet with a wrong token cannot flood the log. Reasons and a topic, never a token."""
        now = time.monotonic()
        if self._refusals_logged_at is not None and now - self._refusals_logged_at < LOG_EVERY:
            return
        self._refusals_logged_at = now
        log.warning("mqtt: refused %d reading(s) for their token (%s; e.g. topic %r) and dead-lettered them; %s",
                    sum(refused.values()), ", ".join(f"{reason}: {n}" for reason, n in sorted(refused.items())),
                    topic[:200], self.decoder.token_fix(next(iter(refused))))

    def _write(self, records: list[dict], rejects: list[Reject], refused: Counter | None = None) -> None:
        """Publish; on a Redis error retry with backoff (at-least-once: a retried batch may repeat readings)."""
        delay = 0.5
        while True:
            try:
                if records:
                    self.producer.sensors(records)
                if rejects or refused:
                    pipe = self.producer.r.pipeline(transaction=False)
                    for rej in rejects:
                        dead_letter(pipe, self.producer.names, self.settings, rej.raw, rej.reason,
                                    stream=self.producer.names.sensors, source=SOURCE, index=rej.index)
                    for reason, n in (refused or {}).items():
                        feedauth.count_refused(pipe, self.settings, FEED, SOURCE, reason, n)
                    pipe.execute()
                return
            except redis.RedisError as exc:
                if self._stopping and delay > 4:
                    log.error("mqtt: Redis unavailable while stopping; %d readings and %d dead letters lost: %s",
                              len(records), len(rejects), exc)
                    return
                log.warning("mqtt: cannot publish to Redis (%s); retrying in %.1f s", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)

    # ---- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        self._stopping = False
        self._publisher = threading.Thread(target=self._publish_loop, name="mqtt-publisher", daemon=True)
        self._publisher.start()
        log.info("mqtt: connecting to %s (topics %s)", self.broker, self.decoder.layout)
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=30)
        self.client.loop_start()  # loop_forever(retry_first_connection=True) in paho's thread: reconnects itself

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        self.client.disconnect()
        self.client.loop_stop()
        self._queue.put(_STOP)
        if self._publisher is not None:
            self._publisher.join(timeout)
        log.info("mqtt: stopped (%s)", ", ".join(f"{k} {v}" for k, v in self.counts.snapshot().items()))


def run(settings: Settings, r: redis.Redis, stop_event: threading.Event, *, city=None, url: str | None = None,
        topic_root: str | None = None, registry: Mapping[str, RegisteredDevice] | None = None,
        ready: threading.Event | None = None, feed_out: list | None = None) -> Counts:
    """Run the feed until ``stop_event`` is set; returns the counts. Usable from a thread (tests).

    ``ready`` is set once the first subscription is granted; ``feed_out`` (a list) receives the :class:`MqttFeed`.
    """
    feed = MqttFeed(settings, r, city=city, url=url, topic_root=topic_root, registry=registry)
    if feed_out is not None:
        feed_out.append(feed)
    feed.start()
    last_log = last_health = time.monotonic()
    before = feed.counts.snapshot()
    try:
        while not stop_event.is_set():
            if ready is not None and not ready.is_set() and feed.subscribed.is_set():
                ready.set()
            stop_event.wait(0.05 if ready is not None and not ready.is_set() else 1.0)
            now = time.monotonic()
            if now - last_health >= HEALTH_EVERY:
                last_health = now
                if feed.subscribed.is_set():
                    feed._ok()
            if now - last_log >= LOG_EVERY:
                counts = feed.counts.snapshot()
                log.info("mqtt: last %.0f s: %d messages, %d readings published, %d dead-lettered (%d of them refused "
                         "for their token), %d skipped; %s", now - last_log,
                         *(counts[k] - before[k] for k in ("messages", "readings", "dead", "token_refused", "skipped")),
                         "connected" if feed.connected.is_set() else "NOT connected")
                last_log, before = now, counts
    finally:
        feed.stop()
    return feed.counts


# --------------------------------------------------------------------------- command line


def add_mqtt_arguments(parser) -> None:
    parser.add_argument("--url", default=None,
                        help="broker URL, mqtt://[user:pass@]host:1883 or mqtts://host:8883 (default: MQTT_URL); "
                             "MQTT_USERNAME / MQTT_PASSWORD override the URL's credentials")
    parser.add_argument("--topic-root", default=None,
                        help="topic root (default: MQTT_TOPIC_ROOT, 'gridwatch'); topics are "
                             "ROOT/<district>/<device_type>/<device_id>")


def main_mqtt(args) -> int:
    settings = config_settings.get_settings()  # looked up late: tests give the command other settings
    url = args.url or settings.mqtt_url
    try:
        if not url:
            raise ValueError("no MQTT broker: set MQTT_URL (e.g. mqtt://127.0.0.1:1883) or pass --url")
        broker_address(url, settings)
        topic_root(args.topic_root or settings.mqtt_topic_root)
        if settings.feed_token(SOURCE) is None:
            raise ValueError(NO_TOKEN)
    except ValueError as exc:
        log.error("mqtt: %s", exc)
        return 2
    stop = threading.Event()

    def handler(signum, _frame):
        log.info("mqtt: %s received, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    try:
        run(settings, get_redis(settings), stop, url=url, topic_root=args.topic_root)
    except (ValueError, CityConfigError) as exc:
        log.error("mqtt: %s", exc)
        return 2
    return 0
