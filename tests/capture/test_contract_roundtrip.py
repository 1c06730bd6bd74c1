"""What capture publishes keeps the event contract: a consumer reading it with
``shared.contract.Interaction.from_data`` gets every published value back (round trip)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from shared.contract import Interaction
from shared.events import InteractionType
from shared.settings import DEV_WRITE_KEY
from tests.capture.conftest import start
from tests.support import wait_for_events

GOOGLE_KEY = "roundtrip-key"


def assert_round_trip(data: dict[str, Any]) -> Interaction:
    """``from_data`` accepts the data and ``to_data`` gives back exactly what was published."""
    ix = Interaction.from_data(data)
    assert ix.to_data() == data
    return ix


async def test_form_tracking_and_ad_lead_events_pass_the_contract(
    kafka_bootstrap: str, sqlite_db_url: str
) -> None:
    async with start(kafka_bootstrap, sqlite_db_url, google_ads_webhook_key=GOOGLE_KEY) as app:
        c = app.client
        posts = [
            await c.post(
                "/v1/forms/test-form/submissions",
                json={
                    "email": " Jane@Example.COM ",
                    "phone": "0151 12345678",
                    "company_size": "1,000",
                    "country": "Germany",
                    "consent_marketing": "on",
                    "utm_source": "google",
                    "message": "Call me",
                    "favourite_colour": "blue",
                },
            ),
            await c.post("/v1/forms/newsletter/submissions", json={"email": "b@example.com"}),
            await c.post(
                "/v1/track",
                auth=httpx.BasicAuth(DEV_WRITE_KEY, ""),
                json={
                    "anonymousId": "anon-1",
                    "event": "Pricing Viewed",
                    "properties": {"plan": "pro"},
                    "timestamp": "2026-11-26T10:00:00+01:00",
                    "context": {"traits": {"email": "T@Example.com"}},
                },
            ),
            await c.post(
                "/v1/webhooks/google-ads",
                content=json.dumps(
                    {
                        "lead_id": "rt-1",
                        "google_key": GOOGLE_KEY,
                        "campaign_id": 20000000000,
                        "lead_submit_time": "2024-09-26T12:30:00Z",
                        "user_column_data": [
                            {"column_id": "EMAIL", "string_value": "Ad@Example.com"},
                            {"column_id": "PHONE_NUMBER", "string_value": "not a phone"},
                        ],
                    }
                ).encode(),
            ),
        ]
        assert [p.status_code for p in posts] == [202, 202, 200, 200], [p.text for p in posts]
        events = await wait_for_events(app.bootstrap, app.topic, lambda evs: len(evs) >= 4)
    by_type = {ev.type: ev for ev in events}
    assert len(by_type) == 3
    forms = [ev for ev in events if ev.type == InteractionType.FORM_SUBMITTED]
    typed = [assert_round_trip(dict(ev.data)) for ev in events]
    assert {ix.channel for ix in typed} == {"form", "tracking", "ad"}
    [demo] = [Interaction.from_data(ev.data) for ev in forms if ev.data["form_id"] == "test-form"]
    assert demo.contact is not None and demo.contact.company_size == 1000
    assert demo.message == "Call me" and demo.contact.country == "DE"
    tracked = Interaction.from_data(by_type[InteractionType.TRACKED].data)
    assert tracked.occurred_at.isoformat() == "2026-11-26T09:00:00+00:00"
    assert tracked.contact is not None and tracked.contact.email == "t@example.com"
    ad = Interaction.from_data(by_type[InteractionType.AD_LEAD_RECEIVED].data)
    assert ad.lead_key == "ad@example.com" and ad.part("custom") == {"phone_raw": "not a phone"}
