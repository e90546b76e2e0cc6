"""SLA clock: suspension, warning and escalation marks on cases

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 04:05:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("suspended_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("warned", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column("escalated", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_column("escalated")
        batch_op.drop_column("warned")
        batch_op.drop_column("suspended_at")
