"""Run-time overrides of a rep's weight and working hours (``PATCH /v1/reps/{id}``).

Revision ID: routing_0002
Revises: routing_0001
"""

import sqlalchemy as sa
from alembic import op

from shared.db import JSONType

revision = "routing_0002"
down_revision = "routing_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("routing_rep_states", sa.Column("weight", sa.Integer, nullable=True))
    op.add_column("routing_rep_states", sa.Column("working_hours", JSONType, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("routing_rep_states") as batch:
        batch.drop_column("working_hours")
        batch.drop_column("weight")
