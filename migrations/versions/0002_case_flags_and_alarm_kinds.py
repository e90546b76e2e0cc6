"""case flags and alarm kinds

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 03:13:05
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("flags", sa.JSON(), nullable=True))
    with op.batch_alter_table("sensor_alarms", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=16), server_default="threshold", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("sensor_alarms", schema=None) as batch_op:
        batch_op.drop_column("kind")
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_column("flags")
