"""KPIs, ad spend and the dashboard (real broker for the app, PostgreSQL and SQLite)."""

from __future__ import annotations

from datetime import timedelta

import httpx

from services.scoring.handlers import ScoringHandler
from services.scoring.main import build_app
from shared.events import utcnow
from shared.topics import Topics
from tests.scoring.helpers import VP_SALES, default_rules, interaction
from tests.support import make_settings

AUTH = {"Authorization": "Bearer test-token"}


def _touch(source: str, campaign: str) -> dict[str, str | None]:
    return {"utm_source": source, "utm_medium": "cpc", "utm_campaign": campaign}


async def test_kpis_ad_spend_and_dashboard(kafka_bootstrap: str, db_url: str) -> None:
    settings = make_settings(kafka_bootstrap, db_url)
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        runtime = app.state.runtime
        handler = ScoringHandler(default_rules(), Topics(settings.leadflow_topic_prefix))
        async with runtime.engine.begin() as conn:
            await handler(
                conn,
                [
                    interaction(
                        intent="demo_request",
                        email="a@acme.com",
                        contact=VP_SALES,
                        form_id="demo-request",
                        attribution=_touch("google", "q4"),
                    ),
                    interaction(
                        intent="newsletter",
                        email="b@acme.com",
                        form_id="newsletter",
                        attribution=_touch("google", "q4"),
                    ),
                    interaction(
                        intent="contact",
                        email="c@acme.com",
                        form_id="contact-sales",
                        attribution=_touch("linkedin", "abm"),
                    ),
                ],
            )
        today = utcnow().date().isoformat()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers=AUTH
        ) as client:
            spend = {
                "items": [
                    {"day": today, "source": "google", "campaign": "q4", "amount": 100},
                    {"day": today, "source": "linkedin", "campaign": "abm", "amount": 50},
                    {"day": today, "source": "bing", "campaign": "x", "amount": 10},
                ]
            }
            no_auth = {"Authorization": ""}
            assert (
                await client.post("/v1/ad-spend", json=spend, headers=no_auth)
            ).status_code == 401
            bad = await client.post(
                "/v1/ad-spend", headers=AUTH, json={"day": today, "source": "g", "amount": -1}
            )
            assert bad.status_code == 422 and bad.json()["errors"]
            assert (await client.post("/v1/ad-spend", headers=AUTH, json=spend)).status_code == 200
            again = {"day": today, "source": "google", "campaign": "q4", "amount": 120}
            assert (await client.post("/v1/ad-spend", headers=AUTH, json=again)).status_code == 200

            window = {
                "from": (utcnow() - timedelta(days=1)).isoformat(),
                "to": (utcnow() + timedelta(minutes=1)).isoformat(),
            }
            report = (await client.get("/v1/kpis", params=window)).json()
            by_key = {i["key"]: i for i in report["items"]}
            google = by_key["google"]
            assert (google["leads"], google["sqls"], google["spend"]) == (2, 1, 120.0)
            assert (google["cost_per_lead"], google["cost_per_sql"]) == (60.0, 120.0)
            assert by_key["bing"]["leads"] == 0 and by_key["bing"]["spend"] == 10.0
            assert report["totals"]["leads"] == 3 and report["totals"]["spend"] == 180.0
            forms = (await client.get("/v1/kpis", params={**window, "group_by": "form"})).json()
            assert {i["key"]: i["sqls"] for i in forms["items"]} == {
                "demo-request": 1,
                "newsletter": 0,
                "contact-sales": 0,
            }
            for params in (
                {"from": "yesterday"},
                {"group_by": "weather"},
                {"from": "2026-12-01", "to": "2026-11-01"},
            ):
                problem = await client.get("/v1/kpis", params=params)
                assert problem.status_code == 422, params
                assert problem.headers["content-type"].startswith("application/problem+json")
            page = await client.get("/dashboard")
            assert page.status_code == 200 and "text/html" in page.headers["content-type"]
            assert "a@acme.com" in page.text and "google" in page.text
