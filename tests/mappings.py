"""Small spreadsheet imports for the tests: ``mini_mapping`` writes a mapping file (a few columns, categories and
departments mapped, a chosen coordinate system), ``write_csv`` writes rows as a CSV in a given encoding.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def mini_mapping(tmp_path: Path, name: str, source: str, crs: str = "wgs84", extra: str = "") -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(f"""
source: {{value: {source}}}
external_id: {{column: id}}
created_at: {{column: created, format: "%Y-%m-%d %H:%M:%S", tz: Asia/Shanghai}}
closed_at: {{column: closed, format: "%Y-%m-%d %H:%M:%S"}}
status: {{column: status, map: {{done: closed, new: registered, sent: dispatched}}}}
category: {{column: kind, map: {{litter: "0101", parking: "0202"}}}}
department: {{column: dept, map: {{city: cg, police: ga}}, fallback: category}}
title: {{template: "{{kind}} at {{place}}"}}
address: {{column: place}}
location: {{lon: x, lat: y, crs: {crs}, placeholders: [[113.9, 22.7]], tolerance: 0.0001}}
{extra}""", encoding="utf-8")
    return p


def write_csv(path: Path, rows: list[dict], encoding: str = "utf-8") -> Path:
    pd.DataFrame(rows).to_csv(path, index=False, encoding=encoding)
    return path
