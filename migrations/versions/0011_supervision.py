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


def upgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("supervised_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("supervise_note", sa.Text(), nullable=True))
        batch.add_column(sa.Column("supervise_due_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.drop_column("supervise_due_at")
        batch.drop_column("supervise_note")
        batch.drop_column("supervised_at")
