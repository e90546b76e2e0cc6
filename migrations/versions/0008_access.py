"""Access control: users (a role within a jurisdiction, argon2 password hashes, lockout), the wall's kiosk links
(only the token's hash) and the audit log

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22 12:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    t = sa.DateTime(timezone=True)
    op.create_table(
        "users",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("area_code", sa.String(15), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        sa.Column("locked_until", t),
        sa.Column("created_at", t, nullable=False),
        sa.Column("updated_at", t, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("username", name="uq_users_username"),
    )
    op.create_table(
        "screen_links",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("area_code", sa.String(15), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.Column("created_at", t, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_screen_links"),
        sa.UniqueConstraint("token_sha256", name="uq_screen_links_token_sha256"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("at", t, nullable=False),
        sa.Column("username", sa.String(64)),
        sa.Column("role", sa.String(16)),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target", sa.String(255)),
        sa.Column("detail", sa.JSON()),
        sa.Column("address", sa.String(64)),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_username_at", "audit_log", ["username", "at"])


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_table("screen_links")
    op.drop_table("users")
