"""Checks the tests share: the live counters against an SQL recount (pandas), and the text of a PDF (pdftotext).

``assert_live_matches_sql`` compares the district's and every street's live counters with what SQL says;
``needs_poppler`` skips a test when poppler-utils is missing; ``pdf_text`` is a PDF's text.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select

from store.schema import Case


def sql_frame(engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(select(Case.id, Case.grid_code, Case.street_code, Case.grade, Case.status, Case.overdue), conn)


def live_area(r, settings, code) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in r.hgetall(f"{settings.stream_prefix}:live:area:{code}").items()}


def assert_live_matches_sql(r, settings, engine, city) -> None:
    """The live counters equal what SQL says, computed here with pandas."""
    df = sql_frame(engine)
    df["open"] = df.status.isin(["reported", "registered", "dispatched", "accepted", "handling"])
    checks = [(city.county_code, df)]
    for street in city.geography.areas("street"):
        checks.append((street.code, df[df.street_code == street.code]))
    for code, part in checks:
        live = live_area(r, settings, code)
        assert live.get("total", 0) == len(part), code
        assert live.get("open", 0) == int(part.open.sum()), code
        assert live.get("overdue", 0) == int((part.open & part.overdue).sum()), code
        for g in range(1, 5):
            assert live.get(f"g{g}", 0) == int((part.open & (part.grade == g)).sum()), (code, g)
        for status, n in part.status.value_counts().items():
            assert live.get(f"s:{status}", 0) == n, (code, status)


needs_poppler = pytest.mark.skipif(not shutil.which("pdftoppm") or not shutil.which("pdftotext"),
                                   reason="poppler-utils (pdftoppm, pdftotext) is not installed; `make test` installs it")


def pdf_text(path: Path, page: int | None = None, mode: str = "-layout") -> str:
    """The PDF's text: laid out as on the page (table rows on one line), or ``-raw`` (in the order drawn)."""
    pages = ["-f", str(page), "-l", str(page)] if page else []
    return subprocess.run(["pdftotext", mode, *pages, str(path), "-"], capture_output=True, text=True,
                          check=True).stdout
