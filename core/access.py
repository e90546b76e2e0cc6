"""Who may see what: roles, jurisdictions and the masking of personal data. Pure rules; the web layer
(dashboard/auth.py) applies them to every request, route and callback.

Roles:
- ``screen``     a kiosk link (a long random token), read-only: the wall (/screen) of its area and nothing else; no
                 personal data.
- ``leader``     the drill-down, compare, case pages (masked) and briefings within the jurisdiction; the API's reads.
- ``dispatcher`` as a leader, with case details unmasked (reporter name and phone).
- ``admin``      everything, unmasked; users and configuration (the command line).

A jurisdiction is an area code (district, street, community or grid): an area is within it when its code starts
with the jurisdiction's code. A case is within it when its grid is; a case with no grid belongs to the district only.
"""

from __future__ import annotations

ROLES = ("screen", "leader", "dispatcher", "admin")
PERSONAL = frozenset({"dispatcher", "admin"})  # the roles that see reporters' names and phones
# what a role may open; pages by their router kind (app.page_of), "frame" the router (which then checks the page it
# draws), "api" the JSON reads, "users" the user admin. A page's Dash callbacks are the page's: the same rule.
ALLOWED: dict[str, frozenset[str]] = {
    "screen": frozenset({"frame", "screen"}),
    "leader": frozenset({"frame", "drill", "compare", "case", "briefings", "screen", "api", "missing"}),
    "dispatcher": frozenset({"frame", "drill", "compare", "case", "briefings", "screen", "live", "api", "missing"}),
    "admin": frozenset({"frame", "drill", "compare", "case", "briefings", "screen", "live", "api", "missing", "users"}),
}
WHOLE_DISTRICT = frozenset({"screen", "live"})  # pages that show the whole district: for a district-wide scope only


def district_wide(scope: str | None) -> bool:
    """Whether the jurisdiction ``scope`` is a whole district (a 6-digit county code)."""
    return bool(scope) and len(scope) == 6


def may(role: str | None, what: str) -> bool:
    """Whether ``role`` may open ``what`` (a page kind, "api" or "users")."""
    return role in ALLOWED and what in ALLOWED[role]


def may_open(role: str | None, scope: str | None, what: str | None) -> bool:
    """Whether a viewer of ``role`` over the jurisdiction ``scope`` may open the page ``what`` (or use its callbacks):
    the role's permission, and for a page that shows the whole district a district-wide jurisdiction. None (a
    callback of no known page): no."""
    return what is not None and may(role, what) and (what not in WHOLE_DISTRICT or district_wide(scope))


def within(scope: str | None, code: str | None) -> bool:
    """Whether the area ``code`` lies in the jurisdiction ``scope`` (both area codes). An unknown code (None: a case
    with no grid) lies only in a district-wide jurisdiction, whose code is 6 digits."""
    if not scope:
        return False
    if not code:
        return district_wide(scope)
    return code.startswith(scope)


def mask_name(name: str | None) -> str | None:
    """A reporter's name as the roles without PERSONAL see it: the first character, the rest starred (张** ← 张先生)."""
    if not name:
        return name
    return name[0] + "*" * max(1, len(name) - 1)


def mask_phone(phone: str | None) -> str | None:
    """A phone number with all but its first three and last two digits starred (138******00)."""
    if not phone:
        return phone
    digits = [i for i, ch in enumerate(phone) if ch.isdigit()]
    keep = set(digits[:3] + digits[-2:]) if len(digits) > 5 else set()
    return "".join(ch if (i in keep or not ch.isdigit()) else "*" for i, ch in enumerate(phone))
