"""Scoring tables: leads, identities, timeline, erased emails.

Revision ID: scoring_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from shared.db import JSONType, UTCDateTime

revision = "scoring_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scoring_leads",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("phone", sa.String(32), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("stage", sa.String(8), nullable=False),
        sa.Column("temperature", sa.String(8), nullable=False),
        sa.Column("score_total", sa.Integer, nullable=False),
        sa.Column("fit", sa.Integer, nullable=False),
        sa.Column("engagement", sa.Integer, nullable=False),
        sa.Column("owner_id", sa.String(200), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_activity_at", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("state", JSONType, nullable=False),
    )
    op.create_index("ix_scoring_leads_created", "scoring_leads", ["created_at", "id"])
    op.create_index("ix_scoring_leads_stage", "scoring_leads", ["stage"])
    op.create_index("ix_scoring_leads_temperature", "scoring_leads", ["temperature"])
    op.create_index("ix_scoring_leads_status", "scoring_leads", ["status"])
    op.create_index("ix_scoring_leads_owner", "scoring_leads", ["owner_id"])
    op.create_table(
        "scoring_identities",
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("value", sa.String(320), primary_key=True),
        sa.Column("lead_id", sa.String(64), nullable=False),
    )
    op.create_index("ix_scoring_identities_lead", "scoring_identities", ["lead_id"])
    op.create_table(
        "scoring_timeline",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("lead_id", sa.String(64), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("type", sa.String(200), nullable=False),
        sa.Column("event_id", sa.String(200), nullable=True),
        sa.Column("data", JSONType, nullable=False),
    )
    op.create_index("ix_scoring_timeline_lead", "scoring_timeline", ["lead_id", "id"])
    op.create_table(
        "scoring_erased_emails",
        sa.Column("email_hash", sa.String(64), primary_key=True),
        sa.Column("erased_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("scoring_erased_emails")
    op.drop_table("scoring_timeline")
    op.drop_table("scoring_identities")
    op.drop_table("scoring_leads")
