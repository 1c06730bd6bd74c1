"""Reports: funnel KPIs, ad spend intake (bearer), the dashboard page and its login."""

from __future__ import annotations

import asyncio
import html
import secrets
from datetime import date, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field

from services.scoring import dashboard as dashboard_page
from services.scoring import kpis, queries
from services.scoring.deps import ContextDep
from shared.auth import (
    SESSION_COOKIE,
    SESSION_SECONDS,
    AdminAuth,
    ReadAuth,
    SessionAuth,
    issue_session,
)
from shared.events import parse_time, rfc3339
from shared.problems import Problem

router = APIRouter(tags=["reports"])
GroupBy = Literal["source", "campaign", "form", "team"]


class AdSpend(BaseModel):
    """Money spent on one day for a source (and campaign)."""

    model_config = ConfigDict(extra="forbid")
    day: date = Field(description="The day the money was spent (YYYY-MM-DD).")
    source: str = Field(min_length=1, max_length=200, description="utm_source, e.g. google")
    campaign: str = Field(default="", max_length=200, description="utm_campaign")
    amount: float = Field(ge=0, le=1e12)
    currency: str = Field(default="EUR", pattern="^[A-Z]{3}$")


class AdSpendBatch(BaseModel):
    """Several spend entries at once."""

    model_config = ConfigDict(extra="forbid")
    items: list[AdSpend] = Field(min_length=1, max_length=5000)


class AdSpendPageOut(BaseModel):
    """The spend entries recorded."""

    model_config = ConfigDict(extra="forbid")
    items: list[AdSpend]
    next_cursor: None = None


class CostOut(BaseModel):
    """Spend in one currency and what it bought (currencies are never added up)."""

    model_config = ConfigDict(extra="forbid")
    currency: str
    spend: float | None
    per_lead: float | None
    per_sql: float | None
    per_opportunity: float | None
    per_client: float | None


class FunnelOut(BaseModel):
    """One group's funnel (``key``: its source, campaign, form or team; ``total`` for all).

    Counts are of known leads (email or phone) created in the window (``visitors``: anonymous
    ones), by what they reached since; ``mql_cohort``/``sql_cohort`` are the leads that became
    MQL/SQL in the window, and how many of those went on."""

    model_config = ConfigDict(extra="forbid")
    key: str
    visitors: int
    leads: int
    mqls: int
    sqls: int
    prospects: int
    clients: int
    opportunities: int
    won: int
    mql_cohort: int
    mql_cohort_sqls: int
    sql_cohort: int
    sql_cohort_opportunities: int
    sql_cohort_won: int
    mql_rate: float | None
    sql_rate: float | None
    client_rate: float | None
    prospect_rate: float | None
    opportunity_rate: float | None = Field(description="lead → opportunity")
    win_rate: float | None = Field(description="opportunity → won")
    mql_to_sql_rate: float | None
    sql_to_opportunity_rate: float | None
    prospect_to_client_rate: float | None
    spend: float | None
    currency: str | None
    cost_per_lead: float | None
    cost_per_sql: float | None
    costs: list[CostOut]


class KpisOut(BaseModel):
    """Funnel KPIs of the leads created in [from, to)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_: str = Field(alias="from")
    to: str
    group_by: GroupBy
    items: list[FunnelOut]
    totals: FunnelOut
    next_cursor: None = None


def _window(start: str | None, end: str | None, now: datetime) -> tuple[datetime, datetime]:
    def parse(value: str, name: str) -> datetime:
        try:
            return parse_time(value if "T" in value else f"{value}T00:00:00Z")
        except ValueError:
            raise Problem(
                422,
                f"{name} is not an RFC 3339 time or a date",
                errors=[{"loc": f"/query/{name}", "msg": "invalid time"}],
            ) from None

    to = parse(end, "to") if end else now
    frm = parse(start, "from") if start else to - timedelta(days=30)
    if frm >= to:
        raise Problem(
            422,
            "from must be before to",
            errors=[{"loc": "/query/from", "msg": "must be before to"}],
        )
    return frm, to


@router.get("/v1/kpis", dependencies=[ReadAuth])
async def get_kpis(
    ctx: ContextDep,
    from_: Annotated[str | None, Query(alias="from", max_length=40)] = None,
    to: Annotated[str | None, Query(max_length=40)] = None,
    group_by: GroupBy = "source",
) -> KpisOut:
    """Leads created in the window, per first-touch source, campaign or first form: how many
    became MQL, SQL and client, the rates, and (for source/campaign) spend and cost per lead/SQL."""
    frm, end = _window(from_, to, ctx.clock())
    async with ctx.engine.connect() as conn:
        report = await kpis.funnel(conn, frm, end, group_by)
    return KpisOut.model_validate(
        {"from": rfc3339(frm), "to": rfc3339(end), "group_by": group_by, **report}
    )


@router.post("/v1/ad-spend", dependencies=[AdminAuth])
async def post_ad_spend(ctx: ContextDep, body: AdSpendBatch | AdSpend) -> AdSpendPageOut:
    """Record spend (one entry, or ``{"items": [...]}``); the same day/source/campaign replaces."""
    entries = body.items if isinstance(body, AdSpendBatch) else [body]
    async with ctx.engine.begin() as conn:
        await kpis.record_spend(conn, [e.model_dump() for e in entries], ctx.clock())
    return AdSpendPageOut(items=entries)


@router.get(
    "/dashboard", response_class=HTMLResponse, include_in_schema=False, dependencies=[SessionAuth]
)
async def dashboard(
    request: Request,
    ctx: ContextDep,
    from_: Annotated[str | None, Query(alias="from", max_length=40)] = None,
    to: Annotated[str | None, Query(max_length=40)] = None,
    group: GroupBy = "source",
) -> HTMLResponse:
    """The dashboard: funnel and cohorts, cost per lead, speed to lead, SLAs, hot leads waiting
    (``from``/``to``: dates, ``to`` included, or RFC 3339 times; ``group``: the grouping)."""
    now = ctx.clock()
    if to is not None and "T" not in to:
        to = _next_day(to)
    if from_ is None and to is None:
        from_ = (now - timedelta(days=29)).date().isoformat()
    frm, end = _window(from_, to, now)
    if end - frm > timedelta(days=400):
        raise Problem(
            422,
            "the period is longer than 400 days",
            errors=[{"loc": "/query/from", "msg": "at most 400 days before to"}],
        )
    async with ctx.engine.connect() as conn:
        report = await kpis.funnel(conn, frm, end, group)
        by_source = report if group == "source" else await kpis.funnel(conn, frm, end, "source")
        counts = await kpis.funnel_counts(conn)
        sqls, _ = await queries.list_leads(conn, stage="SQL", limit=10)
    transport = getattr(request.app.state, "routing_transport", None)
    speed, nurture = await asyncio.gather(
        dashboard_page.fetch_speed(ctx.settings, frm, end, transport),
        dashboard_page.fetch_nurture(ctx.settings, transport),
    )
    nonce = secrets.token_urlsafe(16)
    view = dashboard_page.View(frm, end, group, now)
    page = dashboard_page.render(view, report, speed, counts, sqls, by_source, nonce, nurture)
    headers = {
        "Cache-Control": "no-store",
        "X-Frame-Options": "DENY",
        "Content-Security-Policy": (
            f"default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-{nonce}'; "
            "img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        ),
    }
    return HTMLResponse(page, headers=headers)


def _next_day(value: str) -> str:
    """The day after a date (the dashboard's ``to`` day is included)."""
    try:
        return (date.fromisoformat(value) + timedelta(days=1)).isoformat()
    except ValueError:
        raise Problem(
            422,
            "to is not an RFC 3339 time or a date",
            errors=[{"loc": "/query/to", "msg": "invalid date"}],
        ) from None


# --- the dashboard's browser login ------------------------------------------------------------

_LOGIN_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Leadflow login</title>
<style>body{{font-family:sans-serif;margin:2rem}}</style></head><body>
<h1>Leadflow scoring</h1>{message}
<form method="post" action="/login"><label>Token <input type="password" name="token"
autocomplete="current-password" required></label> <button id="login">Log in</button></form>
</body></html>"""


def _login_page(message: str = "", status: int = 200) -> HTMLResponse:
    note = f'<p role="alert">{html.escape(message)}</p>' if message else ""
    # The page holds a password field: never let a cache or a frame keep it.
    headers = {"Cache-Control": "no-store", "X-Frame-Options": "DENY"}
    return HTMLResponse(_LOGIN_PAGE.format(message=note), status_code=status, headers=headers)


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
async def login_form() -> HTMLResponse:
    """The login form of the dashboard."""
    return _login_page()


@router.post("/login", include_in_schema=False, response_model=None)
async def login(
    request: Request,
    ctx: ContextDep,
    token: Annotated[str, Form(max_length=1000)] = "",
) -> HTMLResponse | RedirectResponse:
    """Exchange a read or admin token for a signed session cookie (HttpOnly, SameSite=Lax,
    Secure over https), then go to the dashboard."""
    cookie = issue_session(ctx.settings, token.strip())
    if cookie is None:
        return _login_page("That token is not valid.", status=403)
    response = RedirectResponse("/dashboard", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/logout", include_in_schema=False)
async def logout(request: Request) -> RedirectResponse:
    """End the browser session and go back to the login form."""
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(
        SESSION_COOKIE, httponly=True, samesite="lax", secure=request.url.scheme == "https"
    )
    return response
