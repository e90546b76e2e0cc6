"""督办 (supervision orders) on the case: the newest order's time, its 批示 and its deadline

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 19:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

COLUMNS = ("supervised_at", "supervise_note", "supervise_due_at")


def upgrade() -> None:
    # plain ALTER TABLE ADD COLUMN: a batch copy of ``cases`` on SQLite would drop the old table, and with foreign
    # keys on that deletes every case's timeline (ON DELETE CASCADE)
    op.add_column("cases", sa.Column("supervised_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("cases", sa.Column("supervise_note", sa.Text(), nullable=True))
    op.add_column("cases", sa.Column("supervise_due_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    for name in reversed(COLUMNS):  # plain ALTER TABLE DROP COLUMN (SQLite 3.35+), for the same reason
        op.execute(f"ALTER TABLE cases DROP COLUMN {name}")
