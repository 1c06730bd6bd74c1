"""Nurture tracks: enrolments, step timers and the leads the stall scan looks at.

Revision ID: routing_0010
Revises: routing_0004

* ``routing_nurture_enrolments``: a lead's time in a track; at most one active per lead (a
  partial unique index, on PostgreSQL and SQLite alike).
* ``routing_nurture_steps``: one durable timer per step, fired once (pending -> fired).
* ``routing_nurture_leads``: leads a stall rule may concern, by stage and last activity.
"""

import sqlalchemy as sa
from alembic import op

from shared.db import JSONType, UTCDateTime

revision = "routing_0010"
down_revision = "routing_0004"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_ACTIVE = sa.text("state = 'active'")


def upgrade() -> None:
    op.create_table(
        "routing_nurture_enrolments",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("lead_id", sa.String(200), nullable=False),
        sa.Column("lead_key", sa.Text, nullable=True),
        sa.Column("track", sa.String(100), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("reason", JSONType, nullable=False),
        sa.Column("lead", JSONType, nullable=False),
        sa.Column("step_index", sa.Integer, nullable=False, server_default="0"),
        sa.Column("entry_stage", sa.String(10), nullable=False),
        sa.Column("last_stage", sa.String(10), nullable=False),
        sa.Column("enrolled_at", UTCDateTime(), nullable=False),
        sa.Column("exited_at", UTCDateTime(), nullable=True),
        sa.Column("exit_reason", sa.String(40), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_routing_nurture_enrolments_lead", "routing_nurture_enrolments", ["lead_id"])
    op.create_index(
        "uq_routing_nurture_enrolments_active",
        "routing_nurture_enrolments",
        ["lead_id"],
        unique=True,
        postgresql_where=_ACTIVE,
        sqlite_where=_ACTIVE,
    )
    op.create_index(
        "ix_routing_nurture_enrolments_track", "routing_nurture_enrolments", ["track", "state"]
    )
    op.create_table(
        "routing_nurture_steps",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("enrolment_id", sa.String(64), nullable=False),
        sa.Column("lead_id", sa.String(200), nullable=False),
        sa.Column("step_index", sa.Integer, nullable=False),
        sa.Column("step_id", sa.String(100), nullable=False),
        sa.Column("due_at", UTCDateTime(), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("outcome", sa.String(40), nullable=True),
        sa.Column("lease_owner", sa.String(100), nullable=True),
        sa.Column("lease_until", UTCDateTime(), nullable=True),
        sa.Column("fired_at", UTCDateTime(), nullable=True),
        sa.UniqueConstraint(
            "enrolment_id", "step_index", name="uq_routing_nurture_steps_enrolment"
        ),
    )
    op.create_index(
        "ix_routing_nurture_steps_pending", "routing_nurture_steps", ["state", "due_at"]
    )
    op.create_index("ix_routing_nurture_steps_lead", "routing_nurture_steps", ["lead_id"])
    op.create_table(
        "routing_nurture_leads",
        sa.Column("lead_id", sa.String(200), primary_key=True),
        sa.Column("stage", sa.String(10), nullable=False),
        sa.Column("last_activity_at", UTCDateTime(), nullable=False),
        sa.Column("lead", JSONType, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index(
        "ix_routing_nurture_leads_stall", "routing_nurture_leads", ["stage", "last_activity_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_routing_nurture_leads_stall", "routing_nurture_leads")
    op.drop_table("routing_nurture_leads")
    op.drop_index("ix_routing_nurture_steps_lead", "routing_nurture_steps")
    op.drop_index("ix_routing_nurture_steps_pending", "routing_nurture_steps")
    op.drop_table("routing_nurture_steps")
    op.drop_index("ix_routing_nurture_enrolments_track", "routing_nurture_enrolments")
    op.drop_index("uq_routing_nurture_enrolments_active", "routing_nurture_enrolments")
    op.drop_index("ix_routing_nurture_enrolments_lead", "routing_nurture_enrolments")
    op.drop_table("routing_nurture_enrolments")
