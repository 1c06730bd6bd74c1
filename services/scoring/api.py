"""The scoring HTTP API: read leads and their timeline; override and erase (bearer)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.scoring import commands, queries
from services.scoring.domain.identity import normalise_email
from shared.auth import AdminAuth, ReadAuth
from shared.events import utcnow
from shared.http import RuntimeDep
from shared.problems import Problem
from shared.topics import Topics

router = APIRouter(prefix="/v1/leads", tags=["leads"])

Stage = Literal["IQL", "MQL", "SQL"]
Status = Literal["lead", "prospect", "client", "disqualified"]
Temperature = Literal["cold", "warm", "hot"]


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
    runtime: RuntimeDep,
    email: str | None = None,
    stage: Stage | None = None,
    temperature: Temperature | None = None,
    status: Status | None = None,
    owner: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> dict[str, Any]:
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
        async with runtime.engine.connect() as conn:
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
    return {"items": [lead.to_resource() for lead in page], "next_cursor": next_cursor}


@router.get("/{lead_id}", dependencies=[ReadAuth])
async def get_lead(runtime: RuntimeDep, lead_id: str) -> dict[str, Any]:
    """One lead (a lead merged into another answers with the surviving lead)."""
    _no_nul(lead_id=lead_id)
    async with runtime.engine.connect() as conn:
        lead = await queries.get_lead(conn, lead_id)
    if lead is None:
        raise _not_found(lead_id)
    return lead.to_resource()


@router.get("/{lead_id}/timeline", dependencies=[ReadAuth])
async def get_timeline(
    runtime: RuntimeDep,
    lead_id: str,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> dict[str, Any]:
    """Everything that happened to the lead, oldest first."""
    _no_nul(lead_id=lead_id, cursor=cursor)
    async with runtime.engine.connect() as conn:
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
    return {"items": items, "next_cursor": next_cursor}


@router.patch("/{lead_id}", dependencies=[AdminAuth])
async def patch_lead(runtime: RuntimeDep, lead_id: str, body: LeadPatch) -> dict[str, Any]:
    """Override stage and/or status by hand (also backwards); audited in the timeline."""
    _no_nul(lead_id=lead_id, reason=body.reason)
    topics = Topics(runtime.settings.leadflow_topic_prefix)
    async with runtime.engine.begin() as conn:
        lead = await commands.override_lead(
            conn,
            topics,
            lead_id,
            stage=body.stage,
            status=body.status,
            reason=body.reason,
            now=utcnow(),
        )
    if lead is None:
        raise _not_found(lead_id)
    runtime.relay.wake()
    return lead.to_resource()


@router.delete("/{lead_id}", dependencies=[AdminAuth], status_code=204)
async def delete_lead(runtime: RuntimeDep, lead_id: str) -> Response:
    """Erase the person's data; the email is not re-created without a new consent."""
    _no_nul(lead_id=lead_id)
    topics = Topics(runtime.settings.leadflow_topic_prefix)
    async with runtime.engine.begin() as conn:
        lead = await commands.erase_lead(conn, topics, lead_id, utcnow())
    if lead is None:
        raise _not_found(lead_id)
    runtime.relay.wake()
    return Response(status_code=204)
