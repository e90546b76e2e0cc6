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

import re

ROLES = ("screen", "leader", "dispatcher", "admin")
PERSONAL = frozenset({"dispatcher", "admin"})  # the roles that see reporters' names and phones
# what a role may open; pages by their router kind (app.page_of), "frame" the router (which then checks the page it
# draws), "api" the JSON reads, "users" the user admin,
# "notifications" the delivery log (page and API). A page's Dash callbacks are the page's: the same rule.
ALLOWED: dict[str, frozenset[str]] = {
    "screen": frozenset({"frame", "screen"}),
    "leader": frozenset({"frame", "drill", "compare", "case", "briefings", "screen", "api", "missing"}),
    "dispatcher": frozenset({"frame", "drill", "compare", "case", "briefings", "screen", "live", "dispatch", "api",
                             "missing", "notifications"}),
    "admin": frozenset({"frame", "drill", "compare", "case", "briefings", "screen", "live", "dispatch", "api", "missing",
                        "users", "notifications"}),
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


# Free text (titles, descriptions, addresses, notes) as the roles without PERSONAL see it. Each pattern is bounded by
# non-alphanumerics so it never bites into a longer code; the system's own 15-digit area codes are kept.
_B, _E = r"(?<![0-9A-Za-z])", r"(?![0-9A-Za-z])"
_EMAIL = re.compile(r"(?<![\w.%+-])([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*(@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})")
_ID18 = re.compile(_B + r"[1-9]\d{16}[\dXx]" + _E)
_CARD = re.compile(_B + r"\d{4}(?:[ -]?\d){12,15}" + _E)
_ID15 = re.compile(_B + r"[1-9]\d{5}\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}" + _E)
_MOBILE = re.compile(r"(?<![0-9A-Za-z+])(?:(?:\+|00)86[ -]?)?1[3-9]\d(?:[ -]?\d){8}" + _E)
_LANDLINE = re.compile(_B + r"(\(?0\d{2,3}\)?)([ -]?)([1-9]\d{6,7})" + _E)


def _star(text: str, head: int, tail: int) -> str:
    """``text`` with every digit (and X) starred but the first ``head`` and the last ``tail`` digits."""
    pos = [i for i, ch in enumerate(text) if ch.isdigit() or ch in "Xx"]
    keep = set(pos[:head] + pos[len(pos) - tail:])
    return "".join(ch if (i in keep or i not in set(pos)) else "*" for i, ch in enumerate(text))


def luhn(digits: str) -> bool:
    """Whether a digit string passes the Luhn check (bank card numbers do)."""
    total = 0
    for n, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if n % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def mask_text(text: str | None, own_prefixes: tuple[str, ...] | None = None) -> str | None:
    """Free text with the personal data in it masked, keeping its shape readable: mobile numbers (138****5678, also
    grouped or with +86/0086), landlines (0755-****5678), resident ID numbers (18 digits; 15 digits where it is not
    one of the system's own area codes, which start with one of ``own_prefixes``; not at all without them), Luhn-valid bank card numbers of
    16–19 digits (6222 **** **** 0123) and e-mail addresses (z***@example.com)."""
    if not text:
        return text
    text = _EMAIL.sub(lambda m: m.group(1) + "***" + m.group(2), text)
    text = _ID18.sub(lambda m: _star(m.group(), 6, 4), text)

    def card(m: re.Match) -> str:
        digits = re.sub(r"\D", "", m.group())
        return _star(m.group(), 4, 4) if 16 <= len(digits) <= 19 and luhn(digits) else m.group()

    text = _CARD.sub(card, text)
    if own_prefixes is not None:
        text = _ID15.sub(lambda m: m.group() if m.group().startswith(own_prefixes) else _star(m.group(), 6, 3), text)
    text = _MOBILE.sub(lambda m: _star(m.group(), len(re.sub(r"\D", "", m.group())) - 8, 4), text)
    return _LANDLINE.sub(lambda m: m.group(1) + m.group(2) + _star(m.group(3), 0, 4)
                         if m.group(2) or m.group(1).startswith("(") else m.group(), text)


def reporter(name: str | None, phone: str | None, personal: bool) -> tuple[str | None, str | None]:
    """The reporter's name and phone as a viewer sees them: whole for the roles with personal data (PERSONAL),
    masked for the others."""
    return (name, phone) if personal else (mask_name(name), mask_phone(phone))


FREE_TEXT = ("title", "description", "address", "note")


def free_text(row: dict, personal: bool, own: tuple[str, ...] | None = None) -> dict:
    """``row`` with its free-text fields (FREE_TEXT) as a viewer sees them: whole for the roles with personal data,
    with the phone, ID, card numbers and e-mails in them masked (mask_text) for the others. ``own``: the city's own
    area code prefixes, kept where a 15-digit ID is masked."""
    if personal:
        return row
    return {k: mask_text(v, own) if k in FREE_TEXT and isinstance(v, str) else v for k, v in row.items()}
