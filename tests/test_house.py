"""One truth, one place: a second copy of the risk colours, the city's time zone or a lifecycle path-finder fails here.

The checks read the production tree as text (the way a reviewer greps it), so they need no store.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from core.lifecycle import Status, path_to
from core.risk import RISK_LEVELS

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("core", "config", "store", "ingest", "dashboard", "layouts")


def _files(*suffixes: str) -> list[Path]:
    found = [ROOT / "app.py"]
    for part in (*PARTS, "assets"):
        found += [p for p in (ROOT / part).rglob("*") if p.suffix in suffixes]
    return [p for p in found if p.suffix in suffixes]


def _where(pattern: re.Pattern, files: list[Path]) -> set[str]:
    return {str(p.relative_to(ROOT)) for p in files if pattern.search(p.read_text(encoding="utf-8"))}


def test_the_risk_colours_are_written_once():
    colours = [level.color for level in RISK_LEVELS.values()]
    assert len(set(colours)) == 4
    pattern = re.compile("|".join(re.escape(c) for c in colours), re.IGNORECASE)
    assert _where(pattern, _files(".py", ".js", ".css", ".html")) == {"core/risk.py"}


def test_the_city_time_zone_is_named_once():
    named = re.compile(r"ZoneInfo\(\s*['\"]|timezone\(\s*timedelta\(\s*hours\s*=\s*8|gettz\(")
    assert _where(named, _files(".py")) == {"core/records.py"}


def test_one_lifecycle_path_finder():
    # whoever walks the lifecycle's moves outside core/lifecycle.py is a second path-finder
    walks = re.compile(r"\bTRANSITIONS\b|\b_MOVES\b|\bdef\s+path_to\b")
    assert _where(walks, _files(".py")) == {"core/lifecycle.py"}
    # and the one there finds what the importers ask of it: a closed case through a department
    steps = path_to(Status.REGISTERED, Status.CLOSED)
    assert steps and steps[-1].value == "close"


def test_no_part_imports_a_page_or_the_composition_root():
    for path in _files(".py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
            assert "app" not in names, f"{path.relative_to(ROOT)} imports app.py, a composition root"
