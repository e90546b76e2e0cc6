"""A covering index for the drill-down's reads of a period: the report time with the area, category, source, grade
and status, so counting a period's cases by area, category, source or grade never reads the table. It leads with the
report time, so it replaces the plain report-time index (which PostgreSQL would otherwise prefer, reading the table)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22 08:10:00
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

COLUMNS = ["reported_at", "district_code", "street_code", "community_code", "grid_code", "category", "source", "grade",
           "status"]


def upgrade() -> None:
    op.create_index("ix_cases_reported_cover", "cases", COLUMNS)
    op.drop_index("ix_cases_reported", table_name="cases")


def downgrade() -> None:
    op.create_index("ix_cases_reported", "cases", ["reported_at"])
    op.drop_index("ix_cases_reported_cover", table_name="cases")
