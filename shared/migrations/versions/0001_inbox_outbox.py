"""Inbox (processed events) and transactional outbox.

Revision ID: shared_0001
Revises:
"""

from alembic import op

from shared.messaging_tables import outbox, processed_events

revision = "shared_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    processed_events.create(bind)
    outbox.create(bind)


def downgrade() -> None:
    bind = op.get_bind()
    outbox.drop(bind)
    processed_events.drop(bind)
