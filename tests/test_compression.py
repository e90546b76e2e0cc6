"""Answers travel compressed when the client accepts it (gzip, brotli), and decode to exactly what an uncompressed
answer carries: the API's JSON, the streamed CSV export, the wall's snapshot request."""

from __future__ import annotations

import gzip

import brotli
import orjson
import pytest

from tests import accounts
from tests.api_dataset import apply, build_dataset


@pytest.fixture
def seeded(settings, r, engine, city):
    events, readings, _df, _alarms = build_dataset(city)
    apply(city, settings, engine, r, cases=events, sensors=readings)


def decoded(resp) -> bytes:
    enc = resp.headers.get("Content-Encoding")
    data = resp.get_data()
    return gzip.decompress(data) if enc == "gzip" else brotli.decompress(data) if enc == "br" else data


@pytest.mark.parametrize(("path", "encoding"), [
    ("/api/v1/cases?limit=200", "gzip"), ("/api/v1/cases?limit=200", "br"), ("/api/v1/areas?level=grid", "gzip"),
    ("/api/v1/areas?level=grid", "br"),
    ("/api/v1/cases.csv", "br"),  # streamed: compressed as it streams (flask-compress streams br, not gzip)
])
def test_compressed_answers_decode_to_the_plain_ones(app, seeded, path, encoding):
    c = accounts.client(app=app, role="dispatcher")
    plain = c.get(path, headers={"Accept-Encoding": "identity"})
    packed = c.get(path, headers={"Accept-Encoding": encoding})
    assert plain.status_code == packed.status_code == 200
    assert plain.headers.get("Content-Encoding") is None and packed.headers["Content-Encoding"] == encoding
    body = decoded(packed)
    if path.endswith(".csv"):  # the export's time stamp is in its name, not its rows
        assert body == plain.get_data()
    else:
        assert orjson.loads(body) == orjson.loads(plain.get_data())
    assert len(packed.get_data()) < len(plain.get_data()) / 2
