"""Indexes for the dashboard's KPIs over a year of data.

The cohort queries join leads to their ``sales`` timeline entries (opportunities, wins): a
partial index of those few rows spares a scan of the whole timeline. The MQL and SQL cohorts
select leads by when they became MQL or SQL.

Revision ID: scoring_0004
Revises: scoring_0003
"""

import sqlalchemy as sa
from alembic import op

revision = "scoring_0004"
down_revision = "scoring_0003"
branch_labels = None
depends_on = None

SALES = sa.text("kind = 'sales'")


def upgrade() -> None:
    op.create_index(
        "ix_scoring_timeline_sales",
        "scoring_timeline",
        ["lead_id", "type"],
        postgresql_where=SALES,
        sqlite_where=SALES,
    )
    op.create_index("ix_scoring_leads_mql_at", "scoring_leads", ["mql_at"])
    op.create_index("ix_scoring_leads_qualified_at", "scoring_leads", ["qualified_at"])


def downgrade() -> None:
    op.drop_index("ix_scoring_leads_qualified_at", table_name="scoring_leads")
    op.drop_index("ix_scoring_leads_mql_at", table_name="scoring_leads")
    op.drop_index("ix_scoring_timeline_sales", table_name="scoring_timeline")
