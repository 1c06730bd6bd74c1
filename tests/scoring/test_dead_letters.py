"""An interaction out of contract is dead-lettered on its own; the events around it are
scored (real broker, PostgreSQL and SQLite)."""

from __future__ import annotations

from dataclasses import replace

from shared.events import CloudEvent
from shared.topics import Topics
from tests.scoring.helpers import VP_SALES, interaction
from tests.scoring.test_service import lead_by_email, produce, running
from tests.support import wait_for_events


async def test_an_event_out_of_contract_is_dead_lettered_alone(
    kafka_bootstrap: str, db_url: str
) -> None:
    async with running(kafka_bootstrap, db_url) as (settings, client):
        topics = Topics(settings.leadflow_topic_prefix)
        before = interaction(intent="demo_request", email="before@acme.com", contact=VP_SALES)
        after = interaction(intent="newsletter", email="after@acme.com")
        good = interaction(intent="contact", email="bad@acme.com")
        # as a producer other than capture might send it: not normalised
        contact = {**good.data["contact"], "email": "Bad@Acme.com", "company_size": "1,000"}
        bad = replace(good, data={**good.data, "contact": contact})
        await produce(kafka_bootstrap, topics.interactions, [before, bad, after])

        await lead_by_email(client, "before@acme.com", stage="SQL")
        await lead_by_email(client, "after@acme.com")
        parked = await wait_for_events(
            kafka_bootstrap, topics.deadletter, lambda evs: any(e.type == bad.type for e in evs)
        )
        assert [_original(e) for e in parked] == [bad.id]
        assert "InvalidEvent" in parked[0].extensions["deadletterreason"]
        assert (await client.get("/v1/leads", params={"email": "bad@acme.com"})).json()[
            "items"
        ] == []


def _original(ev: CloudEvent) -> str:
    return ev.id.removeprefix("deadletter:leadflow-scoring:")
