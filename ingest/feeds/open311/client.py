"""GETs from one endpoint, with timeouts and bounded exponential backoff."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import requests

from ingest.feeds.open311.endpoints import Endpoint
from ingest.feeds.open311.parsing import Bad, Item, parse_items

log = logging.getLogger(__package__)

USER_AGENT = "gridwatch-open311/1"


class SourceDown(RuntimeError):
    """The endpoint did not answer usefully after every retry (or refused the request)."""


class Client:
    """GETs services and requests from one endpoint, with timeouts and bounded exponential backoff."""

    def __init__(self, ep: Endpoint, session: requests.Session | None = None, sleep: Callable[[float], Any] = time.sleep):
        self.ep = ep
        self.session = session or requests.Session()
        self.session.headers.setdefault("User-Agent", USER_AGENT)
        self.sleep = sleep
        self.retried = 0  # failed attempts that were retried

    def _params(self, extra: dict[str, Any]) -> dict[str, Any]:
        p: dict[str, Any] = dict(self.ep.params)
        if self.ep.jurisdiction_id:
            p["jurisdiction_id"] = self.ep.jurisdiction_id
        if self.ep.key:
            p["api_key"] = self.ep.key
        p.update(extra)
        return p

    def get(self, resource: str, **params: Any) -> bytes:
        url = f"{self.ep.base_url}/{resource}.{self.ep.format}"
        error = ""
        for attempt in range(1, self.ep.retries + 1):
            try:
                resp = self.session.get(url, params=self._params(params), timeout=self.ep.timeout_seconds)
            except (requests.ConnectionError, requests.Timeout) as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code >= 500 or resp.status_code == 429:
                    error = f"HTTP {resp.status_code} from {resource}.{self.ep.format}"
                elif resp.status_code >= 400:
                    raise SourceDown(f"HTTP {resp.status_code} from {resource}.{self.ep.format} "
                                     f"(not retried: check base_url, api_key, jurisdiction_id): {resp.text[:200]}")
                else:
                    return resp.content
            if attempt < self.ep.retries:
                delay = min(self.ep.backoff_seconds * 2 ** (attempt - 1), self.ep.backoff_max_seconds)
                log.warning("open311 %s: %s (attempt %d of %d, retrying in %.3g s)", self.ep.name, error, attempt,
                            self.ep.retries, delay)
                self.retried += 1
                self.sleep(delay)
        raise SourceDown(f"{error} (after {self.ep.retries} attempts)")

    def services(self) -> tuple[list[Item], list[Bad], str | None]:
        return parse_items(self.get("services"), self.ep.format)

    def requests_page(self, start: datetime, end: datetime, page: int) -> tuple[list[Item], list[Bad], str | None]:
        body = self.get("requests", **{self.ep.start_param: iso_z(start), self.ep.end_param: iso_z(end),
                                       "page": page, "page_size": self.ep.page_size})
        return parse_items(body, self.ep.format)


# --------------------------------------------------------------------------- mapping requests to events


def iso_z(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
