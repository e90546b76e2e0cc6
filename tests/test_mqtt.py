"""MQTT feed against a real broker, the real streams and the real worker.

Broker: Mosquitto on 127.0.0.1:1883 when it accepts a connection (this machine, CI), else an embedded amqtt
broker on a free port. The reconnect test always uses an embedded broker, which it stops and restarts.
Each test uses its own topic root (``gwtest/<prefix>``), so parallel runs on one broker never collide.
Devices send the test settings' ``mqtt`` token (FEED_TOKENS) in every reading unless a test says otherwise; the
credentials test runs an embedded broker with a password file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.coords import from_wgs84
from core.geography import label_point
from core.livestate import LiveKeys
from ingest.feedhealth import read_all
from ingest.feeds.mqtt import broker_address, run
from ingest.feeds.mqtt_readings import Decoder, load_registry
from ingest.worker import Worker
from store.schema import Device, SensorAlarm
from store.streams import ensure_groups, read_dead

MOSQUITTO = ("127.0.0.1", 1883)
NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


class EmbeddedBroker:
    """An amqtt broker in its own thread and event loop, bound to 127.0.0.1:port; stoppable and restartable.
    With ``password_file`` (user:argon2 hash lines) it admits only those users, else anyone."""

    def __init__(self, port: int | None = None, password_file: Path | None = None):
        self.port = port or _free_port()
        self.password_file = password_file
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.broker = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        from amqtt.broker import Broker

        started = threading.Event()
        errors: list[BaseException] = []
        auth = ({"amqtt.plugins.authentication.FileAuthPlugin": {"password_file": str(self.password_file)}}
                if self.password_file else {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}})
        config = {"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}}, "plugins": auth}

        def main() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self.loop = loop

            async def boot() -> None:
                self.broker = Broker(config, loop=loop)
                await self.broker.start()

            try:
                loop.run_until_complete(boot())
            except BaseException as exc:  # reported to the caller
                errors.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.close()

        self.thread = threading.Thread(target=main, name=f"amqtt-{self.port}", daemon=True)
        self.thread.start()
        if not started.wait(15):
            raise RuntimeError("the embedded amqtt broker did not start within 15 s")
        if errors:
            raise errors[0]

    def stop(self) -> None:
        if self.loop is None or self.thread is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.broker.shutdown(), self.loop).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(15)
        self.loop = self.thread = None


@contextlib.contextmanager
def embedded_broker(password_file: Path | None = None):
    b = EmbeddedBroker(password_file=password_file)
    try:
        b.start()
    except Exception as exc:  # pragma: no cover - only where neither broker can run
        pytest.skip(f"no MQTT broker: 127.0.0.1:1883 is not reachable and amqtt could not start ({exc})")
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def broker_url():
    """Mosquitto on 127.0.0.1:1883 when reachable, else an embedded amqtt broker on a free port."""
    if os.environ.get("GRIDWATCH_TEST_MQTT") != "embedded" and _reachable(*MOSQUITTO):
        yield "mqtt://127.0.0.1:1883"
        return
    with embedded_broker() as b:
        yield b.url


@pytest.fixture
def mqtt_settings(settings, broker_url):
    return settings.model_copy(update={"mqtt_url": broker_url, "mqtt_topic_root": f"gwtest/{settings.stream_prefix}"})


SIGNED = object()  # send(): put the publisher's token in every reading


class Publisher:
    """A paho client publishing test messages with QoS 1 (waits for the broker's acknowledgement).

    A device of the fleet: every object (or object of an array) it sends gets ``token`` unless the call names
    another (``token=None``: none at all); bytes and strings go as they are."""

    def __init__(self, url: str, token: str | None):
        import paho.mqtt.client as mqtt

        addr = broker_address(url)
        self.token = token
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"gwtest-pub-{uuid.uuid4().hex[:8]}")
        if addr.username:
            self.client.username_pw_set(addr.username, addr.password)
        self.client.connect(addr.host, addr.port)
        self.client.loop_start()

    def send(self, topic: str, payload, *, retain: bool = False, token=SIGNED) -> None:
        token = self.token if token is SIGNED else token

        def signed(item):
            if not isinstance(item, dict) or token is None:
                return item
            return {**item, "token": token}

        if isinstance(payload, list):
            payload = [signed(item) for item in payload]
        data = payload if isinstance(payload, bytes | str) else orjson.dumps(signed(payload))
        info = self.client.publish(topic, data, qos=1, retain=retain)
        info.wait_for_publish(10)
        assert info.is_published(), f"broker did not acknowledge {topic}"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextlib.contextmanager
def publisher(settings, url: str | None = None):
    """A device on ``settings``' broker (or ``url``'s) holding their ``mqtt`` token."""
    p = Publisher(url or settings.mqtt_url, settings.feed_token("mqtt"))
    try:
        yield p
    finally:
        p.close()


@contextlib.contextmanager
def running_feed(settings, r, city, registry=None):
    """The feed in a thread (as ``run`` is meant to be used), subscribed before the block starts."""
    stop, ready, out = threading.Event(), threading.Event(), []
    thread = threading.Thread(target=run, args=(settings, r, stop), daemon=True,
                              kwargs={"city": city, "registry": registry if registry is not None else {},
                                      "ready": ready, "feed_out": out})
    thread.start()
    assert ready.wait(20), "the MQTT feed did not subscribe within 20 s"
    try:
        yield out[0], thread
    finally:
        stop.set()
        thread.join(20)
        assert not thread.is_alive(), "the MQTT feed did not stop"


def topic(settings, city, dtype: str, device: str) -> str:
    return f"{settings.mqtt_topic_root}/{city.county_code}/{dtype}/{device}"


def wait_for(condition, timeout: float = 15.0, step=None, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if step is not None:
            step()
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def live_devices(r, settings) -> dict[str, dict]:
    raw = r.hgetall(LiveKeys(settings.stream_prefix).devices)
    return {k.decode(): orjson.loads(v) for k, v in raw.items()}


def grid_point(city, code: str) -> tuple[float, float]:
    return label_point(city.geography.geometry(code))


@pytest.fixture
def drain(settings, engine, r, city):
    ensure_groups(r, settings)
    worker = Worker(city, settings, engine, r, name="t")

    def step() -> None:
        while worker.run_once(50):
            pass

    return step


# --------------------------------------------------------------------------------------------- tests


def test_readings_reach_live_state_store_and_alarms(mqtt_settings, r, engine, city, drain, tmp_path):
    s = mqtt_settings
    grids = [g.code for g in city.geography.areas("grid")]
    g_reg, g_wgs, g_alarm = grids[0], grids[40], grids[90]
    # A GCJ-02 point whose raw (unconverted) position would fall in another grid: proves the conversion.
    g_gcj, gcj = next((g, from_wgs84(*grid_point(city, g), "gcj02")) for g in grids[10:]
                      if city.geography.locate(*from_wgs84(*grid_point(city, g), "gcj02")) != g)
    reg_file = tmp_path / "devices.yaml"
    lon, lat = grid_point(city, g_reg)
    reg_file.write_text(
        "devices:\n"
        f"  - {{id: reg-1, type: smoke, grid_code: '{g_reg}', lon: {lon}, lat: {lat}}}\n"
        f"  - {{id: reg-2, type: manhole_tilt, grid_code: '{g_wgs}'}}\n", encoding="utf-8")
    registry = load_registry(reg_file, city)
    assert registry["reg-1"].grid_code == g_reg and registry["reg-2"].lon is None

    with running_feed(s, r, city, registry) as (feed, _), publisher(s) as pub:
        pub.send(topic(s, city, "smoke", "reg-1"), {"value": 1.0, "battery": 88})  # no ts, no location: registry
        pub.send(topic(s, city, "manhole_tilt", "reg-2"), {"value": 2, "ts": NOW.isoformat()})  # registry: grid only
        pub.send(topic(s, city, "water_level", "wgs-1"),
                 {"value": 0.4, "ts": NOW.isoformat(), "lon": grid_point(city, g_wgs)[0], "lat": grid_point(city, g_wgs)[1]})
        pub.send(topic(s, city, "gas", "gcj-1"),
                 {"value": 3, "ts": NOW.isoformat(), "lon": gcj[0], "lat": gcj[1], "crs": "gcj02"})
        pub.send(topic(s, city, "smoke", "alarm-1"),
                 {"value": 4.2, "ts": NOW.isoformat(), "type": "smoke", "device_id": "alarm-1",
                  "lon": grid_point(city, g_alarm)[0], "lat": grid_point(city, g_alarm)[1]})
        pub.send(topic(s, city, "water_level", "nowhere-1"), {"value": 0.1, "ts": int(NOW.timestamp())})  # unlocated
        pub.send(topic(s, city, "camera_ai", "gw-batch"),  # a gateway's batch: the newest value wins
                 [{"value": 0.1, "ts": (NOW - timedelta(seconds=30)).isoformat()}, {"value": 0.3, "ts": NOW.isoformat()}])
        expected = {"reg-1", "reg-2", "wgs-1", "gcj-1", "alarm-1", "nowhere-1", "gw-batch"}
        live = wait_for(lambda: (d := live_devices(r, s)) and expected <= set(d) and d, step=drain,
                        what="all devices in the live state")
        assert feed.counts.readings == 8 and feed.counts.dead == 0

    assert live["reg-1"]["g"] == g_reg and live["reg-1"]["b"] == 88
    assert live["reg-2"]["g"] == g_wgs
    assert live["wgs-1"]["g"] == g_wgs
    assert live["gcj-1"]["g"] == g_gcj
    assert live["alarm-1"]["g"] == g_alarm and live["alarm-1"]["a"] == 1
    assert live["nowhere-1"]["g"] is None
    assert live["gw-batch"]["v"] == 0.3
    with Session(engine) as db:
        devices = {d.id: d for d in db.scalars(select(Device))}
        alarms = db.scalars(select(SensorAlarm)).all()
    assert {d: devices[d].grid_code for d in expected} == {
        "reg-1": g_reg, "reg-2": g_wgs, "wgs-1": g_wgs, "gcj-1": g_gcj, "alarm-1": g_alarm, "nowhere-1": None,
        "gw-batch": None}
    assert all(devices[d].source == "mqtt" for d in expected)
    assert devices["reg-1"].lon == pytest.approx(lon)
    # The GCJ-02 point was converted back to the WGS84 point it came from (well under a metre).
    assert devices["gcj-1"].lon == pytest.approx(grid_point(city, g_gcj)[0], abs=1e-5)
    assert devices["gcj-1"].lat == pytest.approx(grid_point(city, g_gcj)[1], abs=1e-5)
    assert [(a.device_id, a.grid_code, a.peak_value, a.cleared_at) for a in alarms] == [("alarm-1", g_alarm, 4.2, None)]
    assert r.hexists(LiveKeys(s.stream_prefix).alarms, "alarm-1")
    health = read_all(r, s)["mqtt"]
    assert health["ok"] is True and s.mqtt_topic_root in health["detail"]


def test_hostile_payloads_are_dead_lettered_and_the_feed_keeps_running(mqtt_settings, r, engine, city, drain):
    """Objects are sent with the fleet's token: each is dead-lettered for its own fault, without the token —
    read back as the object without its field, or, when the message could not be read as objects, as the
    payload with the token's value replaced. Bytes go as they are."""
    s = mqtt_settings
    token = s.feed_token("mqtt")
    root, district = s.mqtt_topic_root, city.county_code
    smoke = topic(s, city, "smoke", "bad-1")
    gone = "<token removed>"
    hostile = [  # (topic, payload, expected in the reason, the dead letter's raw for an object payload)
        (smoke, b"\xff\xfenot json at all", "not valid JSON", None),
        (smoke, b'"just a string"', "got a JSON string", None),
        (smoke, {"value": "high", "ts": "yesterday"}, "value:", {"value": "high", "ts": "yesterday"}),
        (smoke, {"value": 1, "lon": "east", "lat": 22.7}, "lon:", {"value": 1, "lon": "east", "lat": 22.7}),
        (smoke, b'{"value": NaN}', "not valid JSON", None),
        (smoke, {"value": 1, "pad": "x" * (s.max_payload_bytes + 10)}, "exceeds the limit",
         {"value": 1, "pad": "x" * (s.max_payload_bytes + 10), "token": gone}),
        (smoke, {"value": 1, "device_id": "someone-else"}, "device_id:", {"value": 1, "device_id": "someone-else"}),
        (smoke, b"[]", "empty batch", None),
        (f"{root}/{district}/toaster/t-1", {"value": 1}, "unknown device type 'toaster'", {"value": 1, "token": gone}),
        (f"{root}/{district}/smoke/a/b", {"value": 1}, "does not match the layout", {"value": 1, "token": gone}),
        (f"{root}/{district}/smoke", {"value": 1}, "does not match the layout", {"value": 1, "token": gone}),
    ]
    with running_feed(s, r, city) as (feed, thread), publisher(s) as pub:
        for t, payload, _, _ in hostile:
            pub.send(t, payload)
        pub.send(smoke, [{"value": 0.2, "ts": NOW.isoformat()}, {"value": "x"}])  # one good, one bad item
        pub.send(topic(s, city, "smoke", "good-1"), {"value": 0.5, "ts": NOW.isoformat()})
        wait_for(lambda: {"bad-1", "good-1"} <= set(live_devices(r, s)), step=drain, what="the good readings")
        wait_for(lambda: feed.counts.dead == len(hostile) + 1, what="every dead letter")
        assert thread.is_alive() and feed.connected.is_set()
    assert live_devices(r, s)["bad-1"]["v"] == 0.2
    dead = list(reversed(read_dead(r, s, count=100)))
    assert len(dead) == len(hostile) + 1
    for (t, payload, expected, raw), row in zip(hostile, dead, strict=False):
        assert row["source"] == "mqtt" and row["stream"].endswith(":stream:sensors")
        assert f"mqtt topic '{t}'" in row["reason"] and expected in row["reason"], row["reason"]
        assert token not in row["raw"]
        if raw is None:
            assert int(row["size"]) == len(payload)
        else:
            assert orjson.loads(row["raw"]) == raw
    batch_item = dead[-1]
    assert batch_item["index"] == "1" and "item 1" in batch_item["reason"] and orjson.loads(batch_item["raw"]) == {"value": "x"}
    assert feed.counts.token_refused == 0 and not r.exists(s.key("live", "feed_refused"))


def test_retained_message_without_time_is_skipped(mqtt_settings, r, engine, city, drain):
    s = mqtt_settings
    t_old, t_dated = topic(s, city, "smoke", "ret-1"), topic(s, city, "smoke", "ret-2")
    with publisher(s) as pub:
        pub.send(t_old, {"value": 1.0}, retain=True)
        pub.send(t_dated, {"value": 1.0, "ts": NOW.isoformat()}, retain=True)
        try:
            with running_feed(s, r, city) as (feed, _):
                wait_for(lambda: "ret-2" in live_devices(r, s), step=drain, what="the dated retained reading")
                wait_for(lambda: feed.counts.skipped == 1, what="the undated retained message skipped")
        finally:  # clear the retained messages on the broker
            pub.send(t_old, b"", retain=True)
            pub.send(t_dated, b"", retain=True)
    assert "ret-1" not in live_devices(r, s)


def test_reconnects_after_the_broker_restarts(settings, r, engine, city, drain):
    with embedded_broker() as broker:
        s = settings.model_copy(update={"mqtt_url": broker.url, "mqtt_topic_root": f"gwtest/{settings.stream_prefix}"})
        with running_feed(s, r, city) as (feed, thread):
            with publisher(s) as pub:
                pub.send(topic(s, city, "gas", "rc-1"), {"value": 1, "ts": NOW.isoformat()})
            wait_for(lambda: "rc-1" in live_devices(r, s), step=drain, what="the first reading")
            assert read_all(r, s)["mqtt"]["ok"] is True

            broker.stop()
            health = wait_for(lambda: (h := read_all(r, s)["mqtt"]) and h["ok"] is False and h, what="health: failed")
            assert health["failures"] >= 1 and broker.url.replace("mqtt://", "") in health["error"]
            assert not feed.connected.is_set()

            broker.start()  # same port
            wait_for(lambda: feed.subscribed.is_set(), timeout=30, what="the feed to reconnect and subscribe")
            health = wait_for(lambda: (h := read_all(r, s)["mqtt"]) and h["ok"] is True and h, what="health: ok")
            assert health["failures"] == 0
            with publisher(s) as pub:
                pub.send(topic(s, city, "gas", "rc-2"), {"value": 2, "ts": NOW.isoformat()})
            wait_for(lambda: "rc-2" in live_devices(r, s), step=drain, what="a reading after the reconnect")
            assert thread.is_alive() and feed.counts.connects >= 2 and feed.counts.disconnects >= 1


def test_readings_without_the_right_token_are_refused_dead_lettered_and_counted(mqtt_settings, r, engine, city, drain,
                                                                                 caplog):
    caplog.set_level(logging.DEBUG)
    s = mqtt_settings
    right = s.feed_token("mqtt")
    wrong = "wrong-" + right[::-1]
    others = s.feed_token("citizen")  # a real token, of another source
    reading = {"value": 0.3, "ts": NOW.isoformat()}
    with running_feed(s, r, city) as (feed, thread), publisher(s) as pub:
        pub.send(topic(s, city, "smoke", "tok-ok"), reading)
        pub.send(topic(s, city, "smoke", "tok-missing"), reading, token=None)
        pub.send(topic(s, city, "smoke", "tok-wrong"), reading, token=wrong)
        pub.send(topic(s, city, "smoke", "tok-other"), reading, token=others)
        pub.send(topic(s, city, "smoke", "tok-number"), {**reading, "token": 12345}, token=None)
        pub.send(topic(s, city, "gas", "tok-batch"), [{**reading, "token": right}, {"value": 9, "token": wrong}],
                 token=None)  # a gateway: one reading signed, one not
        wait_for(lambda: {"tok-ok", "tok-batch"} <= set(live_devices(r, s)), step=drain, what="the signed readings")
        wait_for(lambda: feed.counts.dead == 5, what="every refused reading dead-lettered")
        assert thread.is_alive() and feed.connected.is_set()
    devices = live_devices(r, s)
    assert {"tok-ok", "tok-batch"} <= set(devices) and devices["tok-batch"]["v"] == 0.3
    assert not {"tok-missing", "tok-wrong", "tok-other", "tok-number"} & set(devices)

    dead = list(reversed(read_dead(r, s, count=100)))
    assert [row["reason"].split(": token refused")[0] for row in dead] == [
        f"mqtt topic '{topic(s, city, 'smoke', 'tok-missing')}'", f"mqtt topic '{topic(s, city, 'smoke', 'tok-wrong')}'",
        f"mqtt topic '{topic(s, city, 'smoke', 'tok-other')}'", f"mqtt topic '{topic(s, city, 'smoke', 'tok-number')}'",
        f"mqtt topic '{topic(s, city, 'gas', 'tok-batch')}' item 1"]
    assert [row["reason"].split("token refused (")[1].split(")")[0] for row in dead] == [
        "token missing", "token wrong", "token wrong", "token missing", "token wrong"]
    assert [orjson.loads(row["raw"]) for row in dead] == [reading] * 4 + [{"value": 9}]  # without the token field
    assert dead[-1]["index"] == "1" and all(row["source"] == "mqtt" for row in dead)

    assert r.hgetall(s.key("live", "feed_refused")) == {b"mqtt|mqtt|token missing": b"2", b"mqtt|mqtt|token wrong": b"3"}
    assert read_all(r, s)["mqtt"]["refused"] == {"mqtt": {"token missing": 2, "token wrong": 3}}
    assert feed.counts.token_refused == 5 and feed.counts.readings == 2
    logged = [rec.getMessage() for rec in caplog.records if rec.name == "ingest.feeds.mqtt"]
    assert any("refused" in m and "for their token" in m for m in logged), logged
    secrets = [wrong, *(s.feed_token(source) for source in s.feed_tokens)]
    for rec in caplog.records:
        text = rec.getMessage() + repr(rec.args)
        assert not any(t in text for t in secrets), text
    for row in read_dead(r, s, count=100):
        assert not any(t in row["raw"] or t in row["reason"] for t in secrets)


def test_a_broker_refusing_the_credentials_is_logged_counted_and_retried(settings, r, engine, city, drain, tmp_path,
                                                                         caplog):
    from pwdlib import PasswordHash
    from pwdlib.hashers.argon2 import Argon2Hasher

    caplog.set_level(logging.INFO)
    password_file = tmp_path / "passwd"
    password_file.write_text(f"gridwatch:{PasswordHash((Argon2Hasher(),)).hash('the-right-one')}\n", encoding="utf-8")
    with embedded_broker(password_file) as broker:
        base = settings.model_copy(update={"mqtt_url": broker.url, "mqtt_topic_root": f"gwtest/{settings.stream_prefix}"})
        bad = base.model_copy(update={"mqtt_username": "gridwatch", "mqtt_password": "not-the-password"})
        stop, out = threading.Event(), []
        thread = threading.Thread(target=run, args=(bad, r, stop), daemon=True,
                                  kwargs={"city": city, "registry": {}, "feed_out": out})
        thread.start()
        key = bad.key("live", "feed_refused")
        field = f"mqtt|{broker.url}|credentials refused".encode()
        wait_for(lambda: int(r.hget(key, field) or 0) >= 2, timeout=30, what="a second refused attempt")
        assert thread.is_alive() and not out[0].connected.is_set()
        health = read_all(r, bad)["mqtt"]
        stop.set()
        thread.join(20)
        assert not thread.is_alive()

        refusals = [rec for rec in caplog.records if "refused the credentials" in rec.getMessage()]
        assert refusals and all(rec.levelno == logging.ERROR for rec in refusals)
        assert "MQTT_USERNAME" in refusals[0].getMessage() and "MQTT_PASSWORD" in refusals[0].getMessage()
        assert "'gridwatch'" in refusals[0].getMessage()
        counted = int(r.hget(key, field))
        assert counted == len(refusals) == out[0].counts.credentials_refused
        assert r.hgetall(key) == {field: str(counted).encode()}
        assert health["ok"] is False and "MQTT_USERNAME" in health["error"]
        assert list(health["refused"]) == [broker.url] and health["refused"][broker.url]["credentials refused"] >= 2
        assert not any("not-the-password" in rec.getMessage() + repr(rec.args) for rec in caplog.records)
        assert not any("lost the connection" in rec.getMessage() for rec in caplog.records)

        # the same broker admits the right account: the feed connects and readings go through
        good = base.model_copy(update={"mqtt_username": "gridwatch", "mqtt_password": "the-right-one"})
        with running_feed(good, r, city) as (feed, _), \
                publisher(good, broker.url.replace("mqtt://", "mqtt://gridwatch:the-right-one@")) as pub:
            pub.send(topic(good, city, "gas", "cred-1"), {"value": 1, "ts": NOW.isoformat()})
            wait_for(lambda: "cred-1" in live_devices(r, good), step=drain, what="a reading on the admitted connection")
            assert feed.counts.credentials_refused == 0


# ------------------------------------------------------------------------------- units (no broker)


def test_shipped_registry_is_valid(city):
    registry = load_registry(city.city_dir / "devices.yaml", city)
    assert registry, "config/city/devices.yaml should hold a few example devices"
    for dev in registry.values():
        assert dev.type in city.sensor_types and dev.grid_code in city.geography


def test_registry_errors_name_the_file_the_entry_and_the_fix(city, tmp_path):
    from config.city import CityConfigError

    bad = tmp_path / "devices.yaml"
    bad.write_text("devices:\n"
                   "  - {id: d-1, type: toaster, grid_code: '440311999999999'}\n"
                   "  - {id: d-1, type: smoke, lon: 0.5}\n"
                   "  - {id: 'bad id', type: smoke, colour: red}\n", encoding="utf-8")
    with pytest.raises(CityConfigError) as exc:
        load_registry(bad, city)
    text = str(exc.value)
    for fragment in ("device #1 (d-1): type 'toaster' is not in sensors.yaml — use one of:",
                     "grid_code '440311999999999' is not a grid", "device #2 (d-1): duplicate id",
                     "give both lon and lat", "device #3 (bad id): unknown field(s) colour", "id must be"):
        assert fragment in text, text
    assert load_registry(tmp_path / "missing.yaml", city) == {}


def test_broker_address_and_credentials(settings):
    a = broker_address("mqtt://user:p%40ss@broker.example:1884", settings)
    assert (a.host, a.port, a.tls, a.username, a.password) == ("broker.example", 1884, False, "user", "p@ss")
    assert "p@ss" not in str(a) and "p@ss" not in repr(a)
    assert broker_address("mqtts://broker.example").port == 8883
    over = settings.model_copy(update={"mqtt_username": "svc", "mqtt_password": "secret"})
    assert broker_address("mqtt://user:pw@h", over).username == "svc"
    with pytest.raises(ValueError, match="unsupported scheme"):
        broker_address("http://h:1883")


def test_decoder_topics_and_coordinates(settings, city):
    d = Decoder(city, settings, {}, "a/b")
    assert d.subscription == f"a/b/{city.county_code}/#"
    assert d.parse_topic(f"a/b/{city.county_code}/smoke/s-1") == ("smoke", "s-1")
    for bad in (f"a/{city.county_code}/smoke/s-1", "a/b/440300/smoke/s-1", f"a/b/{city.county_code}/smoke/",
                f"a/b/{city.county_code}/smoke/ x"):
        with pytest.raises(ValueError):
            d.parse_topic(bad)
    token = settings.feed_token("mqtt")
    out = d.decode(f"a/b/{city.county_code}/smoke/s-1",
                   orjson.dumps({"value": 1, "lon": 113.9, "lat": 22.75, "crs": "mars", "token": token}))
    assert not out.rejects and out.records[0]["lon"] != 113.9 and "token" not in out.records[0]
    out = d.decode(f"a/b/{city.county_code}/smoke/s-1",
                   orjson.dumps({"value": 1, "lon": 113.9, "lat": 22.75, "crs": "utm", "token": token}))
    assert "crs: unknown coordinate system 'utm'" in out.rejects[0].reason


def test_without_an_mqtt_token_every_reading_is_refused_and_the_command_will_not_start(settings, city, monkeypatch,
                                                                                        caplog):
    import argparse

    from ingest.feeds import mqtt

    bare = settings.model_copy(update={"feed_tokens": {"citizen": settings.feed_token("citizen")}})
    d = Decoder(city, bare, {}, "a/b")
    out = d.decode(f"a/b/{city.county_code}/smoke/s-1", orjson.dumps({"value": 1, "token": settings.feed_token("mqtt")}))
    assert not out.records and dict(out.refused) == {"source not configured": 1}
    assert "token refused (source not configured)" in out.rejects[0].reason
    assert "FEED_TOKENS holds no token for source 'mqtt'" in out.rejects[0].reason
    assert orjson.loads(out.rejects[0].raw) == {"value": 1}

    monkeypatch.setattr("config.settings.get_settings", lambda: bare)
    assert mqtt.main_mqtt(argparse.Namespace(url="mqtt://127.0.0.1:1883", topic_root=None)) == 2
    assert any("FEED_TOKENS holds no token for source 'mqtt'" in rec.getMessage() and '{"mqtt": "<token>"}'
               in rec.getMessage() for rec in caplog.records if rec.levelname == "ERROR")
