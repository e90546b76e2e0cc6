"""Reading GeoReport responses (JSON or XML) into records, keeping what is readable of a broken one."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from typing import Any

import orjson

Item = tuple[Any, bytes]  # (decoded record, its raw text)
Bad = tuple[bytes, str]  # (raw text, reason)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _xml_value(el: ET.Element) -> Any:
    children = list(el)
    if not children:
        text = (el.text or "").strip()
        return text or None
    tags = [_local(c.tag) for c in children]
    name = _local(el.tag)
    if len(set(tags)) == 1 and (len(tags) > 1 or name in (tags[0] + "s", tags[0] + "es")):
        return [_xml_value(c) for c in children]
    return {t: _xml_value(c) for t, c in zip(tags, children, strict=True)}


_DTD = re.compile(rb"<!(DOCTYPE|ENTITY)", re.IGNORECASE)


def parse_xml_items(body: bytes) -> tuple[list[Item], list[Bad], str | None]:
    """The children of the root element (``<request>``/``<service>``) as dicts.

    Returns (items, bad, error): on a parse error the items completed before it are kept and the rest
    of the text is returned as one bad entry; ``error`` says what went wrong with the document.
    """
    if _DTD.search(body):
        reason = "XML with a DTD or entity declaration refused (entity expansion is not allowed)"
        return [], [(body, reason)], reason
    body = body.lstrip()  # real services.xml files start with a blank line before the declaration
    parser = ET.XMLPullParser(events=("start", "end"))
    items: list[Item] = []
    depth = 0
    root: ET.Element | None = None
    error: str | None = None

    def drain() -> None:
        nonlocal depth, root
        for event, el in parser.read_events():
            if event == "start":
                depth += 1
                if depth == 1:
                    root = el
            else:
                depth -= 1
                if depth == 1:
                    items.append((_xml_value(el), ET.tostring(el, encoding="utf-8")))
                    if root is not None:
                        root.remove(el)

    try:
        parser.feed(body)
        drain()
        parser.close()
        drain()
    except ET.ParseError as exc:
        drain()
        error = f"invalid XML ({exc}) after {len(items)} readable records"
    if error is None and root is None:
        error = "empty XML document"
    if error is None:
        return items, [], None
    rest = body
    if items:
        last = _local(ET.fromstring(items[-1][1]).tag).encode()
        end = body.rfind(b"</" + last + b">")
        if end >= 0:
            rest = body[end + len(last) + 3 :]
    return items, [(rest, error)], error


_LIST_KEYS = ("service_requests", "requests", "services")


def parse_json_items(body: bytes) -> tuple[list[Item], list[Bad], str | None]:
    """The records of a JSON list (or an object holding one under service_requests/requests/services).

    Invalid JSON: the complete records before the error are kept, the rest is returned as one bad entry.
    """
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        reason = f"response is not UTF-8 ({exc})"
        return [], [(body, reason)], reason
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return _salvage_json(text, exc)
    if isinstance(data, dict):
        key = next((k for k in _LIST_KEYS if isinstance(data.get(k), list)), None)
        if key is None:
            reason = f"expected a JSON list of records, got an object with keys {sorted(data)[:10]}"
            return [], [(body, reason)], reason
        data = data[key]
    if not isinstance(data, list):
        reason = f"expected a JSON list of records, got {type(data).__name__}"
        return [], [(body, reason)], reason
    return [(item, orjson.dumps(item)) for item in data], [], None


def _salvage_json(text: str, exc: json.JSONDecodeError) -> tuple[list[Item], list[Bad], str]:
    reason = f"invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    start = text.find("[")
    stripped = text.lstrip()
    if start < 0 or not stripped or stripped[0] not in "[{":
        return [], [(text.encode(), reason)], reason
    dec = json.JSONDecoder()
    items: list[Item] = []
    pos = start + 1
    n = len(text)
    while True:
        while pos < n and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= n or text[pos] == "]":
            break
        try:
            item, end = dec.raw_decode(text, pos)
        except json.JSONDecodeError:
            break
        items.append((item, text[pos:end].encode()))
        pos = end
    reason = f"{reason}; {len(items)} records before it were read"
    return items, [(text[pos:].encode(), reason)], reason


def parse_items(body: bytes, fmt: str) -> tuple[list[Item], list[Bad], str | None]:
    return parse_xml_items(body) if fmt == "xml" else parse_json_items(body)
