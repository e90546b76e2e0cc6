"""Feed credentials: the token check every pushing feed makes, and the counters of what was refused.

``FEED_TOKENS`` (config/settings.py) maps a source name to its token. HTTP push (ingest/feeds/push.py) takes the
token from ``Authorization: Bearer <token>`` for the source named by ``X-Gridwatch-Source``; MQTT
(ingest/feeds/mqtt.py) takes it from each reading's ``"token"`` field for the source ``mqtt``. Both ask
:func:`check`, so one rule decides; a feed's own connection to its broker (MQTT_USERNAME / MQTT_PASSWORD) is
refused by the broker, and the feed counts that here too.

Every refusal is counted in the live state's ``P:live:feed_refused`` hash, one counter per feed, source and reason
(core/livestate.py), and shown with the feed's health under ``feed_status.<feed>.refused`` in /healthz. Tokens are
compared in constant time (``hmac.compare_digest``) and never logged, answered, counted or dead-lettered: the
reasons below are all a refusal records about them.
"""

from __future__ import annotations

import hmac
from typing import Any

import redis

from config.settings import Settings
from core.livestate import LiveKeys, refusal_field

TOKEN_MISSING = "token missing"
TOKEN_WRONG = "token wrong"
SOURCE_UNCONFIGURED = "source not configured"
CREDENTIALS_REFUSED = "credentials refused"  # a broker refused the feed's own user name and password

# Refusals of sources FEED_TOKENS does not hold share one counter: the name is the caller's to choose, and a counter
# per name sent would let unauthenticated junk grow the hash without bound. The log names each one.
ANY_UNCONFIGURED = "*"

SCRUBBED = b"<token removed>"  # tokens hold no quote or backslash (settings), so this keeps a JSON string one


def check(settings: Settings, source: str, given: str | None) -> str | None:
    """None when ``given`` is the token FEED_TOKENS holds for ``source``; else the reason it is refused."""
    expected = settings.feed_token(source)
    if expected is None:
        return SOURCE_UNCONFIGURED
    if not given:
        return TOKEN_MISSING
    if not hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8")):
        return TOKEN_WRONG
    return None


def count_refused(r: redis.Redis | Any, settings: Settings, feed: str, source: str, reason: str, n: int = 1) -> None:
    """Add ``n`` refusals of (feed, source, reason); on a client or a pipeline."""
    if n <= 0:
        return
    if reason == SOURCE_UNCONFIGURED:
        source = ANY_UNCONFIGURED
    r.hincrby(LiveKeys(settings.stream_prefix).feed_refused, refusal_field(feed, source, reason), n)


def scrub(raw: bytes, settings: Settings) -> bytes:
    """``raw`` with every configured token's value replaced: what a feed dead-letters must not hold one, even a
    payload it could not parse to remove the field from."""
    for source in settings.feed_tokens:
        token = settings.feed_token(source)
        if token:
            raw = raw.replace(token.encode("utf-8"), SCRUBBED)
    return raw
