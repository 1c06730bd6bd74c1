"""Routing tables: assignments, timers, rep state, unassigned queue, webhook deliveries.

Revision ID: routing_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from shared.db import JSONType, UTCDateTime

revision = "routing_0001"
down_revision = None
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "routing_assignments",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("lead_id", sa.String(200), nullable=False),
        sa.Column("lead_key", sa.Text, nullable=True),
        sa.Column("owner_id", sa.String(100), nullable=False),
        sa.Column("owner", JSONType, nullable=False),
        sa.Column("team", sa.String(100), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("policy", sa.String(50), nullable=False),
        sa.Column("warn_at", UTCDateTime(), nullable=False),
        sa.Column("due_at", UTCDateTime(), nullable=False),
        sa.Column("met_at", UTCDateTime(), nullable=True),
        sa.Column("breached", sa.Boolean, nullable=False),
        sa.Column("response_seconds", sa.Float, nullable=True),
        sa.Column("business_seconds", sa.Float, nullable=True),
        sa.Column("assigned_at", UTCDateTime(), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("lead", JSONType, nullable=False),
        sa.Column("escalation_level", sa.Integer, nullable=False),
        sa.Column("previous_assignment_id", sa.String(64), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    # At most one active (open or breached) assignment per lead, whatever the code does.
    op.create_index(
        "uq_routing_assignments_active_lead",
        "routing_assignments",
        ["lead_id"],
        unique=True,
        postgresql_where=sa.text("state IN ('open', 'breached')"),
        sqlite_where=sa.text("state IN ('open', 'breached')"),
    )
    op.create_index("ix_routing_assignments_lead", "routing_assignments", ["lead_id"])
    op.create_index("ix_routing_assignments_owner", "routing_assignments", ["owner_id", "state"])
    op.create_index("ix_routing_assignments_assigned", "routing_assignments", ["assigned_at"])
    op.create_table(
        "routing_timers",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("assignment_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("due_at", UTCDateTime(), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("lease_owner", sa.String(100), nullable=True),
        sa.Column("lease_until", UTCDateTime(), nullable=True),
        sa.Column("fired_at", UTCDateTime(), nullable=True),
        sa.UniqueConstraint("assignment_id", "kind", name="uq_routing_timers_assignment_kind"),
    )
    op.create_index("ix_routing_timers_pending", "routing_timers", ["state", "due_at"])
    op.create_table(
        "routing_rep_states",
        sa.Column("rep_id", sa.String(100), primary_key=True),
        sa.Column("paused", sa.Boolean, nullable=False),
        sa.Column("out_of_office", JSONType, nullable=False),
        sa.Column("max_open", sa.Integer, nullable=True),
        sa.Column("max_per_day", sa.Integer, nullable=True),
        sa.Column("credit", sa.Float, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "routing_unassigned",
        sa.Column("lead_id", sa.String(200), primary_key=True),
        sa.Column("lead_key", sa.Text, nullable=True),
        sa.Column("lead", JSONType, nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("queue", sa.String(100), nullable=False),
        sa.Column("escalation_level", sa.Integer, nullable=False),
        sa.Column("exclude", JSONType, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "routing_webhook_deliveries",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("webhook", sa.String(100), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("event_type", sa.String(200), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("last_status", sa.Integer, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("delivered_at", UTCDateTime(), nullable=True),
        sa.UniqueConstraint("webhook", "event_id", name="uq_routing_deliveries_webhook_event"),
    )
    op.create_index(
        "ix_routing_deliveries_due", "routing_webhook_deliveries", ["state", "next_attempt_at"]
    )


def downgrade() -> None:
    op.drop_table("routing_webhook_deliveries")
    op.drop_table("routing_unassigned")
    op.drop_table("routing_rep_states")
    op.drop_table("routing_timers")
    op.drop_table("routing_assignments")
