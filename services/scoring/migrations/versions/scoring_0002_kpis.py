"""KPI columns on leads (first touch, form, MQL/SQL times) and the ad spend table.

Revision ID: scoring_0002
Revises: scoring_0001
"""

import sqlalchemy as sa
from alembic import op

from shared.db import UTCDateTime

revision = "scoring_0002"
down_revision = "scoring_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("scoring_leads", sa.Column("first_source", sa.String(200), nullable=True))
    op.add_column("scoring_leads", sa.Column("first_campaign", sa.String(200), nullable=True))
    op.add_column("scoring_leads", sa.Column("first_form_id", sa.String(200), nullable=True))
    op.add_column("scoring_leads", sa.Column("mql_at", UTCDateTime(), nullable=True))
    op.add_column("scoring_leads", sa.Column("qualified_at", UTCDateTime(), nullable=True))
    op.create_table(
        "scoring_ad_spend",
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("source", sa.String(200), primary_key=True),
        sa.Column("campaign", sa.String(200), primary_key=True),
        sa.Column("amount", sa.Numeric(14, 2), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("scoring_ad_spend")
    with op.batch_alter_table("scoring_leads") as batch:
        for name in ("qualified_at", "mql_at", "first_form_id", "first_campaign", "first_source"):
            batch.drop_column(name)
