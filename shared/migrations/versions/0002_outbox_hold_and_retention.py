"""Outbox rows can be held back until a time; indexes for retention clean-up.

Revision ID: shared_0002
Revises: shared_0001
"""

import sqlalchemy as sa
from alembic import op

from shared.db import UTCDateTime

revision = "shared_0002"
down_revision = "shared_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("available_at", UTCDateTime(), nullable=True))
    op.create_index("ix_outbox_sent", "outbox", ["source", "sent_at"])
    op.create_index("ix_processed_events_age", "processed_events", ["consumer", "processed_at"])


def downgrade() -> None:
    op.drop_index("ix_processed_events_age", "processed_events")
    op.drop_index("ix_outbox_sent", "outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("available_at")
