"""Routing's HTTP API (thin): assignments, first touch and sales activities."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Header
from pydantic import BaseModel, Field

from services.routing import handlers
from services.routing import repository as repo
from services.routing.api_common import Limit, aware
from services.routing.deps import ContextDep
from services.routing.domain.assignment import Assignment, State
from shared.auth import AdminAuth, ReadAuth
from shared.events import parse_time, rfc3339, utcnow
from shared.http import RuntimeDep
from shared.problems import Problem

router = APIRouter(prefix="/v1", tags=["routing"])


class OwnerOut(BaseModel):
    """The rep holding an assignment."""

    id: str
    name: str
    email: str
    team: str


class SlaOut(BaseModel):
    """An assignment's response-time clock (times in RFC 3339, UTC)."""

    policy: str
    due_at: str | None
    warn_at: str | None
    met_at: str | None
    breached: bool
    response_seconds: float | None
    business_seconds: float | None


class AssignmentOut(BaseModel):
    """The public assignment resource."""

    id: str
    lead_id: str
    owner: OwnerOut
    team: str
    state: State
    sla: SlaOut
    assigned_at: str | None
    reason: str
    previous_assignment_id: str | None
    escalation_level: int

    @classmethod
    def of(cls, a: Assignment) -> AssignmentOut:
        """The resource of an assignment."""

        def t(v: datetime | None) -> str | None:
            return rfc3339(v) if v else None

        return cls(
            id=a.id,
            lead_id=a.lead_id,
            owner=OwnerOut(**a.owner.to_data()),
            team=a.team,
            state=a.state,
            sla=SlaOut(
                policy=a.policy,
                due_at=t(a.due_at),
                warn_at=t(a.warn_at),
                met_at=t(a.met_at),
                breached=a.breached,
                response_seconds=a.response_seconds,
                business_seconds=a.business_seconds,
            ),
            assigned_at=t(a.assigned_at),
            reason=a.reason,
            previous_assignment_id=a.previous_assignment_id,
            escalation_level=a.escalation_level,
        )


class AssignmentPageOut(BaseModel):
    """A page of assignments, newest first."""

    items: list[AssignmentOut]
    next_cursor: str | None


def _encode_cursor(a: Assignment) -> str:
    raw = f"{rfc3339(a.assigned_at)}|{a.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, aid = raw.split("|", 1)
        return parse_time(at), aid
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Problem(400, "cursor is not valid") from None


@router.get("/assignments", dependencies=[ReadAuth])
async def list_assignments(
    ctx: ContextDep,
    runtime: RuntimeDep,
    owner: str | None = None,
    state: State | None = None,
    lead_id: str | None = None,
    limit: Limit = 50,
    cursor: str | None = None,
) -> AssignmentPageOut:
    """Assignments, newest first, filtered by owner (rep id or email), state or lead."""
    after = _decode_cursor(cursor) if cursor else None
    if owner and "@" in owner:
        reps = ctx.config.reps.values()
        owner = next((r.id for r in reps if r.email.lower() == owner.lower()), owner)
    async with runtime.engine.connect() as conn:
        rows = await repo.list_assignments(
            conn, owner=owner, state=state, lead_id=lead_id, limit=limit + 1, after=after
        )
    more = len(rows) > limit
    rows = rows[:limit]
    return AssignmentPageOut(
        items=[AssignmentOut.of(a) for a in rows],
        next_cursor=_encode_cursor(rows[-1]) if more else None,
    )


@router.get("/assignments/{assignment_id}", dependencies=[ReadAuth])
async def get_assignment(assignment_id: str, runtime: RuntimeDep) -> AssignmentOut:
    """One assignment."""
    async with runtime.engine.connect() as conn:
        a = await repo.get_assignment(conn, assignment_id)
    if a is None:
        raise Problem(404, f"no assignment {assignment_id}")
    return AssignmentOut.of(a)


class FirstTouch(BaseModel):
    """When the rep first reached the lead (default: now)."""

    occurred_at: datetime | None = None
    rep_id: str | None = Field(default=None, max_length=100)
    note: str | None = Field(default=None, max_length=2000)


def _when(value: datetime | None) -> datetime:
    now = utcnow()
    at = aware(value) or now
    if at > now + timedelta(minutes=5):
        raise Problem(
            422,
            "occurred_at is in the future",
            errors=[{"loc": "/body/occurred_at", "msg": "must not be in the future"}],
        )
    return at


@router.post("/assignments/{assignment_id}/first-touch", dependencies=[AdminAuth])
async def post_first_touch(
    assignment_id: str, ctx: ContextDep, runtime: RuntimeDep, body: FirstTouch | None = None
) -> AssignmentOut:
    """Stop the SLA clock: the rep reached the lead."""
    at = _when(body.occurred_at if body else None)
    try:
        async with runtime.engine.begin() as conn:
            a = await handlers.first_touch(conn, ctx, assignment_id, at, via="api")
    except handlers.NotFound:
        raise Problem(404, f"no assignment {assignment_id}") from None
    except handlers.Conflict as exc:
        raise Problem(409, str(exc)) from None
    ctx.after_commit()
    return AssignmentOut.of(a)


class SalesActivity(BaseModel):
    """A sales activity, as sales tools put it on ``leadflow.sales``."""

    type: Literal[
        "contacted", "meeting_booked", "opportunity_created", "won", "lost", "disqualified"
    ]
    lead_id: str = Field(min_length=1, max_length=200)
    rep_id: str | None = Field(default=None, max_length=100)
    assignment_id: str | None = Field(default=None, max_length=64)
    email: str | None = Field(default=None, max_length=320)
    note: str | None = Field(default=None, max_length=2000)
    occurred_at: datetime | None = None


class SalesActivityOut(BaseModel):
    """A sales activity accepted: the id and type of the event published for it."""

    event_id: str
    type: str
    status: Literal["accepted"] = "accepted"


@router.post("/sales/activities", status_code=202, dependencies=[AdminAuth])
async def post_sales_activity(
    body: SalesActivity,
    ctx: ContextDep,
    runtime: RuntimeDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> SalesActivityOut:
    """Publish ``io.leadflow.sales.<type>`` (scoring consumes it) and apply it to the clock."""
    cmd = handlers.LogSalesActivity(
        kind=body.type,
        lead_id=body.lead_id,
        at=_when(body.occurred_at),
        rep_id=body.rep_id,
        assignment_id=body.assignment_id,
        email=body.email,
        note=body.note,
        idempotency_key=idempotency_key,
    )
    async with runtime.engine.begin() as conn:
        ev = await handlers.log_sales_activity(conn, ctx, cmd)
    ctx.after_commit()
    return SalesActivityOut(event_id=ev.id, type=ev.type)
