"""Capture tables: idempotency records and pending ad-lead fetches.

Revision ID: capture_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from shared.db import JSONType, UTCDateTime

revision = "capture_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "capture_idempotency",
        sa.Column("event_id", sa.String(200), primary_key=True),
        sa.Column("scope", sa.String(300), nullable=False),
        sa.Column("lead_key", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "capture_ad_fetches",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("platform", sa.String(20), nullable=False),
        sa.Column("lead_id", sa.String(300), nullable=False),
        sa.Column("notification", JSONType, nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("event_id", sa.String(200), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("platform", "lead_id", name="uq_capture_ad_fetches_lead"),
    )
    op.create_index(
        "ix_capture_ad_fetches_due", "capture_ad_fetches", ["status", "next_attempt_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_capture_ad_fetches_due", table_name="capture_ad_fetches")
    op.drop_table("capture_ad_fetches")
    op.drop_table("capture_idempotency")
