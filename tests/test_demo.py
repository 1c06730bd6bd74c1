"""``leadflow demo`` against the three services (in-process, real broker and PostgreSQL): the
public endpoints accept all of its traffic and the funnel fills up."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx

from services.capture.main import build_app as build_capture
from services.demo import DEV_AD_ENV, Demo, Secrets, Urls, people, summary
from services.routing.main import build_app as build_routing
from services.scoring.main import build_app as build_scoring
from shared.broker import free_port
from shared.events import utcnow
from tests.browser import serve
from tests.support import AUTH, TEST_TOKEN, make_settings, wait_for


def test_people_are_reproducible_and_varied() -> None:
    crowd = people(300, seed=3)
    assert [p.email for p in crowd] == [p.email for p in people(300, seed=3)]
    journeys = {p.journey for p in crowd}
    assert {"visitor", "newsletter", "demo", "ad-meta", "ad-google", "ad-linkedin"} <= journeys


@asynccontextmanager
async def services(kafka_bootstrap: str, db_url: str, platform_port: int) -> AsyncIterator[Urls]:
    ad = {k.lower(): v for k, v in DEV_AD_ENV.items()}
    ad["meta_graph_url"] = f"http://127.0.0.1:{platform_port}/meta"
    ad["linkedin_api_url"] = f"http://127.0.0.1:{platform_port}/linkedin"
    settings = make_settings(kafka_bootstrap, db_url, **ad)
    ports = {name: free_port() for name in ("capture", "scoring", "routing")}
    builders: dict[str, Any] = {
        "capture": build_capture,
        "scoring": build_scoring,
        "routing": build_routing,
    }
    async with AsyncExitStack() as stack:
        for name, build in builders.items():
            await stack.enter_async_context(serve(build(settings), ports[name], lifespan="on"))
        yield Urls(*(f"http://127.0.0.1:{ports[n]}" for n in ("capture", "scoring", "routing")))


async def test_demo_fills_the_dashboard(kafka_bootstrap: str, pg_db_url: str) -> None:
    platform_port = free_port()
    async with services(kafka_bootstrap, pg_db_url, platform_port) as urls:
        out = io.StringIO()
        demo = Demo(
            urls,
            size=40,
            secrets=Secrets(token=TEST_TOKEN),
            platform_port=platform_port,
            out=out,
            touch_wait=15.0,
        )
        outcome = await demo.run()
        assert outcome.refused == [], outcome.refused
        assert outcome.ad_leads_missing == 0  # Meta and LinkedIn leads fetched and scored
        assert outcome.leads > 5 and outcome.page_views > 40 and outcome.ad_leads >= 1
        assert "100%" in out.getvalue()  # the progress bar got to the end
        window = {
            "from": (utcnow() - timedelta(hours=1)).isoformat(),
            "to": (utcnow() + timedelta(hours=1)).isoformat(),
        }
        async with httpx.AsyncClient(base_url=urls.scoring, headers=AUTH) as http:

            async def funnel() -> dict[str, Any] | None:
                report = (await http.get("/v1/kpis", params=window)).json()
                totals: dict[str, Any] = report["totals"]
                return totals if totals["leads"] >= outcome.leads - outcome.ad_leads else None

            totals = await wait_for(funnel, timeout=30, what="the demo's leads scored")
            assert totals["sqls"] >= 1 and totals["visitors"] >= 1
            assert {c["currency"] for c in totals["costs"]} == {"EUR", "USD"}
            page = await http.get("/dashboard")
            assert page.status_code == 200 and "<svg" in page.text
    assert "dashboard" in summary(outcome, urls.scoring)
