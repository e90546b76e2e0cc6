"""Notifications reach people: every trigger once per channel, in Chinese with its link, to a real webhook and a real
SMTP server; a receiver that is down is retried with backoff and shows in the log and /healthz; a flood folds into a
summary under the rate limit; no secret is ever written, answered or logged.

Each pass is given its clock (``now``), so retries and the rate limit are tested without waiting.
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import yaml
from sqlalchemy import select

from config.notify import NotifyConfigError, load_notify
from core import notify as rules
from core.records import CITY_TZ
from core.routing import UNROUTED_KEY
from ingest.feedhealth import FeedHealth
from ingest.notify import Notifier
from ingest.worker import Worker
from store import notify as store
from store.schema import Case
from store.streams import Producer, ensure_groups
from tests import accounts
from tests.api_dataset import drain
from tests.receivers import Mailbox, Webhook, free_port

BASE = "https://gw.example.cn"
ALL = [r.value for r in rules.Reason]


@pytest.fixture
def hook_token() -> str:
    return secrets.token_urlsafe(18)


@pytest.fixture
def smtp_password() -> str:
    return secrets.token_urlsafe(12)


@pytest.fixture
def hook(hook_token):
    h = Webhook(hook_token).start()
    yield h
    h.stop()


@pytest.fixture
def mailbox(smtp_password):
    m = Mailbox("gw", smtp_password).start()
    yield m
    m.stop()


ROOT_DIR = Path(__file__).resolve().parent.parent


def configure(tmp_path, settings, city, env, channels, reasons=ALL, to=("hook", "mail")):
    """A notify file of ``channels`` (name → extra fields) with one rule per reason sending to ``to``."""
    data = {"base_url": BASE, "retry": {"attempts": 4, "first_s": 10, "max_s": 60},
            "channels": [{"name": name, **extra} for name, extra in channels.items()],
            "rules": [{"name": f"规则-{r}", "trigger": r, "to": list(to)} for r in reasons]}
    path = tmp_path / "notify.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    s = settings.model_copy(update={"notify_file": path})
    return s, load_notify(city, s, env=env)


def hook_channel(port: int, **extra):
    return {"url": f"json://127.0.0.1:{port}/hook/${{HOOK_TOKEN}}", "role": "dispatcher", **extra}


def mail_channel(port: int, **extra):
    return {"url": f"mailto://gw:${{SMTP_PASSWORD}}@127.0.0.1:{port}?from=gw@example.cn&to=ops@example.cn"
                   "&mode=insecure", **extra}


def publish(settings, r, engine, city, cases=(), sensors=()):
    ensure_groups(r, settings)
    p = Producer(r, settings, source="test")
    if cases:
        p.cases(list(cases))
    if sensors:
        p.sensors(list(sensors))
    drain(Worker(city, settings, engine, r, name="t"))


def report(ext, grid, at, **extra):
    cat = next(c for c in extra.pop("city").categories.values() if not c.sensor_only)
    return {"source": "test", "external_id": ext, "event": "report", "event_id": "r", "occurred_at": at.isoformat(),
            "category": cat.code, "title": f"测试案件{ext}", "grid_code": grid.code, "departments": ["cg"], **extra}


def event(ext, action, at, **extra):
    return {"source": "test", "external_id": ext, "event": action, "event_id": f"{action}-1",
            "occurred_at": at.isoformat(), **extra}


def case_id(engine, ext) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(Case.id).where(Case.external_id == ext))


def unrouted(settings, r, engine, city, *exts, at):
    """The router's note on cases no rule could place (待分拨), published as the router publishes it."""
    publish(settings, r, engine, city, cases=[
        {"source": "test", "external_id": ext, "event": "note", "event_id": UNROUTED_KEY,
         "occurred_at": at.isoformat(), "actor": "gridwatch", "note": "无匹配的分拨规则"} for ext in exts])


def stored(engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(store.N).order_by(store.N.c.id))]


def test_each_trigger_reaches_the_webhook_and_the_mail_once_in_chinese_with_its_link(
        tmp_path, settings, r, engine, city, hook, mailbox, hook_token, smtp_password):
    env = {"HOOK_TOKEN": hook_token, "SMTP_PASSWORD": smtp_password}
    s, cfg = configure(tmp_path, settings, city, env, {"hook": hook_channel(hook.port),
                                                       "mail": mail_channel(mailbox.port)})
    now = datetime.now(UTC).replace(microsecond=0)
    grid = city.geography.areas("grid")[3]
    street = grid.code[:9]
    publish(s, r, engine, city, cases=[
        report("late", grid, now - timedelta(hours=3), city=city), event("late", "register", now - timedelta(hours=3)),
        event("late", "overdue", now - timedelta(minutes=5), actor="system"),
        event("late", "escalate", now - timedelta(minutes=4), actor="system"),
        report("hush", grid, now - timedelta(hours=2), city=city), event("hush", "register", now - timedelta(hours=2)),
        event("hush", "whistle", now - timedelta(minutes=61), departments=["sw"]),
        report("boss", grid, now - timedelta(hours=1), city=city), event("boss", "register", now - timedelta(hours=1)),
        report("lost", grid, now - timedelta(hours=1), city=city),
    ], sensors=[{"device_id": "smoke-n1", "type": "smoke", "value": city.sensor_types["smoke"].threshold + 2,
                 "ts": (now - timedelta(minutes=2)).isoformat(), "grid_code": grid.code}])
    deadline = now + timedelta(hours=4)
    publish(s, r, engine, city, cases=[event("boss", "supervise", now, actor="lead", departments=["cg"],
                                             note="请于今日内完成整改并反馈", due_at=deadline.isoformat())])
    unrouted(s, r, engine, city, "lost", at=now)
    r.set(f"{s.stream_prefix}:live:risk_levels", orjson.dumps({street: 4, grid.code[:12]: 3}))  # the risk sweep's
    FeedHealth(r, s, "open311:test").failed("connection refused")

    n = Notifier(s, city, engine, r, cfg)
    first = n.run_once(now)
    again = n.run_once(now + timedelta(minutes=1))
    n.close()

    assert first["sent"] == 16 and again.get("sent", 0) == 0 and again["queued"] == 0
    links = {
        "overdue": f"{BASE}/case/{case_id(engine, 'late')}", "escalate": f"{BASE}/case/{case_id(engine, 'late')}",
        "whistle_missed": f"{BASE}/case/{case_id(engine, 'hush')}",
        "supervise": f"{BASE}/case/{case_id(engine, 'boss')}", "unrouted": f"{BASE}/case/{case_id(engine, 'lost')}",
        "red_risk": f"{BASE}/area/{street}", "feed_silent": f"{BASE}/healthz",
    }
    heads = {"overdue": "【超期】", "escalate": "【升级督办】", "whistle_missed": "【报到超时】", "supervise": "【督办】",
             "unrouted": "【待分拨】", "red_risk": "【红色预警】", "alarm": "【传感器告警】", "feed_silent": "【数据源中断】"}
    hooked = sorted((m["title"], m["message"]) for m in hook.received)
    mailed = sorted((subject, body.strip()) for subject, body in mailbox.texts())
    assert len(hooked) == len(mailed) == 8
    assert [t for t, _ in hooked] == [t for t, _ in mailed]
    for reason, head in heads.items():
        mine = [(t, b) for t, b in hooked if t.startswith(head)]
        assert len(mine) == 1, (reason, hooked)
        title, body = mine[0]
        if reason in links:
            assert links[reason] in body, (reason, body)
        else:  # the alarm opened a case of its own: its link is that case's
            assert f"{BASE}/case/" in body
    supervise = next(b for t, b in hooked if t.startswith("【督办】"))
    assert "请于今日内完成整改并反馈" in supervise and "区城市管理和综合执法局" in supervise
    assert deadline.astimezone(CITY_TZ).strftime("%Y-%m-%d %H:%M") in supervise
    assert "区水务局" in next(t for t, _ in hooked if t.startswith("【报到超时】"))
    assert any(city.geography.get(street).name in t for t, _ in hooked if t.startswith("【红色预警】"))
    assert {row["status"] for row in stored(engine)} == {"sent"}


def test_a_receiver_that_is_down_is_retried_with_backoff_then_delivered_once(
        tmp_path, settings, r, engine, city, app, mailbox, hook_token, smtp_password):
    env = {"HOOK_TOKEN": hook_token, "SMTP_PASSWORD": smtp_password}
    down = Webhook(hook_token, free_port())  # not started yet: nothing listens on its port
    s, cfg = configure(tmp_path, settings, city, env, {"hook": hook_channel(down.port),
                                                       "mail": mail_channel(mailbox.port)}, reasons=["unrouted"])
    now = datetime.now(UTC).replace(microsecond=0)
    grid = city.geography.areas("grid")[0]
    publish(s, r, engine, city, cases=[report("lost", grid, now - timedelta(minutes=10), city=city)])
    unrouted(s, r, engine, city, "lost", at=now)
    n = Notifier(s, city, engine, r, cfg)
    client = accounts.client(s, app=app)

    n.run_once(now)
    hook_row = next(row for row in stored(engine) if row["channel"] == "hook")
    assert hook_row["status"] == "failed" and hook_row["attempts"] == 1
    assert "connection" in hook_row["last_error"].lower()
    assert hook_row["next_at"] == now + timedelta(seconds=10)
    assert len(mailbox.mails) == 1  # the other channel did not wait for the broken one
    health = client.get("/healthz").get_json()
    assert health["status"] == "degraded"
    assert any(reason.startswith("notification channel hook:") for reason in health["reasons"]), health["reasons"]
    assert health["notify_channels"]["hook"]["ok"] is False and health["notify_channels"]["mail"]["ok"] is True

    n.run_once(now + timedelta(seconds=5))  # before its backoff ends: not tried
    assert next(row for row in stored(engine) if row["channel"] == "hook")["attempts"] == 1
    n.run_once(now + timedelta(seconds=11))  # tried again, still down: the wait doubles
    hook_row = next(row for row in stored(engine) if row["channel"] == "hook")
    assert hook_row["attempts"] == 2 and hook_row["next_at"] == now + timedelta(seconds=31)

    down.start()
    try:
        n.run_once(now + timedelta(seconds=31))
        n.run_once(now + timedelta(seconds=90))
        n.run_once(now + timedelta(minutes=10))
    finally:
        down.stop()
    n.close()
    assert len(down.received) == 1 and len(mailbox.mails) == 1
    assert f"{BASE}/case/{case_id(engine, 'lost')}" in down.received[0]["message"]
    hook_row = next(row for row in stored(engine) if row["channel"] == "hook")
    assert (hook_row["status"], hook_row["attempts"], hook_row["last_error"]) == ("sent", 3, None)
    health = client.get("/healthz").get_json()
    assert not any("notification channel" in reason for reason in health["reasons"])


def test_a_thousand_breaches_in_a_minute_do_not_flood_the_channel(tmp_path, settings, r, engine, city, hook,
                                                                  hook_token):
    s, cfg = configure(tmp_path, settings, city, {"HOOK_TOKEN": hook_token},
                       {"hook": hook_channel(hook.port, rate_per_minute=10)}, reasons=["overdue"], to=("hook",))
    now = datetime.now(UTC).replace(microsecond=0)
    grids = city.geography.areas("grid")
    cases = []
    for i in range(1000):
        cases += [report(f"b{i}", grids[i % len(grids)], now - timedelta(hours=2), city=city),
                  event(f"b{i}", "overdue", now - timedelta(seconds=59 - i * 0.059), actor="system")]
    publish(s, r, engine, city, cases=cases)
    n = Notifier(s, city, engine, r, cfg)

    n.run_once(now)
    n.run_once(now + timedelta(seconds=20))
    assert len(hook.received) == 10  # the limit: 9 one by one, and one summary of the rest
    summaries = [m for m in hook.received if m["title"].startswith("【汇总】")]
    assert len(summaries) == 1
    assert "另有 991 条" in summaries[0]["title"] and "案件超期 991 条" in summaries[0]["message"]
    assert f"{BASE}/notifications" in summaries[0]["message"]
    by_status = {}
    for row in stored(engine):
        by_status[row["status"]] = by_status.get(row["status"], 0) + 1
    assert by_status == {"sent": 10, "folded": 991}

    later = [report("c1", grids[0], now, city=city), event("c1", "overdue", now + timedelta(seconds=30), actor="system")]
    publish(s, r, engine, city, cases=later)
    n.run_once(now + timedelta(seconds=40))  # within the same minute: the channel has no room left
    assert len(hook.received) == 10
    n.run_once(now + timedelta(seconds=61))
    n.close()
    assert len(hook.received) == 11 and hook.received[-1]["title"].startswith("【超期】")


def test_no_secret_reaches_the_log_table_the_api_the_page_or_the_process_log(
        tmp_path, settings, r, engine, city, app, hook, hook_token, smtp_password, caplog):
    web_password, robot = secrets.token_urlsafe(12), secrets.token_urlsafe(20)
    env = {"HOOK_TOKEN": hook_token, "SMTP_PASSWORD": smtp_password, "WEB_PASSWORD": web_password}
    channels = {
        "hook": hook_channel(hook.port),
        "mail": mail_channel(free_port()),  # nothing listens: its errors are logged and stored
        "auth-hook": {"url": f"json://ops:${{WEB_PASSWORD}}@127.0.0.1:{free_port()}/in/{robot}"},
    }
    s, cfg = configure(tmp_path, settings, city, env, channels, reasons=["unrouted"], to=("hook", "mail", "auth-hook"))
    now = datetime.now(UTC).replace(microsecond=0)
    grid = city.geography.areas("grid")[0]
    publish(s, r, engine, city, cases=[report("lost", grid, now - timedelta(minutes=10), city=city)])
    unrouted(s, r, engine, city, "lost", at=now)
    caplog.set_level(logging.DEBUG)
    n = Notifier(s, city, engine, r, cfg)
    for step in range(3):
        n.run_once(now + timedelta(minutes=step * 5))
    n.close()
    client = accounts.client(s, app=app)
    seen = {
        "table": repr(stored(engine)),
        "api": client.get("/api/v1/notifications").get_data(as_text=True),
        "page": client.get("/notifications").get_data(as_text=True),
        "healthz": client.get("/healthz").get_data(as_text=True),
        "redis": repr(r.hgetall(store.NotifyKeys(s.stream_prefix).channels)),
        "process log": caplog.text,
    }
    assert len(hook.received) == 1  # one channel works, two fail: both kinds went through the code
    assert "failed" in seen["table"] and "sent" in seen["table"] and "notification unrouted:" in caplog.text
    assert "****" in seen["table"]
    errors = {row["channel"]: row["last_error"] for row in stored(engine) if row["status"] == "failed"}
    assert "JSON" in errors["auth-hook"] and "JSON" not in errors["mail"], errors  # each channel's own reason
    for where, text in seen.items():
        for secret in (hook_token, smtp_password, web_password, robot):
            assert secret not in text, f"a secret in the {where}"


def test_the_log_is_for_admins_and_dispatchers_within_their_jurisdiction(tmp_path, settings, r, engine, city, app,
                                                                         hook, hook_token):
    s, cfg = configure(tmp_path, settings, city, {"HOOK_TOKEN": hook_token}, {"hook": hook_channel(hook.port)},
                       reasons=["unrouted"], to=("hook",))
    now = datetime.now(UTC).replace(microsecond=0)
    streets = city.geography.children(city.geography.district.code)
    here, there = (city.geography.areas("grid")[0], next(g for g in city.geography.areas("grid")
                                                         if not g.code.startswith(streets[0].code)))
    assert here.code.startswith(streets[0].code)
    publish(s, r, engine, city, cases=[report("a", here, now, city=city), report("b", there, now, city=city)])
    unrouted(s, r, engine, city, "a", "b", at=now)
    n = Notifier(s, city, engine, r, cfg)
    n.run_once(now)
    n.close()

    leader = accounts.client(s, "leader", app=app)
    assert leader.get("/api/v1/notifications").status_code == 403
    assert leader.get("/notifications").status_code == 403
    whole = accounts.client(s, "dispatcher", app=app).get("/api/v1/notifications").get_json()
    assert sorted(i["case_id"] for i in whole["items"]) == sorted([case_id(engine, "a"), case_id(engine, "b")])
    street = accounts.client(s, "dispatcher", streets[0].code, app=app)
    mine = street.get("/api/v1/notifications").get_json()
    assert [i["case_id"] for i in mine["items"]] == [case_id(engine, "a")]
    page = street.get("/notifications").get_data(as_text=True)
    assert "通知记录" in page and f"/case/{case_id(engine, 'a')}" in page and f"/case/{case_id(engine, 'b')}" not in page
    assert "Notifications" in street.get("/notifications?lang=en").get_data(as_text=True)
    bad = street.get("/api/v1/notifications?delivery=lost")
    assert bad.status_code == 400 and bad.get_json()["parameter"] == "delivery"
    one = street.get("/api/v1/notifications?limit=1&delivery=sent").get_json()
    assert len(one["items"]) == 1 and one["next_before"] == one["items"][0]["id"]


def test_a_broken_file_names_the_file_the_rule_and_the_fix_and_never_the_url(tmp_path, settings, city):
    path = tmp_path / "notify.yaml"
    path.write_text(yaml.safe_dump({
        "channels": [{"name": "a", "url": "nosuchservice://s3cr3t-token-123/"},
                     {"name": "b", "url": "json://127.0.0.1/x", "role": "mayor"}],
        "rules": [{"name": "r1", "trigger": "overdue", "to": ["c"]},
                  {"name": "r2", "trigger": "sometimes", "to": ["a"]},
                  {"name": "r3", "trigger": "alarm", "to": ["b"], "body": "{case_id} {secret}"}],
    }), encoding="utf-8")
    with pytest.raises(NotifyConfigError) as err:
        load_notify(city, settings.model_copy(update={"notify_file": path}))
    problems = err.value.problems
    assert all(p.startswith("notify.yaml: ") for p in problems)
    text = "\n".join(problems)
    assert "channel 'a': url: Apprise cannot use this URL (scheme 'nosuchservice')" in text
    assert "s3cr3t-token-123" not in text
    assert "channel 'b': role: 'mayor' is not a role" in text
    assert "rule 'r1': to: 'c' is no channel of this file" in text
    assert "rule 'r2': trigger: 'sometimes' is not a trigger; use one of red_risk" in text
    assert "rule 'r3': body: unknown placeholder 'secret'" in text


def test_a_channel_whose_variable_is_unset_is_left_out(tmp_path, settings, city):
    s, cfg = configure(tmp_path, settings, city, {}, {"hook": {"url": "${NOT_SET}"}}, reasons=["overdue"],
                       to=("hook",))
    assert cfg.channels == () and cfg.disabled == ("hook",)


def test_the_page_names_each_channel_and_says_which_are_not_configured(settings, r, engine, monkeypatch):
    """The shipped config/notify.yaml reads its channels' URLs from variables: unset, the page says so."""
    names = [c["name"] for c in yaml.safe_load((ROOT_DIR / "config/notify.yaml").read_text("utf-8"))["channels"]]
    for var in ("NOTIFY_DINGTALK_URL", "NOTIFY_MAIL_URL", "NOTIFY_CG_WECOM_URL"):
        monkeypatch.delenv(var, raising=False)
    from app import create_app

    page = accounts.client(app=create_app(settings), role="dispatcher").get("/notifications").get_data(as_text=True)
    assert all(n in page for n in names) and page.count("未配置") == len(names)


def test_backoff_rate_plan_and_masking_rules():
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    policy = rules.Retry(attempts=4, first_s=10, max_s=30)
    assert [rules.next_try(policy, k, t0) for k in (1, 2, 3, 4)] == [
        t0 + timedelta(seconds=10), t0 + timedelta(seconds=20), t0 + timedelta(seconds=30), None]
    assert rules.plan(5, 0, 10) == (5, 0)
    assert rules.plan(1000, 0, 10) == (9, 991)
    assert rules.plan(1000, 10, 10) == (0, 0)
    assert rules.plan(3, 8, 10) == (1, 2)
    found = rules.secrets_of("dingtalk://AbCdEf123456/?secret=SEC999888")
    assert rules.scrub("post to dingtalk://AbCdEf123456/ failed (SEC999888)", found) == \
        "post to dingtalk://****/ failed (****)"
    assert rules.scrub("smtp://user:pa55word@host", set()) == "smtp://user:****@host"


def test_a_restarted_job_goes_on_from_its_cursor_and_sends_nothing_twice(tmp_path, settings, r, engine, city, hook,
                                                                          hook_token):
    s, cfg = configure(tmp_path, settings, city, {"HOOK_TOKEN": hook_token}, {"hook": hook_channel(hook.port)},
                       reasons=["unrouted", "alarm"], to=("hook",))
    now = datetime.now(UTC).replace(microsecond=0)
    grid = city.geography.areas("grid")[7]
    publish(s, r, engine, city, cases=[report("a", grid, now, city=city), report("b", grid, now, city=city)])
    unrouted(s, r, engine, city, "a", at=now)
    first = Notifier(s, city, engine, r, cfg)
    first.run_once(now)
    first.close()
    assert len(hook.received) == 1

    unrouted(s, r, engine, city, "b", at=now)
    again = Notifier(s, city, engine, r, cfg)
    counts = again.run_once(now + timedelta(minutes=1))
    r.delete(store.NotifyKeys(s.stream_prefix).cursor)  # Redis lost the cursors: the lookback finds both again
    repeat = again.run_once(now + timedelta(minutes=2))
    again.close()
    assert counts["found"] == 1 and repeat["found"] == 2 and repeat["queued"] == 0
    assert [m["message"].rsplit("/case/", 1)[1] for m in hook.received] == [str(case_id(engine, "a")),
                                                                            str(case_id(engine, "b"))]


def test_rules_reach_channels_by_name_role_area_and_department():
    street, other = "440311001", "440311002"
    channels = [rules.Channel("ops", "json://h/a", role="dispatcher"), rules.Channel("st1", "json://h/b", area=street),
                rules.Channel("st2", "json://h/c", area=other), rules.Channel("cg", "json://h/d", department="cg"),
                rules.Channel("mail", "mailto://h", role="admin")]
    overdue = rules.Trigger(rules.Reason.OVERDUE, "overdue:1:x", datetime(2026, 12, 1, tzinfo=UTC), 1, "t",
                            f"{street}001001", departments=("cg", "sw"))
    red = rules.Trigger(rules.Reason.RED_RISK, "red_risk:x", datetime(2026, 12, 1, tzinfo=UTC), area_code=street)
    table = [rules.Rule("by-area", rules.Reason.OVERDUE, ("@area",)),
             rules.Rule("by-dept", rules.Reason.OVERDUE, ("@departments", "st1")),
             rules.Rule("by-role", rules.Reason.OVERDUE, ("role:dispatcher",), areas=(other,)),
             rules.Rule("red-grids", rules.Reason.RED_RISK, ("mail",), levels=frozenset({"grid"})),
             rules.Rule("red-streets", rules.Reason.RED_RISK, ("ops",), levels=frozenset({"street"}))]
    assert [(rule.name, c.name) for rule, c in rules.route(table, channels, overdue)] == [
        ("by-area", "st1"), ("by-dept", "cg")]  # st1 once, by the first rule; by-role: the case is not in its area
    assert [(rule.name, c.name) for rule, c in rules.route(table, channels, red, "street")] == [("red-streets", "ops")]
    subject, body = rules.render(table[0], overdue, "https://x.cn/", CITY_TZ, {"cg": "城管局"})
    assert subject == "【超期】案件 1 t" and "责任单位：城管局、sw" in body and body.endswith("https://x.cn/case/1")
