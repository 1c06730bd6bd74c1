"""scoring_0003 over existing data: ad leads stored before it get their platform identity."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import select
from sqlalchemy.engine import Connection

from services.scoring import commands
from services.scoring.handlers import ScoringHandler
from services.scoring.tables import identities, leads
from shared.contract import Contact
from shared.db import create_engine
from shared.events import CloudEvent, InteractionType
from shared.topics import Topics
from tests.scoring.helpers import T0, ad_lead, default_rules


def _alembic(conn: Connection, action: str, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", "services.scoring:migrations")
    cfg.attributes["connection"] = conn
    cfg.attributes["version_table"] = "alembic_version_scoring"
    getattr(command, action)(cfg, revision)


def _ad_lead(lead_id: str, email: str) -> CloudEvent:
    got = ad_lead("linkedin", lead_id, Contact(email=email))
    return CloudEvent(
        type=InteractionType.AD_LEAD_RECEIVED,
        source="/leadflow/capture",
        data=got.to_data(),
        key=got.lead_key,
    )


async def _ad_identities(engine: object) -> dict[str, str]:
    async with engine.connect() as conn:  # type: ignore[attr-defined]
        rows = await conn.execute(
            select(identities.c.value, leads.c.key)
            .join(leads, leads.c.id == identities.c.lead_id)
            .where(identities.c.kind == "ad")
        )
        return {r.value: r.key for r in rows}


async def test_0003_indexes_earlier_ad_leads_and_downgrades(db_url: str) -> None:
    engine = create_engine(db_url)
    topics = Topics("mig.")
    try:
        async with engine.begin() as conn:
            await ScoringHandler(default_rules(), topics)(
                conn, [_ad_lead("LI-1", "pat@corp.example"), _ad_lead("LI-2", "gone@corp.example")]
            )
        async with engine.connect() as conn:
            gone = (
                await conn.execute(select(leads.c.id).where(leads.c.email == "gone@corp.example"))
            ).scalar_one()
        async with engine.begin() as conn:
            await commands.erase_lead(conn, topics, gone, T0)
        assert await _ad_identities(engine) == {"linkedin:LI-1": "pat@corp.example"}

        async with engine.begin() as conn:  # as before this revision: no ad identities
            await conn.run_sync(_alembic, "downgrade", "scoring_0002")
        assert await _ad_identities(engine) == {}
        async with engine.begin() as conn:
            await conn.run_sync(_alembic, "upgrade", "head")
        # the live lead is found by its platform id again; the erased one is not
        assert await _ad_identities(engine) == {"linkedin:LI-1": "pat@corp.example"}
    finally:
        await engine.dispose()
