"""What an import did: rows read, published and dead-lettered, where the points fell, the flags raised."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ImportReport:
    """What an import did. ``str(report)`` is the printed report."""

    file: str
    mapping: str
    source: str
    dry_run: bool = False
    rows_read: int = 0
    rows_published: int = 0
    events_published: int = 0
    rows_dead: int = 0
    dead: Counter = field(default_factory=Counter)  # reason (column: problem) -> rows
    located: int = 0
    unlocated: Counter = field(default_factory=Counter)  # missing / unreadable / placeholder / outside the district
    flagged: Counter = field(default_factory=Counter)  # flag -> rows
    by_department: Counter = field(default_factory=Counter)  # department code ("(none)") -> rows
    by_status: Counter = field(default_factory=Counter)  # import status -> rows
    by_source_status: Counter = field(default_factory=Counter)  # the file's own status values -> rows
    duplicate_ids: int = 0  # rows whose id appeared earlier in the same file (their events are duplicates)
    seconds: float = 0.0
    encoding: str | None = None

    @property
    def rows_unlocated(self) -> int:
        return sum(self.unlocated.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file, "mapping": self.mapping, "source": self.source, "dry_run": self.dry_run,
            "rows_read": self.rows_read, "rows_published": self.rows_published, "events_published": self.events_published,
            "rows_dead": self.rows_dead, "dead": dict(self.dead), "located": self.located,
            "unlocated": dict(self.unlocated), "flagged": dict(self.flagged), "by_department": dict(self.by_department),
            "by_status": dict(self.by_status), "by_source_status": dict(self.by_source_status),
            "duplicate_ids": self.duplicate_ids, "seconds": round(self.seconds, 3),
        }

    def __str__(self) -> str:
        verb = "would publish" if self.dry_run else "published"
        rate = self.rows_read / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"Import of {self.file} with {self.mapping} as source {self.source!r}" + (" (dry run: nothing published)" if self.dry_run else ""),
            f"  rows read        {self.rows_read:>10,}   in {self.seconds:.1f} s ({rate:,.0f} rows/s, encoding {self.encoding})",
            f"  {verb:<16} {self.rows_published:>10,} rows, {self.events_published:,} events",
            f"  dead-lettered    {self.rows_dead:>10,} rows" + (" (would be)" if self.dry_run else
                                                              " (bad rows are dead-lettered again by every import of the file)"),
        ]
        lines += [f"      {n:>10,}  {reason}" for reason, n in self.dead.most_common()]
        lines.append(f"  located          {self.located:>10,} rows (inside the district)")
        lines.append(f"  unlocated        {self.rows_unlocated:>10,} rows (kept, without a grid)")
        lines += [f"      {n:>10,}  {why}" for why, n in self.unlocated.most_common()]
        lines.append(f"  flagged          {sum(self.flagged.values()):>10,} flags")
        lines += [f"      {n:>10,}  {flag}" for flag, n in self.flagged.most_common()]
        if self.duplicate_ids:
            lines.append(f"  repeated ids     {self.duplicate_ids:>10,} rows (an id seen earlier in the file: only new steps apply)")
        lines.append("  by department")
        lines += [f"      {n:>10,}  {dep}" for dep, n in self.by_department.most_common()]
        lines.append("  by status (import status ← the file's values)")
        lines += [f"      {n:>10,}  {st}" for st, n in self.by_status.most_common()]
        lines.append("      " + ", ".join(f"{k}: {v:,}" for k, v in self.by_source_status.most_common()))
        return "\n".join(lines)
