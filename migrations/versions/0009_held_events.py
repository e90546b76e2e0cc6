"""Held events: case events that arrived before their case or their predecessors, kept until they apply in order

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 12:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    t = sa.DateTime(timezone=True)
    op.create_table(
        "held_events",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("external_id", sa.String(128), nullable=False),
        sa.Column("event_key", sa.String(160), nullable=False),
        sa.Column("stream", sa.String(128), nullable=False),
        sa.Column("entry_id", sa.String(48), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("record", sa.Text(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("feed", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("held_at", t, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_held_events"),
        sa.UniqueConstraint("source", "external_id", "event_key", name="uq_held_events_case_key"),
    )
    op.create_index("ix_held_events_held_at", "held_events", ["held_at"])


def downgrade() -> None:
    op.drop_index("ix_held_events_held_at", table_name="held_events")
    op.drop_table("held_events")
