"""Inbox (processed events) and transactional outbox.

Revision ID: shared_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from shared.db import JSONType, UTCDateTime

revision = "shared_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "processed_events",
        sa.Column("consumer", sa.String(100), primary_key=True),
        sa.Column("event_id", sa.String(200), primary_key=True),
        sa.Column("processed_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("event_id", sa.String(200), nullable=False, unique=True),
        sa.Column("ce_type", sa.String(200), nullable=False),
        sa.Column("ce_source", sa.String(200), nullable=False),
        sa.Column("ce_subject", sa.String(200), nullable=True),
        sa.Column("ce_time", UTCDateTime(), nullable=False),
        sa.Column("partition_key", sa.Text(), nullable=True),
        sa.Column("extensions", JSONType, nullable=False),
        sa.Column("data", JSONType, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_outbox_pending", "outbox", ["source", "sent_at", "id"])


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_table("processed_events")
