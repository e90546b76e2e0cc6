"""The first dispatch and the first evaluation of a case on the case row (the KPIs' "first moments" read them
without looking into the timeline), backfilled from the timeline

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 08:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("cases", sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("cases", sa.Column("evaluated_at", sa.DateTime(timezone=True), nullable=True))
    # the same rule the worker keeps (ingest/worker.py): the earliest dispatch or whistle, the earliest evaluation
    op.execute("UPDATE cases SET dispatched_at = (SELECT min(e.occurred_at) FROM case_events e WHERE e.case_id = cases.id"
               " AND e.action IN ('dispatch', 'whistle')),"
               " evaluated_at = (SELECT min(e.occurred_at) FROM case_events e WHERE e.case_id = cases.id"
               " AND e.action = 'evaluate')")


def downgrade() -> None:
    # plain ALTER TABLE (SQLite 3.35+): a batch copy of ``cases`` would drop the old table, and with foreign keys on
    # that deletes every row that refers to it (the timeline, the assignments)
    op.execute("ALTER TABLE cases DROP COLUMN evaluated_at")
    op.execute("ALTER TABLE cases DROP COLUMN dispatched_at")
