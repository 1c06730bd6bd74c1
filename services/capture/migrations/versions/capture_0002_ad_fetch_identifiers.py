"""Ad fetches keep only the normalised email/phone a later erasure request needs.

Revision ID: capture_0002
Revises: capture_0001
"""

import sqlalchemy as sa
from alembic import op

from shared.db import UTCDateTime

revision = "capture_0002"
down_revision = "capture_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("capture_ad_fetches", sa.Column("email", sa.Text, nullable=True))
    op.add_column("capture_ad_fetches", sa.Column("phone", sa.String(40), nullable=True))
    op.add_column(
        "capture_ad_fetches", sa.Column("identifiers_until", UTCDateTime(), nullable=True)
    )


def downgrade() -> None:
    with op.batch_alter_table("capture_ad_fetches") as batch:
        batch.drop_column("identifiers_until")
        batch.drop_column("phone")
        batch.drop_column("email")
