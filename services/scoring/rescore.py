"""``leadflow rescore``: recompute every lead from its stored interactions with the current rules.

Hits are rebuilt from scratch and keyed by (event id, rule), so replaying cannot count an
interaction twice. The events it writes go to the outbox and are published by the running
scoring service's relay.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.scoring import queries
from services.scoring.config import rules_for
from services.scoring.domain import lifecycle
from services.scoring.domain.ruleset import Rules
from services.scoring.events import lead_events
from services.scoring.repository import LeadRepository
from shared.db import create_engine
from shared.events import derived_event_id, rfc3339, utcnow
from shared.settings import Settings
from shared.topics import Topics

RESCORE_TYPE = "io.leadflow.scoring.rescore"


async def rescore_all(
    settings: Settings,
    config: dict[str, Any] | None = None,
    *,
    page_size: int = 200,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Rescore every lead; return how many leads changed. ``progress(seen, changed)`` is called
    after each committed page."""
    rules = rules_for(settings, config)
    topics = Topics(settings.leadflow_topic_prefix)
    engine = create_engine(settings.db_url)
    changed = 0
    seen = 0
    after = ""
    try:
        while True:
            now = utcnow()
            async with engine.begin() as conn:
                ids = await queries.all_lead_ids(conn, after, page_size)
                if not ids:
                    break
                repo = LeadRepository(conn, topics.leads)
                leads = await repo.load(ids)
                interactions = await queries.interactions_of(conn, ids)
                events = []
                for lead_id in ids:
                    lead = leads.get(lead_id)
                    if lead is None:
                        continue
                    changes = rescore_lead(lead, interactions[lead_id], rules, now)
                    if changes:
                        changed += 1
                        cause = derived_event_id(lead.id, "rescore", rfc3339(now))
                        events += lead_events(lead, changes, cause, RESCORE_TYPE, now)
                    repo.touch(lead)
                await repo.commit(now, events)
                after = ids[-1]
            seen += len(ids)
            if progress is not None:
                progress(seen, changed)
    finally:
        await engine.dispose()
    return changed


def rescore_lead(lead: Any, rows: list[Any], rules: Rules, now: Any) -> list[lifecycle.Change]:
    """Rebuild one lead's hits from its interactions and refresh its score."""
    lead.hits = []
    lead.sales_intent = False
    lead.last_engaged_at = None
    for row in rows:
        if lifecycle.add_hits(lead, row.event_id or str(row.id), row.type, row.data, row.at, rules):
            lead.last_engaged_at = max(lead.last_engaged_at or row.at, row.at)
    return lifecycle.refresh(lead, rules, now)
