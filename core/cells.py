"""Cells of the spreadsheets and CSV files Gridwatch writes: text that a spreadsheet would run as a formula.

The OWASP rule for CSV injection: a text value that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
return is written with a single quote in front, so Excel, LibreOffice and Google Sheets show it as text and never
evaluate it (``=HYPERLINK(...)``, ``=cmd|' /C calc'!A0``, ``@SUM(1,1)``). Only text is touched: numbers, dates and
empty cells pass as they are, so a negative number stays a number.
"""

from __future__ import annotations

from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: Any) -> Any:
    """``value`` as a cell: text that would start a formula gets a leading single quote; anything else unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value
