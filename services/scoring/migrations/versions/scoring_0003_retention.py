"""Timeline index for retention; ad-platform lead ids indexed as identities of existing leads.

Scoring now remembers ``<platform>:<lead id>`` of every ad lead as an identity, so an erasure
request naming only the platform's lead finds the person (review M4). Leads that came from ad
platforms before this revision get that identity from their stored ``ad_lead_received``
interactions (erased leads have none left to find).

Revision ID: scoring_0003
Revises: scoring_0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql, sqlite

from shared.db import JSONType

revision = "scoring_0003"
down_revision = "scoring_0002"
branch_labels = None
depends_on = None

AD_LEAD_RECEIVED = "io.leadflow.interaction.ad_lead_received"
MAX_ID_LENGTH = 320  # services/scoring/domain/identity.py, as of this revision

_timeline = sa.table(
    "scoring_timeline",
    sa.column("id", sa.BigInteger()),
    sa.column("lead_id", sa.String()),
    sa.column("kind", sa.String()),
    sa.column("type", sa.String()),
    sa.column("data", JSONType),
)
_leads = sa.table("scoring_leads", sa.column("id", sa.String()), sa.column("key", sa.Text()))
_identities = sa.table(
    "scoring_identities",
    sa.column("kind", sa.String()),
    sa.column("value", sa.String()),
    sa.column("lead_id", sa.String()),
)


def _plain(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    return text if 0 < len(text) <= MAX_ID_LENGTH else None


def _ad_lead(data: object) -> str | None:
    ad = data.get("ad") if isinstance(data, dict) else None
    if not isinstance(ad, dict):
        return None
    platform, lead_id = _plain(ad.get("platform")), _plain(ad.get("lead_id"))
    if not (platform and lead_id):
        return None
    value = f"{platform.lower()}:{lead_id}"
    return value if len(value) <= MAX_ID_LENGTH else None


def upgrade() -> None:
    op.create_index("ix_scoring_timeline_at", "scoring_timeline", ["at"])
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(_timeline.c.lead_id, _timeline.c.data)
        .join(_leads, _leads.c.id == _timeline.c.lead_id)
        .where(
            _timeline.c.kind == "interaction",
            _timeline.c.type == AD_LEAD_RECEIVED,
            _leads.c.key != _leads.c.id,  # not erased
        )
        .order_by(_timeline.c.id)
    )
    found: dict[str, str] = {}
    for lead_id, data in rows:
        value = _ad_lead(data)
        if value is not None:
            found.setdefault(value, lead_id)  # the first lead the platform's lead reached
    if not found:
        return
    insert = sqlite.insert if bind.dialect.name == "sqlite" else postgresql.insert
    bind.execute(
        insert(_identities).on_conflict_do_nothing(index_elements=["kind", "value"]),
        [{"kind": "ad", "value": v, "lead_id": lead_id} for v, lead_id in found.items()],
    )


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM scoring_identities WHERE kind = 'ad'"))
    op.drop_index("ix_scoring_timeline_at", table_name="scoring_timeline")
