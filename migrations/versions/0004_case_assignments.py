"""Case assignments: each department's part in a case (the department rankings' input), backfilled from history;
the rating on the timeline's evaluate events

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    t = sa.DateTime(timezone=True)
    with op.batch_alter_table("case_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rating", sa.Integer(), nullable=True))
    op.create_table(
        "case_assignments",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("case_id", BigId, sa.ForeignKey("cases.id", ondelete="CASCADE", name="fk_case_assignments_case_id_cases"),
                  nullable=False),
        sa.Column("department", sa.String(32), nullable=False),
        sa.Column("role", sa.String(8), nullable=False),
        sa.Column("grid_code", sa.String(15)),
        sa.Column("assigned_at", t, nullable=False),
        sa.Column("due_at", t),
        sa.Column("accepted_at", t),
        sa.Column("accepted_on_time", sa.Boolean()),
        sa.Column("resolved_at", t),
        sa.Column("resolved_on_time", sa.Boolean()),
        sa.Column("returned_at", t),
        sa.Column("reopened_at", t),
        sa.Column("ended_at", t),
        sa.Column("finished_at", t),
        sa.Column("checked_in_at", t),
        sa.Column("rating", sa.Integer()),
        sa.Column("evaluated_at", t),
        sa.Column("handling_s", sa.Float()),
        sa.PrimaryKeyConstraint("id", name="pk_case_assignments"),
    )
    # covering indexes (store/schema.py): a ranking statement reads one short range per department
    op.create_index("ix_case_assignments_case", "case_assignments", ["case_id"])
    op.create_index("ix_case_assignments_assigned", "case_assignments",
                    ["role", "department", "assigned_at", "grid_code", "accepted_at", "accepted_on_time", "due_at",
                     "ended_at", "returned_at", "checked_in_at"])
    op.create_index("ix_case_assignments_resolved", "case_assignments",
                    ["role", "department", "resolved_at", "grid_code", "resolved_on_time", "reopened_at", "handling_s"])
    op.create_index("ix_case_assignments_evaluated", "case_assignments",
                    ["role", "department", "evaluated_at", "grid_code", "rating"])
    op.create_index("ix_case_assignments_open", "case_assignments",
                    ["role", "department", "finished_at", "assigned_at", "grid_code", "case_id"])
    _backfill()


def _backfill() -> None:
    """Project the rows of every case already stored (core/assignments.py), a thousand cases at a time."""
    from datetime import timedelta

    from config.settings import get_settings
    from core import assignments
    from store.schema import Case, CaseAssignment, CaseEvent

    conn = op.get_bind()
    limit = timedelta(minutes=get_settings().whistle_report_minutes)
    # the table as this revision made it (the model has grown columns since: they do not exist yet here)
    model = CaseAssignment.__table__.c
    table = sa.table("case_assignments", *(sa.column(c, model[c].type) for c in assignments.COLUMNS))
    last = 0
    while True:
        cases = conn.execute(
            sa.select(Case.id, Case.accept_due_at, Case.due_at, Case.grid_code, Case.rating)
            .where(Case.id > last).order_by(Case.id).limit(1000)
        ).all()
        if not cases:
            return
        last = cases[-1].id
        events: dict[int, list[dict]] = {}
        for e in conn.execute(
            sa.select(CaseEvent.case_id, CaseEvent.action, CaseEvent.occurred_at, CaseEvent.departments,
                      CaseEvent.rating)
            .where(CaseEvent.case_id.between(cases[0].id, last), CaseEvent.action.in_(sorted(assignments.ACTIONS)))
            .order_by(CaseEvent.case_id, CaseEvent.id)
        ):
            events.setdefault(e.case_id, []).append(dict(e._mapping))
        out = []
        for c in cases:
            evaluations = [e for e in events.get(c.id, []) if e["action"] == "evaluate"]
            if evaluations and evaluations[-1]["rating"] is None:
                evaluations[-1]["rating"] = c.rating  # stored before events kept their rating: the case's own
            rows = assignments.project(events.get(c.id, []), case_id=c.id, accept_due=c.accept_due_at, due=c.due_at,
                                       grid=c.grid_code, whistle_limit=limit)
            out += [{k: r[k] for k in assignments.COLUMNS} for r in rows]
        if out:
            conn.execute(table.insert(), out)


def downgrade() -> None:
    op.drop_table("case_assignments")
    with op.batch_alter_table("case_events", schema=None) as batch_op:
        batch_op.drop_column("rating")
