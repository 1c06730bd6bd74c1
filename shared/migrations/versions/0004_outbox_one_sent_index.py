"""Drop ``ix_outbox_sent``: ``ix_outbox_pending`` (source, sent_at, id) serves its queries.

Every outbox insert paid for both indexes, and so did every row marked sent (``sent_at`` is
indexed, so the update is never in place): one index less is one entry less on each.

Revision ID: shared_0004
Revises: shared_0003
"""

from alembic import op

revision = "shared_0004"
down_revision = "shared_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_outbox_sent", "outbox")


def downgrade() -> None:
    op.create_index("ix_outbox_sent", "outbox", ["source", "sent_at"])
