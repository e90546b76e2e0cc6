"""Open311 GeoReport v2 pull feed: a city's 311 service requests as case events.

``python -m ingest open311`` polls the enabled endpoints of ``config/feeds.yaml``; the scheduler runs one job per
endpoint (:func:`scheduled_polls`). Parts: ``endpoints`` (config and mappings), ``parsing``, ``client`` (HTTP),
``events`` (a request as events), ``poller`` (windows, resume point, health), ``cli``. Why a poll works the way it
does: docs/decisions/0007-open311-pull.md.
"""

from ingest.feeds.open311.cli import add_open311_arguments, main_open311
from ingest.feeds.open311.client import Client, SourceDown
from ingest.feeds.open311.endpoints import Endpoint, Open311ConfigError, endpoint_of, load_endpoints, load_mapping
from ingest.feeds.open311.parsing import parse_xml_items
from ingest.feeds.open311.poller import PollReport, poll_once, run_forever, scheduled_polls, state_key

__all__ = [
    "Client", "Endpoint", "Open311ConfigError", "PollReport", "SourceDown", "add_open311_arguments", "endpoint_of",
    "load_endpoints", "load_mapping", "main_open311", "parse_xml_items", "poll_once", "run_forever", "scheduled_polls",
    "state_key",
]
