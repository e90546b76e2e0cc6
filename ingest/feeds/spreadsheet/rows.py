"""Reading an export: a CSV (its encoding detected) or an XLSX sheet, in chunks of rows as text."""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from ingest.feeds.spreadsheet.mapping import Mapping


class ImportFileError(ValueError):
    """The file cannot be read (missing, empty, wrong encoding, broken CSV)."""


def detect_encoding(path: Path, given: str | None = None) -> str:
    """The encoding to read a CSV with: ``given``, else UTF-8 (with or without BOM) if the first MiB decodes, else GB18030."""
    if given:
        try:
            codecs.lookup(given)
        except LookupError:
            raise ImportFileError(f"unknown encoding {given!r}; use e.g. utf-8, utf-8-sig, gb18030") from None
        return "utf-8-sig" if given.lower().replace("_", "-") in ("utf-8", "utf8") else given
    with open(path, "rb") as fh:
        head = fh.read(1 << 20)
        more = bool(fh.read(1))
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=not more)
        return "utf-8-sig"
    except UnicodeDecodeError:
        return "gb18030"


def _csv_chunks(path: Path, encoding: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    try:
        reader = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, chunksize=chunk_rows,
                             encoding=encoding, encoding_errors="strict")
    except pd.errors.EmptyDataError:
        raise ImportFileError("the file is empty (no header row)") from None
    except UnicodeDecodeError as exc:
        raise ImportFileError(f"cannot read the header as {encoding} ({exc.reason}); pass --encoding (e.g. gb18030)") from None
    with reader:
        while True:
            try:
                chunk = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError as exc:
                raise ImportFileError(f"the file is not valid {encoding} ({exc.reason} at byte {exc.start} of a block); "
                                      "pass --encoding (e.g. gb18030 for Chinese exports)") from None
            except pd.errors.ParserError as exc:
                raise ImportFileError(f"the CSV is broken: {exc}") from None
            yield chunk


def _cell(value: Any, fmt: str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime(fmt) if fmt else value.isoformat(sep=" ")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _xlsx_chunks(path: Path, chunk_rows: int, sheet: str | None, time_formats: dict[str, str | None]) -> Iterator[pd.DataFrame]:
    import openpyxl

    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many kinds for a broken file
        raise ImportFileError(f"cannot open the workbook ({type(exc).__name__}: {exc})") from None
    try:
        if sheet is not None and sheet not in wb.sheetnames:
            raise ImportFileError(f"the workbook has no sheet {sheet!r}; sheets: {', '.join(wb.sheetnames)} (mapping key: sheet)")
        ws = wb[sheet] if sheet is not None else wb.worksheets[0]
        rows = ws.iter_rows(values_only=True)
        header = next(rows, None)
        if header is None:
            raise ImportFileError("the sheet is empty (no header row)")
        names = [_cell(h, None).strip() for h in header]
        while names and not names[-1]:
            names.pop()
        fmts = [time_formats.get(n, "") if n in time_formats else None for n in names]
        width = len(names)
        buf: list[list[str]] = []
        for row in rows:
            vals = list(row[:width]) + [None] * (width - len(row))
            if all(v is None for v in vals):
                continue  # empty rows at the end of a sheet
            buf.append([_cell(v, fmts[i] if fmts[i] != "" else None) if fmts[i] is not None else _cell(v, None)
                        for i, v in enumerate(vals)])
            if len(buf) >= chunk_rows:
                yield pd.DataFrame(buf, columns=names, dtype=str)
                buf = []
        yield pd.DataFrame(buf, columns=names, dtype=str)
    finally:
        wb.close()


def read_chunks(path: Path, mapping: Mapping, encoding: str | None, chunk_rows: int) -> tuple[Iterator[pd.DataFrame], str]:
    """(chunks of rows as text, the encoding used). XLSX by the file's extension, everything else as CSV."""
    if not path.exists():
        raise ImportFileError(f"no such file: {path}")
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        return _xlsx_chunks(path, chunk_rows, mapping.sheet, mapping.time_formats()), "xlsx"
    if path.stat().st_size == 0:
        raise ImportFileError("the file is empty (no header row)")
    enc = detect_encoding(path, encoding)
    return _csv_chunks(path, enc, chunk_rows), enc
