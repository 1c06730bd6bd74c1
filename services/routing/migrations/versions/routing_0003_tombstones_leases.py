"""Lead tombstones (erased and merged-away leads), webhook leases and delivery lead ids.

Revision ID: routing_0003
Revises: routing_0002

* ``routing_lead_tombstones``: a lead id routing saw erased or merged away, so a late
  ``lead.qualified`` (keyed differently, so possibly consumed after) is refused or follows the
  survivor, and an erasure also reaches what was kept under merged-away ids.
* ``routing_webhook_deliveries.lease_token``: the claim a worker holds; results are written only
  under it, so a worker whose lease ran out cannot overwrite another's outcome.
* ``routing_webhook_deliveries.lead_id``: whose delivery it is, so an erasure finds the bodies
  (backfilled from the body's CloudEvent ``subject``).
"""

import json

import sqlalchemy as sa
from alembic import op

from shared.db import UTCDateTime

revision = "routing_0003"
down_revision = "routing_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "routing_lead_tombstones",
        sa.Column("lead_id", sa.String(200), primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("into_id", sa.String(200), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_routing_lead_tombstones_into", "routing_lead_tombstones", ["into_id"])
    with op.batch_alter_table("routing_webhook_deliveries") as batch:
        batch.add_column(sa.Column("lead_id", sa.String(200), nullable=True))
        batch.add_column(sa.Column("lease_token", sa.String(64), nullable=True))
    op.create_index("ix_routing_deliveries_lead", "routing_webhook_deliveries", ["lead_id"])
    op.create_index(
        "ix_routing_deliveries_finished", "routing_webhook_deliveries", ["state", "created_at"]
    )
    deliveries = sa.table(
        "routing_webhook_deliveries",
        sa.column("id", sa.BigInteger),
        sa.column("body", sa.Text),
        sa.column("lead_id", sa.String),
    )
    conn = op.get_bind()
    last = 0
    while True:  # in pages by id: the table was never pruned before and may be large
        page = conn.execute(
            sa.select(deliveries.c.id, deliveries.c.body)
            .where(deliveries.c.id > last)
            .order_by(deliveries.c.id)
            .limit(1000)
        ).all()
        if not page:
            break
        last = page[-1].id
        for row in page:
            try:
                subject = json.loads(row.body).get("subject")
            except (ValueError, AttributeError):
                continue
            if isinstance(subject, str):
                conn.execute(
                    sa.update(deliveries).where(deliveries.c.id == row.id).values(lead_id=subject)
                )


def downgrade() -> None:
    op.drop_index("ix_routing_deliveries_finished", "routing_webhook_deliveries")
    op.drop_index("ix_routing_deliveries_lead", "routing_webhook_deliveries")
    with op.batch_alter_table("routing_webhook_deliveries") as batch:
        batch.drop_column("lease_token")
        batch.drop_column("lead_id")
    op.drop_index("ix_routing_lead_tombstones_into", "routing_lead_tombstones")
    op.drop_table("routing_lead_tombstones")
