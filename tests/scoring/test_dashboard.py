"""The dashboard: routing's speed-to-lead report (pure), and the page over a scripted scenario."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from services.routing.api_reports import outcome, percentile, speed_report
from services.scoring import dashboard
from tests.scoring.dashboard_scenario import EMEA, NA, assignment, dashboard_apps, routing_rows
from tests.scoring.helpers import T0
from tests.scoring.test_kpis import _expected
from tests.support import AUTH

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.mark.pure
def test_speed_report_outcomes_histogram_and_days() -> None:
    rows = routing_rows(T0, NOW)
    assert [outcome(r, NOW) for r in rows] == [
        "met",
        "met",
        "warned",
        "breached",
        "escalated",
        "open",
        "open",
    ]
    late = assignment(9, EMEA, NOW - timedelta(minutes=55))  # open past its warning (48 min)
    assert outcome(late, NOW) == "warned"
    report = speed_report(rows[:5], T0, T0 + timedelta(days=3), NOW)
    overall = report["overall"]
    assert (overall["met"], overall["warned"], overall["breached"], overall["escalated"]) == (
        2,
        1,
        1,
        1,
    )
    assert overall["attainment"] == 0.6  # 3 touched in time of 5 decided
    assert overall["median_seconds"] == 1800.0  # of 120, 600, 3000, 7200
    assert overall["p90_seconds"] == percentile([120, 600, 3000, 7200], 0.9) == 5940.0
    assert [b["count"] for b in report["histogram"]] == [1, 1, 0, 1, 1, 0, 0]
    assert [
        (d["day"], d["met"], d["warned"], d["breached"], d["escalated"]) for d in report["daily"]
    ] == [
        ("2026-11-02", 2, 1, 0, 0),
        ("2026-11-03", 0, 0, 1, 1),
        ("2026-11-04", 0, 0, 0, 0),
        ("2026-11-05", 0, 0, 0, 0),  # the window ends at 09:00 that day
    ]
    teams = {t["key"]: (t["assignments"], t["attainment"]) for t in report["by_team"]}
    assert teams == {"emea": (3, 1.0), "na": (2, 0.0)}
    assert [(r["key"], r["name"]) for r in report["by_rep"]] == [
        (EMEA["id"], EMEA["name"]),
        (NA["id"], NA["name"]),
    ]


@pytest.mark.pure
def test_formatting_and_charts() -> None:
    assert dashboard.duration(1800) == "30 min" and dashboard.duration(5940) == "1.6 h"
    assert dashboard.pct(0.6) == "60.0%" and dashboard.money(12.5, "USD") == "12.50 USD"
    svg = dashboard.funnel_svg([("Leads", 10), ("MQL", 4), ("SQL", 0)])
    assert ">Leads</text>" in svg and 'class="count">10<' in svg
    assert "↓ 40.0%" in svg and "↓ 0.0%" in svg
    assert "No data" in dashboard.hbar_svg([])
    assert "<script" not in dashboard.hbar_svg([("<script>", 1.0, "1")])


def _tile(page: str, kpi: str) -> str:
    match = re.search(rf'data-kpi="{kpi}"><span>[^<]*</span><b class="value">([^<]*)</b>', page)
    assert match, kpi
    return match.group(1)


async def test_dashboard_shows_the_scenario(
    sqlite_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = _expected(lambda p: p.source)
    leads = sum(e.get("leads", 0) for e in expected.values())
    opportunities = sum(e.get("opportunities", 0) for e in expected.values())
    async with dashboard_apps(sqlite_db_url) as (app, _):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers=AUTH
        ) as http:
            window = {"from": "2026-11-02", "to": "2026-11-08"}
            resp = await http.get("/dashboard", params={**window, "group": "campaign"})
            assert resp.status_code == 200
            assert "nonce-" in resp.headers["content-security-policy"]
            page = resp.text
            assert _tile(page, "leads") == str(leads)
            assert _tile(page, "opportunities") == str(opportunities)
            assert _tile(page, "opportunity_rate") == f"{opportunities / leads * 100:.1f}%"
            assert _tile(page, "median_first_touch") == "30 min"
            assert _tile(page, "sla_attainment") == "60.0%"
            google = expected["google"]
            # SPEND: google 300 EUR + 80 USD, linkedin 400 EUR; currencies never added up
            assert _tile(page, "cost_per_lead") == f"{700 / leads:.2f} EUR; {80 / leads:.2f} USD"
            assert "google (EUR)</text>" in page  # the cost-per-lead-by-source chart
            assert f">{300 / google['leads']:.2f} EUR</text>" in page
            assert "Hana Hot" in page and "lead-7" not in page  # only hot leads wait here
            assert 'data-group="abm"' in page and "Cohorts by campaign" in page
            assert "<svg" in page and "Leads by stage" in page
            # nurture tracks from routing, with their KPIs (none enrolled in this scenario)
            assert 'id="nurture"' in page
            assert "<td>warm-leads</td>" in page and "<td>stalled-mql</td>" in page
            bad = await http.get("/dashboard", params={"from": "soon"})
            assert bad.status_code == 422
            # routing down: the rest of the page is still there
            app.state.routing_transport = None
            monkeypatch.setenv("LEADFLOW_ROUTING_URL", "http://127.0.0.1:9")
            down = await http.get("/dashboard", params=window)
            assert down.status_code == 200 and 'id="routing-down"' in down.text
            assert _tile(down.text, "leads") == str(leads)
