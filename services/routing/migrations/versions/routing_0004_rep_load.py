"""Per-rep load counters, so routing a lead no longer scans every assignment.

Revision ID: routing_0004
Revises: routing_0003

* ``routing_rep_states.open_count``: the rep's open and breached assignments, as of the last
  fold of ``routing_rep_load_deltas`` (backfilled here).
* ``routing_rep_states.today_count`` / ``today_start``: assignments made since ``today_start``,
  the start of the rep's local day when it last got one (NULL: not known yet, counted once).
* ``routing_rep_load_deltas``: +1/-1 of an assignment entering or leaving the active states,
  appended without locking the rep's row (a first touch or close must not queue behind the
  routing lock); the routing choice folds them into ``open_count`` under its lock.
* ``ix_routing_timers_lease``: the next lease to run out, without reading every pending timer.
"""

import sqlalchemy as sa
from alembic import op

from shared.db import UTCDateTime

revision = "routing_0004"
down_revision = "routing_0003"
branch_labels = None
depends_on = None

_ACTIVE = "('open', 'breached')"


def upgrade() -> None:
    with op.batch_alter_table("routing_rep_states") as batch:
        batch.add_column(sa.Column("open_count", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("today_count", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("today_start", UTCDateTime(), nullable=True))
    op.create_table(
        "routing_rep_load_deltas",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("rep_id", sa.String(100), nullable=False),
        sa.Column("delta", sa.Integer, nullable=False),
    )
    op.create_index("ix_routing_rep_load_deltas_rep", "routing_rep_load_deltas", ["rep_id"])
    op.create_index("ix_routing_timers_lease", "routing_timers", ["state", "lease_until"])
    # Backfill: reps with a state row get their count; the others' as deltas, folded later.
    op.execute(
        "UPDATE routing_rep_states SET open_count = (SELECT count(*) FROM routing_assignments a"
        f" WHERE a.owner_id = routing_rep_states.rep_id AND a.state IN {_ACTIVE})"
    )
    op.execute(
        "INSERT INTO routing_rep_load_deltas (rep_id, delta) SELECT owner_id, count(*)"
        f" FROM routing_assignments WHERE state IN {_ACTIVE} AND owner_id NOT IN"
        " (SELECT rep_id FROM routing_rep_states) GROUP BY owner_id"
    )


def downgrade() -> None:
    op.drop_index("ix_routing_timers_lease", "routing_timers")
    op.drop_index("ix_routing_rep_load_deltas_rep", "routing_rep_load_deltas")
    op.drop_table("routing_rep_load_deltas")
    with op.batch_alter_table("routing_rep_states") as batch:
        batch.drop_column("today_start")
        batch.drop_column("today_count")
        batch.drop_column("open_count")
