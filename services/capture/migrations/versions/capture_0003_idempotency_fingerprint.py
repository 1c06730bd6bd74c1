"""Idempotency records keep a fingerprint of the request, so a key reused for a different
request is refused instead of silently answering the first one.

Revision ID: capture_0003
Revises: capture_0002
"""

import sqlalchemy as sa
from alembic import op

revision = "capture_0003"
down_revision = "capture_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("capture_idempotency", sa.Column("fingerprint", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("capture_idempotency") as batch:
        batch.drop_column("fingerprint")
