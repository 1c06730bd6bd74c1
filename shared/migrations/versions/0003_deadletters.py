"""Dead letters: what a consumer or the relay could not handle, kept for inspection and replay.

Revision ID: shared_0003
Revises: shared_0002
"""

import sqlalchemy as sa
from alembic import op

from shared.db import JSONType, UTCDateTime

revision = "shared_0003"
down_revision = "shared_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deadletters",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("dedupe_key", sa.String(200), nullable=False, unique=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("consumer", sa.String(100), nullable=False),
        sa.Column("topic", sa.String(255), nullable=True),
        sa.Column("kafka_partition", sa.Integer(), nullable=True),
        sa.Column("kafka_offset", sa.BigInteger(), nullable=True),
        sa.Column("event_id", sa.String(200), nullable=True),
        sa.Column("ce_type", sa.String(200), nullable=True),
        sa.Column("record_key", sa.Text(), nullable=True),
        sa.Column("key_encoding", sa.String(10), nullable=True),
        sa.Column("headers", JSONType, nullable=False),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("value_encoding", sa.String(10), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("replayed_at", UTCDateTime(), nullable=True),
        sa.Column("replay_event_id", sa.String(200), nullable=True),
    )
    op.create_index("ix_deadletters_created", "deadletters", ["created_at"])


def downgrade() -> None:
    op.drop_table("deadletters")
