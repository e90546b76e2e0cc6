"""The JSON API's query parameters, their names and bounds: what the handlers check (dashboard/api.py) and what the
OpenAPI description says (dashboard/openapi.py), from one place."""

from __future__ import annotations

from core.lifecycle import OPEN_STATUSES

# words a status filter takes besides the statuses themselves
STATUS_WORDS = {"open": sorted(s.value for s in OPEN_STATUSES)}
# The years a date or time in a query may fall in: far around any stored time (2000–2100), far from datetime's own
# limits (years 1 and 9999), where moving a day or across zones overflowed into a server error.
QUERY_YEARS = range(1900, 2200)
# the case filter's parameters (the case list, the CSV export)
FILTER_PARAMS = ("area", "since", "until", "category", "grade", "source", "status", "dept", "q", "drills")
MAX_TEXT_CHARS = 50  # a title search
SOURCE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
MAX_CODE_CHARS = 32  # longer is no area code: refused without echoing it whole
RISK_TOP_DEFAULT = 10
RISK_TOP_MAX = 50
