"""Open311 GeoReport v2 pull feed: services and service requests from a city's 311 endpoint.

``python -m ingest open311`` polls every enabled endpoint of ``config/feeds.yaml`` (``--once`` for one
poll); the scheduler registers one job per enabled endpoint through :func:`scheduled_polls`.

How a poll works
----------------
- Requests are pulled in time windows (``start_date``/``end_date``, ISO 8601, ``window_hours`` wide) and
  pages (``page``/``page_size``) until a page comes back short. The end of the last completed window is
  kept in Redis (``<prefix>:feed:open311:<name>``, field ``window_end``); the next poll — in this process
  or after a restart — continues from there (less ``overlap_minutes``, for requests the source indexes
  late). The first poll starts ``backfill_hours`` back, or at ``--since``.
- Each request becomes a ``report`` (``requested_datetime``, ``service_request_id``, location, address,
  ``expected_datetime`` as the due time) followed by the lifecycle events its ``notes[]`` and ``status``
  say happened, in time order, mapped by a YAML mapping (``config/mappings/open311_*.yaml``). The
  sequence is always legal (:mod:`core.lifecycle`): where the source skips steps (closed without being
  assigned, say) the missing ones are inserted at the same moment, with actor ``open311`` and a note
  saying they were inferred. Event ids are derived from the source's data (``close-20150101T101540Z``),
  so pulling a window again republishes the same ids and the worker applies nothing twice.
- A source that does not answer (connection refused, timeout, 5xx, 429) is retried with exponential
  backoff (``backoff_seconds`` doubling up to ``backoff_max_seconds``, ``retries`` attempts per request);
  then the poll stops, reports it to :class:`~ingest.feedhealth.FeedHealth` and the window is not
  advanced. What cannot be read (invalid JSON, truncated XML, a record with wrong types) is
  dead-lettered with the raw text and the reason; everything readable is published.

XML is parsed with the standard library and any DTD or entity declaration is refused (no entity
expansion, no external references). Coordinates are converted to WGS84 from the endpoint's ``crs``.
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
