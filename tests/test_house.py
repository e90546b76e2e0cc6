"""One truth, one place, and rooms a reader can take in: a second copy of the risk colours, the city's time zone or a
lifecycle path-finder fails here, and so does a hidden import, an over-long function or file, a tangled block (radon
grade D or worse), or a page that opens a store.

The checks read the production tree as text (the way a reviewer greps it), so they need no store.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from radon.complexity import cc_rank
from radon.visitors import ComplexityVisitor

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


# --------------------------------------------------------------------------- the size of the house's rooms

PROJECT = {*PARTS, "app"}
MAX_INNER_IMPORTS, MAX_FUNCTION_LINES, MAX_FILE_LINES = 10, 80, 700


def _project_imports_inside_functions(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] in PROJECT):
                found.add((node.lineno, node.module or "."))
            elif isinstance(node, ast.Import):
                found |= {(node.lineno, a.name) for a in node.names if a.name.split(".")[0] in PROJECT}
    return sorted(found)


def test_few_imports_hide_inside_functions_and_each_says_why():
    inner = []
    for path in _files(".py"):
        lines = path.read_text(encoding="utf-8").splitlines()
        for lineno, module in _project_imports_inside_functions(path):
            where = f"{path.relative_to(ROOT)}:{lineno} {module}"
            assert "# inner import:" in lines[lineno - 1], f"{where}: an import inside a function needs a " \
                                                           "'# inner import: <why>' comment, or move it to the top"
            inner.append(where)
    assert len(inner) <= MAX_INNER_IMPORTS, inner


def test_no_function_or_file_is_too_long_to_read():
    long_functions, long_files = [], []
    for path in _files(".py"):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > MAX_FILE_LINES:
            long_files.append(f"{path.relative_to(ROOT)} ({text.count(chr(10))} lines)")
        for fn in ast.walk(ast.parse(text)):
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) and fn.end_lineno - fn.lineno + 1 > MAX_FUNCTION_LINES:
                long_functions.append(f"{path.relative_to(ROOT)}:{fn.lineno} {fn.name} "
                                      f"({fn.end_lineno - fn.lineno + 1} lines)")
    assert not long_files, f"files over {MAX_FILE_LINES} lines: {long_files}"
    assert not long_functions, f"functions over {MAX_FUNCTION_LINES} lines: {long_functions}"


def test_no_page_holds_a_connection():
    # a page calls view models (dashboard/), which open their own connections through dashboard.context
    opens = re.compile(r"context\.(engine|redis_client)\(|\bget_(engine|redis)\(|\bcreate_engine\(")
    assert _where(opens, [p for p in (ROOT / "layouts").rglob("*.py")]) == set()


def test_no_block_is_too_tangled_to_follow():
    # radon's grades: A–C read at a glance; D (cyclomatic complexity 21) and worse is split into named steps
    tangled = []
    for path in _files(".py"):
        for block in ComplexityVisitor.from_code(path.read_text(encoding="utf-8")).blocks:
            if cc_rank(block.complexity) in "DEF":
                tangled.append(f"{path.relative_to(ROOT)}:{block.lineno} {block.name} "
                               f"({cc_rank(block.complexity)}, {block.complexity})")
    assert not tangled, tangled
