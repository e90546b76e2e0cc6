"""Feed tokens: FEED_TOKENS from the environment, the token check, the refusal counters' read-back, scrubbing, and
the demo's tokens made once with no set-up. The push and MQTT tests exercise them through the real feeds."""

from __future__ import annotations

import json
import secrets
import stat

import pytest
from pydantic import ValidationError

from config.settings import Settings
from core.livestate import refusal_field, with_refusals
from ingest import feedauth
from ingest.supervisor import DEMO_SOURCES, demo_tokens


def test_feed_tokens_from_the_environment_are_kept_secret(monkeypatch):
    citizen, mqtt = secrets.token_urlsafe(24), secrets.token_hex(20)
    monkeypatch.setenv("FEED_TOKENS", json.dumps({"citizen": citizen, "mqtt": mqtt}))
    s = Settings()
    assert s.feed_token("citizen") == citizen and s.feed_token("mqtt") == mqtt and s.feed_token("push") is None
    assert citizen not in repr(s) and citizen not in str(s.model_dump())
    monkeypatch.setenv("FEED_TOKENS", "")
    assert Settings().feed_tokens == {}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('{"citizen": "short"}', "the token of source 'citizen' must be 16-256 letters"),
        ('{"citizen": "has a space in it, sixteen+"}', "the token of source 'citizen' must be"),
        ('{"citizen": "quote\\"d-token-0123456789"}', "the token of source 'citizen' must be"),
        ('{"citizen": 12345678901234567890}', "the token of source 'citizen' must be"),
        ('{"bad source": "0123456789abcdefghij"}', "source 'bad source' is not a source name"),
        ('{"citizen": "0123456789abcdefghij",', "FEED_TOKENS is not valid JSON"),
        ('["0123456789abcdefghij"]', "FEED_TOKENS must be a JSON object of source → token"),
    ],
)
def test_bad_feed_tokens_name_the_source_and_the_fix_never_the_token(monkeypatch, value, expected):
    monkeypatch.setenv("FEED_TOKENS", value)
    with pytest.raises(ValidationError) as exc:
        Settings()
    text = str(exc.value)
    assert expected in text, text
    for secret in ("short", "has a space", "d-token-0123456789", "12345678901234567890", "0123456789abcdefghij"):
        assert secret not in text, text
    if "must be 16-256" in expected:
        assert "secrets.token_urlsafe" in text  # how to make a good one


def test_the_check_says_why_a_token_is_refused(settings):
    right = settings.feed_token("citizen")
    assert feedauth.check(settings, "citizen", right) is None
    assert feedauth.check(settings, "citizen", None) == feedauth.TOKEN_MISSING
    assert feedauth.check(settings, "citizen", "") == feedauth.TOKEN_MISSING
    assert feedauth.check(settings, "citizen", right[:-1]) == feedauth.TOKEN_WRONG
    assert feedauth.check(settings, "citizen", right + "x") == feedauth.TOKEN_WRONG
    assert feedauth.check(settings, "citizen", settings.feed_token("mqtt")) == feedauth.TOKEN_WRONG
    assert feedauth.check(settings, "citizen", "令牌" + right) == feedauth.TOKEN_WRONG  # not ASCII: no error
    assert feedauth.check(settings, "nobody", right) == feedauth.SOURCE_UNCONFIGURED
    plain = settings.model_copy(update={"feed_tokens": {"citizen": right}})  # model_copy keeps plain strings
    assert feedauth.check(plain, "citizen", right) is None


def test_refusals_are_counted_per_feed_source_and_reason(settings, r):
    feedauth.count_refused(r, settings, "push", "citizen", feedauth.TOKEN_WRONG)
    feedauth.count_refused(r, settings, "push", "citizen", feedauth.TOKEN_WRONG, 2)
    feedauth.count_refused(r, settings, "push", "anyone", feedauth.SOURCE_UNCONFIGURED)
    feedauth.count_refused(r, settings, "push", "anyone-else", feedauth.SOURCE_UNCONFIGURED)
    feedauth.count_refused(r, settings, "mqtt", "mqtt://h:1883", feedauth.CREDENTIALS_REFUSED, 0)  # nothing
    assert r.hgetall(settings.key("live", "feed_refused")) == {
        b"push|citizen|token wrong": b"3", b"push|*|source not configured": b"2"}


def test_refusals_merge_into_the_feed_statuses():
    states = {"mqtt": {"ok": False, "error": "down"}}
    counts = {refusal_field("mqtt", "mqtt://h:1883", "credentials refused"): 4,
              refusal_field("mqtt", "mqtt", "token wrong"): 2, refusal_field("push", "a:b/c", "token missing"): 1}
    assert with_refusals(states, counts) == {
        "mqtt": {"ok": False, "error": "down",
                 "refused": {"mqtt://h:1883": {"credentials refused": 4}, "mqtt": {"token wrong": 2}}},
        "push": {"ok": True, "detail": "no status of its own; refusals counted",
                 "refused": {"a:b/c": {"token missing": 1}}},
    }
    assert states == {"mqtt": {"ok": False, "error": "down"}}  # the input is left as it was


def test_scrub_removes_every_configured_token(settings):
    raw = ('{"value": 1, "token": "' + settings.feed_token("mqtt") + '", "x": "' + settings.feed_token("citizen")
           + '"').encode()
    assert feedauth.scrub(raw, settings) == b'{"value": 1, "token": "<token removed>", "x": "<token removed>"'


def test_the_demo_makes_its_tokens_once_and_keeps_them_private(tmp_path):
    s = Settings(var_dir=tmp_path / "var", feed_tokens={})
    tokens, path = demo_tokens(s)
    assert path == tmp_path / "var" / "feed-tokens.json"
    assert set(tokens) == set(DEMO_SOURCES) == {"push", "citizen", "mqtt"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text(encoding="utf-8")) == tokens
    assert len(set(tokens.values())) == 3
    given = Settings(feed_tokens=json.dumps(tokens))  # what the children get as FEED_TOKENS
    assert {source: given.feed_token(source) for source in DEMO_SOURCES} == tokens
    assert demo_tokens(s) == (tokens, path)  # a second start uses the same ones


def test_the_demo_uses_configured_tokens_and_names_a_broken_file(tmp_path):
    mine = {"citizen": secrets.token_urlsafe(20)}
    s = Settings(var_dir=tmp_path / "var", feed_tokens=mine)
    assert demo_tokens(s) == (mine, None)
    assert not (tmp_path / "var").exists()
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "feed-tokens.json").write_text('{"citizen": "tiny"}', encoding="utf-8")
    with pytest.raises(ValueError) as exc:
        demo_tokens(Settings(var_dir=tmp_path / "var", feed_tokens={}))
    text = str(exc.value)
    assert "feed-tokens.json" in text and "the token of source 'citizen'" in text and "delete" in text
    assert "tiny" not in text
