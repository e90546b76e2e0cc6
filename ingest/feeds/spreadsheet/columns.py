"""Parsing a chunk's columns: text as Python lists (cheaper than pandas' string arrays without pyarrow), times and
points as numpy arrays."""

from __future__ import annotations

import re
import string

import numpy as np
import pandas as pd

from core.geography import PLACEHOLDER_EPSILON, PLACEHOLDER_POINTS
from ingest.feeds.spreadsheet.mapping import MappedField, TextField, TimeField, template_columns

_TEMPLATE_TRIM = " ·-—,;:|/"
_WIDTHS = {"Y": 4, "m": 2, "d": 2, "H": 2, "I": 2, "M": 2, "S": 2, "p": 2}
_NAT = np.datetime64("NaT", "s")


class Columns:
    """The chunk's columns as stripped Python strings, each computed once."""

    def __init__(self, df: pd.DataFrame):
        self.df = df
        self.n = len(df)
        self._cache: dict[str, list[str]] = {}

    def __call__(self, name: str) -> list[str]:
        got = self._cache.get(name)
        if got is None:
            vals = self.df[name].tolist()
            try:
                got = [v.strip() for v in vals]
            except AttributeError:  # a short row: missing cells come back as NaN
                got = [v.strip() if isinstance(v, str) else "" for v in vals]
            self._cache[name] = got
        return got


def _fixed_layout(fmt: str) -> tuple[list[tuple[str | None, int, str]], int] | None:
    """[(code or None for a literal, offset, literal)], width — when every value of ``fmt`` has one fixed width."""
    parts: list[tuple[str | None, int, str]] = []
    pos = i = 0
    while i < len(fmt):
        c = fmt[i]
        if c == "%":
            code = fmt[i + 1: i + 2]
            if code not in _WIDTHS:
                return None
            parts.append((code, pos, ""))
            pos += _WIDTHS[code]
            i += 2
        else:
            parts.append((None, pos, c))
            pos += 1
            i += 1
    return parts, pos


def _parse_fixed(values: list[str], idx: np.ndarray, fmt: str) -> tuple[np.ndarray, np.ndarray]:
    """Fast path for zero-padded formats: (naive times, rows that did not fit the layout) for the rows ``idx``."""
    layout = _fixed_layout(fmt)
    out = np.full(len(idx), _NAT)
    if layout is None or not len(idx):
        return out, np.ones(len(idx), dtype=bool)
    parts, width = layout
    sub = [values[i] for i in idx]
    fits = np.fromiter((len(v) == width and v.isascii() for v in sub), dtype=bool, count=len(sub))
    rows = np.flatnonzero(fits)
    if not len(rows):
        return out, ~fits
    b = np.frombuffer("".join(sub[i] for i in rows).encode("ascii"), dtype=np.uint8).reshape(len(rows), width)
    good = np.ones(len(rows), dtype=bool)
    num: dict[str, np.ndarray] = {}
    pm = None
    for code, pos, lit in parts:
        if code is None:
            good &= b[:, pos] == ord(lit)
        elif code == "p":
            first, second = b[:, pos] | 0x20, b[:, pos + 1] | 0x20  # lower case
            good &= ((first == ord("a")) | (first == ord("p"))) & (second == ord("m"))
            pm = first == ord("p")
        else:
            digits = b[:, pos: pos + _WIDTHS[code]].astype(np.int64) - 48
            good &= ((digits >= 0) & (digits <= 9)).all(axis=1)
            val = np.zeros(len(rows), dtype=np.int64)
            for k in range(digits.shape[1]):
                val = val * 10 + digits[:, k]
            num[code] = val
    year = num.get("Y", np.full(len(rows), 1900))
    month = num.get("m", np.ones(len(rows), dtype=np.int64))
    day = num.get("d", np.ones(len(rows), dtype=np.int64))
    if "I" in num:
        hour = num["I"] % 12 + (np.where(pm, 12, 0) if pm is not None else 0)
        good &= (num["I"] >= 1) & (num["I"] <= 12)
    else:
        hour = num.get("H", np.zeros(len(rows), dtype=np.int64))
    minute = num.get("M", np.zeros(len(rows), dtype=np.int64))
    second = num.get("S", np.zeros(len(rows), dtype=np.int64))
    good &= (month >= 1) & (month <= 12) & (day >= 1) & (day <= 31) & (hour < 24) & (minute < 60) & (second < 60)
    months = ((year - 1970) * 12 + (month - 1)).astype("datetime64[M]")
    dates = months.astype("datetime64[D]") + (day - 1)
    good &= dates.astype("datetime64[M]") == months  # 30 February and the like
    ts = dates.astype("datetime64[s]") + (hour * 3600 + minute * 60 + second)
    res = np.full(len(sub), _NAT)
    res[rows] = np.where(good, ts, _NAT)
    out[:] = res
    unfit = ~fits
    unfit[rows[~good]] = False  # well-formed but impossible: stays NaT, no second chance
    return out, unfit


def usable_points(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """core.geography.usable_point for arrays: finite, in range, not zero, not a known placeholder."""
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(x) & np.isfinite(y) & (np.abs(x) <= 180) & (np.abs(y) <= 90)
        ok &= (np.abs(x) >= PLACEHOLDER_EPSILON) & (np.abs(y) >= PLACEHOLDER_EPSILON)
        for px, py in PLACEHOLDER_POINTS:
            ok &= ~((x == px) & (y == py))
    return ok


def is_empty(vals: list[str]) -> np.ndarray:
    return np.array(vals, dtype=object) == ""


# the end of an ISO 8601 time that names its offset: 09:00+08:00, 0900+0800, 09:00:00.5Z (a bare date never matches)
_ISO_OFFSET = re.compile(r"\d{2}(?::?\d{2}){1,2}(?:[.,]\d+)?\s*(?:[zZ]|[+-]\d{2}(?::?\d{2})?)\s*$")


def parse_times(values: list[str], spec: TimeField) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(UTC times as datetime64[s] with NaT, empty mask, unreadable mask) of one time column."""
    n = len(values)
    empty = is_empty(values)
    idx = np.flatnonzero(~empty)
    naive = np.full(n, _NAT)
    aware = spec.format is not None and ("%z" in spec.format or "%Z" in spec.format)
    if spec.format is not None and not aware:
        got, unfit = _parse_fixed(values, idx, spec.format)
        naive[idx] = got
        rest = idx[unfit]
    else:
        rest = idx
    utc = None
    fmt = spec.format or "ISO8601"
    if spec.format is None:  # ISO 8601: a value with an offset (or Z) names its instant; one without is local
        offset = np.array([_ISO_OFFSET.search(values[i]) is not None for i in rest], dtype=bool)
        local_idx, rest = rest[~offset], rest[offset]
    else:  # a format with %z names instants; one without names local times
        local_idx, rest = (rest[:0], rest) if aware else (rest, rest[:0])
    if len(local_idx):
        try:
            dt = pd.to_datetime(pd.Series([values[i] for i in local_idx], dtype=object), format=fmt, errors="coerce")
        except (ValueError, TypeError):  # an offset the pattern missed: read them all as instants, as before
            rest, dt = np.sort(np.concatenate([rest, local_idx])), None
        if dt is not None:
            naive[local_idx] = dt.to_numpy(dtype="datetime64[s]")
    if len(rest):
        dt = pd.to_datetime(pd.Series([values[i] for i in rest], dtype=object), format=fmt, errors="coerce", utc=True)
        utc = (rest, dt.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[s]"))
    local = pd.Series(naive).dt.tz_localize(spec.tz, ambiguous=np.ones(n, dtype=bool), nonexistent="shift_forward")
    out = local.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[s]", copy=True)  # written below
    if utc is not None:
        out[utc[0]] = utc[1]
    bad = np.isnat(out) & ~empty
    return out, empty, bad


def to_iso(times: np.ndarray) -> list[str]:
    return np.char.add(np.datetime_as_string(times, unit="s"), "Z").tolist()


def text_values(cols: Columns, spec: TextField | None) -> list[str] | None:
    if spec is None:
        return None
    if spec.value is not None:
        return [spec.value] * cols.n
    if spec.column is not None:
        return cols(spec.column)
    names = template_columns(spec.template or "")
    k = iter(range(len(names)))
    fmt = "".join(lit.replace("{", "{{").replace("}", "}}") + ("" if name is None else "{" + str(next(k)) + "}")
                  for lit, name, _s, _c in string.Formatter().parse(spec.template or ""))
    if not names:
        return [fmt.format().strip(_TEMPLATE_TRIM)] * cols.n
    return [fmt.format(*vals).strip(_TEMPLATE_TRIM) for vals in zip(*(cols(c) for c in names), strict=True)]


def clean_texts(vals: list[str], limit: int, bad: re.Pattern, sep: str) -> tuple[list[str], np.ndarray]:
    """Control characters replaced by a space; longer than ``limit``: shortened with "…". (values, shortened mask)."""
    if bad.search(sep.join(vals)):
        vals = [bad.sub(" ", v) for v in vals]
    long = np.zeros(len(vals), dtype=bool)
    if vals and max(map(len, vals)) > limit:
        long = np.fromiter((len(v) > limit for v in vals), dtype=bool, count=len(vals))
        vals = [v[: limit - 1] + "…" if len(v) > limit else v for v in vals]
    return vals, long


def mapped_values(cols: Columns, spec: MappedField) -> tuple[list[str | None], list[str], np.ndarray]:
    """(mapped values, raw values, used-the-fallback mask). Unmapped without a fallback: None."""
    n = cols.n
    if spec.value is not None:
        const = [str(spec.value)] * n
        return list(const), const, np.zeros(n, dtype=bool)
    raw = cols(spec.column)
    if spec.map is None:
        mapped: list[str | None] = [v or None for v in raw]
    else:
        table = {k: str(v) for k, v in spec.map.items()}
        mapped = [table.get(v) for v in raw]
    missing = np.equal(np.array(mapped, dtype=object), None)
    fell = np.zeros(n, dtype=bool)
    if spec.fallback is not None and missing.any():
        fb = str(spec.fallback)
        mapped = [fb if v is None else v for v in mapped]
        fell = missing
    return mapped, raw, fell
