"""Drills (演练): cases, their assignments and devices a replay made are marked, so every figure can leave them out;
the covering indexes end with the mark, so leaving drills out still reads the index alone

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 17:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

REPORTED_COVER = ["reported_at", "district_code", "street_code", "community_code", "grid_code", "category", "source",
                  "grade", "status"]
ASSIGNMENT_COVERS = {
    "ix_case_assignments_assigned": ["role", "department", "assigned_at", "grid_code", "accepted_at",
                                     "accepted_on_time", "due_at", "ended_at", "returned_at", "checked_in_at"],
    "ix_case_assignments_resolved": ["role", "department", "resolved_at", "grid_code", "resolved_on_time",
                                     "reopened_at", "handling_s"],
    "ix_case_assignments_evaluated": ["role", "department", "evaluated_at", "grid_code", "rating"],
    "ix_case_assignments_open": ["role", "department", "finished_at", "assigned_at", "grid_code", "case_id"],
}


def _flag() -> sa.Column:
    return sa.Column("drill", sa.Boolean(), nullable=False, server_default=sa.false())


def upgrade() -> None:
    for table in ("cases", "case_assignments", "devices"):
        op.add_column(table, _flag())
    op.drop_index("ix_cases_reported_cover", table_name="cases")
    op.create_index("ix_cases_reported_cover", "cases", [*REPORTED_COVER, "drill"])
    for name, cols in ASSIGNMENT_COVERS.items():
        op.drop_index(name, table_name="case_assignments")
        op.create_index(name, "case_assignments", [*cols, "drill"])


def downgrade() -> None:
    for name, cols in ASSIGNMENT_COVERS.items():
        op.drop_index(name, table_name="case_assignments")
        op.create_index(name, "case_assignments", cols)
    op.drop_index("ix_cases_reported_cover", table_name="cases")
    op.create_index("ix_cases_reported_cover", "cases", REPORTED_COVER)
    # plain ALTER TABLE (SQLite 3.35+): a batch copy of ``cases`` would drop the old table, and with foreign keys on
    # that deletes every row that refers to it (see 0005)
    for table in ("cases", "case_assignments", "devices"):
        op.execute(f"ALTER TABLE {table} DROP COLUMN drill")
