"""The scoring HTTP API: read leads and their timeline; override and erase (bearer)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.scoring import commands, queries
from services.scoring.deps import ContextDep
from services.scoring.domain.identity import normalise_email
from services.scoring.domain.model import Lead
from shared.auth import AdminAuth, ReadAuth
from shared.problems import Problem

router = APIRouter(prefix="/v1/leads", tags=["leads"])

# shared.contract.STAGES, STATUSES and TEMPERATURES, spelled out for mypy and the OpenAPI
# (tests/scoring/test_api_models.py keeps them equal)
Stage = Literal["IQL", "MQL", "SQL"]
Status = Literal["lead", "prospect", "client", "disqualified"]
Temperature = Literal["cold", "warm", "hot"]


class _Out(BaseModel):
    # extra="forbid": a field the model lacks fails loudly instead of vanishing from the JSON
    model_config = ConfigDict(extra="forbid")


class ReasonOut(_Out):
    """One rule's points, and when they were earned; the reasons add up to the score."""

    rule: str
    points: int | float
    at: str


class ScoreOut(_Out):
    total: int | float
    fit: int | float
    engagement: int | float
    reasons: list[ReasonOut]


class OwnerOut(_Out):
    id: str
    name: str | None = None
    email: str | None = None
    team: str | None = None


class LeadOut(_Out):
    """The lead resource (the ``lead`` of ``leadflow.leads`` events too, without
    ``anonymous_ids``)."""

    id: str
    key: str
    email: str | None
    emails: list[str]
    phone: str | None
    first_name: str | None
    last_name: str | None
    company: str | None
    job_title: str | None
    industry: str | None
    company_size: int | None
    country: str | None
    status: Status
    stage: Stage
    temperature: Temperature
    score: ScoreOut
    owner: OwnerOut | None
    consent: dict[str, Any] | None
    first_touch: dict[str, Any] | None
    last_touch: dict[str, Any] | None
    anonymous_ids: list[str]
    created_at: str
    last_activity_at: str | None
    qualified_at: str | None
    erased: bool

    @classmethod
    def of(cls, lead: Lead) -> LeadOut:
        return cls.model_validate(lead.to_resource())


class LeadPageOut(_Out):
    items: list[LeadOut]
    next_cursor: str | None


class TimelineEntryOut(_Out):
    at: str
    kind: str
    type: str
    event_id: str | None
    data: dict[str, Any]


class TimelinePageOut(_Out):
    items: list[TimelineEntryOut]
    next_cursor: str | None


class LeadPatch(BaseModel):
    """A person's override of a lead's stage and/or status."""

    model_config = ConfigDict(extra="forbid")
    stage: Stage | None = None
    status: Status | None = None
    reason: str | None = Field(default=None, max_length=1000)

    @model_validator(mode="after")
    def _something(self) -> LeadPatch:
        if self.stage is None and self.status is None:
            raise ValueError("give stage and/or status")
        return self


def _no_nul(**values: str | None) -> None:
    """PostgreSQL text cannot hold NUL: such a value is bad input (422), not a server error."""
    for name, value in values.items():
        if value is not None and "\x00" in value:
            raise Problem(
                422,
                f"{name} contains a NUL character",
                errors=[{"loc": f"/{name}", "msg": "NUL character not allowed"}],
            )


def _not_found(lead_id: str) -> Problem:
    return Problem(404, f"lead {lead_id} not found")


@router.get("", dependencies=[ReadAuth])
async def list_leads(
    ctx: ContextDep,
    email: str | None = None,
    stage: Stage | None = None,
    temperature: Temperature | None = None,
    status: Status | None = None,
    owner: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> LeadPageOut:
    """Leads, newest first, with cursor pagination."""
    _no_nul(email=email, owner=owner, cursor=cursor)
    wanted_email = None
    if email is not None:
        wanted_email = normalise_email(email)
        if wanted_email is None:
            raise Problem(
                422,
                "email is not valid",
                errors=[{"loc": "/query/email", "msg": "not an email address"}],
            )
    try:
        async with ctx.engine.connect() as conn:
            page, next_cursor = await queries.list_leads(
                conn,
                email=wanted_email,
                stage=stage,
                temperature=temperature,
                status=status,
                owner=owner,
                limit=limit,
                cursor=cursor,
            )
    except queries.BadCursor as exc:
        raise Problem(400, str(exc), errors=[{"loc": "/query/cursor", "msg": str(exc)}]) from None
    return LeadPageOut(items=[LeadOut.of(lead) for lead in page], next_cursor=next_cursor)


@router.get("/{lead_id}", dependencies=[ReadAuth])
async def get_lead(ctx: ContextDep, lead_id: str) -> LeadOut:
    """One lead (a lead merged into another answers with the surviving lead)."""
    _no_nul(lead_id=lead_id)
    async with ctx.engine.connect() as conn:
        lead = await queries.get_lead(conn, lead_id)
    if lead is None:
        raise _not_found(lead_id)
    return LeadOut.of(lead)


@router.get("/{lead_id}/timeline", dependencies=[ReadAuth])
async def get_timeline(
    ctx: ContextDep,
    lead_id: str,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> TimelinePageOut:
    """Everything that happened to the lead, oldest first."""
    _no_nul(lead_id=lead_id, cursor=cursor)
    async with ctx.engine.connect() as conn:
        lead = await queries.get_lead(conn, lead_id)
        if lead is None:
            raise _not_found(lead_id)
        try:
            items, next_cursor = await queries.lead_timeline(
                conn, lead.id, limit=limit, cursor=cursor
            )
        except queries.BadCursor as exc:
            raise Problem(
                400, str(exc), errors=[{"loc": "/query/cursor", "msg": str(exc)}]
            ) from None
    return TimelinePageOut.model_validate({"items": items, "next_cursor": next_cursor})


@router.patch("/{lead_id}", dependencies=[AdminAuth])
async def patch_lead(ctx: ContextDep, lead_id: str, body: LeadPatch) -> LeadOut:
    """Override stage and/or status by hand (also backwards); audited in the timeline."""
    _no_nul(lead_id=lead_id, reason=body.reason)
    async with ctx.engine.begin() as conn:
        lead = await commands.override_lead(
            conn,
            ctx.topics,
            lead_id,
            stage=body.stage,
            status=body.status,
            reason=body.reason,
            now=ctx.clock(),
        )
    if lead is None:
        raise _not_found(lead_id)
    ctx.wake()
    return LeadOut.of(lead)


@router.delete("/{lead_id}", dependencies=[AdminAuth], status_code=204)
async def delete_lead(ctx: ContextDep, lead_id: str) -> Response:
    """Erase the person's data; the email is not re-created without a new consent."""
    _no_nul(lead_id=lead_id)
    async with ctx.engine.begin() as conn:
        lead = await commands.erase_lead(conn, ctx.topics, lead_id, ctx.clock())
    if lead is None:
        raise _not_found(lead_id)
    ctx.wake()
    return Response(status_code=204)
