"""Routing's HTTP API (thin): assignments, first touch, sales activities, reps, SLA report."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request
from pydantic import BaseModel, Field

from services.routing import handlers
from services.routing import repository as repo
from services.routing.domain.model import ASSIGNMENT_STATES
from services.routing.domain.rules import can_take
from services.routing.domain.sla import report
from services.routing.messages import RoutingContext
from shared.events import CloudEvent, derived_event_id, new_event_id, parse_time, rfc3339, utcnow
from shared.http import BearerAuth, RuntimeDep
from shared.outbox import enqueue
from shared.problems import Problem

router = APIRouter(prefix="/v1", tags=["routing"])
Limit = Annotated[int, Query(ge=1, le=200)]


def _ctx(request: Request) -> RoutingContext:
    ctx: RoutingContext = request.app.state.routing
    return ctx


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _encode_cursor(row: dict[str, Any]) -> str:
    raw = f"{rfc3339(row['assigned_at'])}|{row['id']}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, aid = raw.split("|", 1)
        return parse_time(at), aid
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Problem(400, "cursor is not valid") from None


@router.get("/assignments")
async def list_assignments(
    runtime: RuntimeDep, owner: str | None = None,
    state: Literal["open", "met", "breached", "reassigned", "closed"] | None = None,
    lead_id: str | None = None, limit: Limit = 50, cursor: str | None = None,
) -> dict[str, Any]:
    """Assignments, newest first, filtered by owner (rep id), state or lead."""
    after = _decode_cursor(cursor) if cursor else None
    async with runtime.engine.connect() as conn:
        rows = await repo.list_assignments(conn, owner=owner, state=state, lead_id=lead_id,
                                           limit=limit + 1, after=after)
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": [repo.assignment_resource(r) for r in rows],
            "next_cursor": _encode_cursor(rows[-1]) if more else None}


@router.get("/assignments/{assignment_id}")
async def get_assignment(assignment_id: str, runtime: RuntimeDep) -> dict[str, Any]:
    """One assignment."""
    async with runtime.engine.connect() as conn:
        row = await repo.get_assignment(conn, assignment_id)
    if row is None:
        raise Problem(404, f"no assignment {assignment_id}")
    return repo.assignment_resource(row)


class FirstTouch(BaseModel):
    """When the rep first reached the lead (default: now)."""

    occurred_at: datetime | None = None
    rep_id: str | None = Field(default=None, max_length=100)
    note: str | None = Field(default=None, max_length=2000)


def _when(value: datetime | None) -> datetime:
    now = utcnow()
    at = _aware(value) or now
    if at > now + timedelta(minutes=5):
        raise Problem(422, "occurred_at is in the future",
                      errors=[{"loc": "/body/occurred_at", "msg": "must not be in the future"}])
    return at


@router.post("/assignments/{assignment_id}/first-touch", dependencies=[BearerAuth])
async def post_first_touch(assignment_id: str, request: Request, runtime: RuntimeDep,
                           body: FirstTouch | None = None) -> dict[str, Any]:
    """Stop the SLA clock: the rep reached the lead."""
    ctx = _ctx(request)
    at = _when(body.occurred_at if body else None)
    try:
        async with runtime.engine.begin() as conn:
            row = await handlers.first_touch(conn, ctx, assignment_id, at, via="api")
    except handlers.NotFound:
        raise Problem(404, f"no assignment {assignment_id}") from None
    except handlers.Conflict as exc:
        raise Problem(409, str(exc)) from None
    ctx.after_commit()
    return repo.assignment_resource(dict(row))


class SalesActivity(BaseModel):
    """A sales activity, as sales tools put it on ``leadflow.sales``."""

    type: Literal["contacted", "meeting_booked", "opportunity_created", "won", "lost",
                  "disqualified"]
    lead_id: str = Field(min_length=1, max_length=200)
    rep_id: str | None = Field(default=None, max_length=100)
    assignment_id: str | None = Field(default=None, max_length=64)
    email: str | None = Field(default=None, max_length=320)
    note: str | None = Field(default=None, max_length=2000)
    occurred_at: datetime | None = None


@router.post("/sales/activities", status_code=202, dependencies=[BearerAuth])
async def post_sales_activity(
    body: SalesActivity, request: Request, runtime: RuntimeDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> dict[str, Any]:
    """Publish ``io.leadflow.sales.<type>`` (scoring consumes it) and apply it to the clock."""
    ctx = _ctx(request)
    at = _when(body.occurred_at)
    async with runtime.engine.begin() as conn:
        row = None
        if body.assignment_id:
            row = await repo.get_assignment(conn, body.assignment_id)
        row = row or await repo.active_assignment(conn, body.lead_id)
        key = (row or {}).get("lead_key") or (body.email or "").strip().lower() or body.lead_id
        data = {"lead_id": body.lead_id, "email": body.email,
                "assignment_id": body.assignment_id or (row or {}).get("id"),
                "rep_id": body.rep_id, "occurred_at": rfc3339(at), "note": body.note}
        eid = derived_event_id("sales-activity", idempotency_key) if idempotency_key \
            else new_event_id()
        ev = CloudEvent(type=f"io.leadflow.sales.{body.type}", source="/leadflow/routing",
                        data=data, id=eid, time=at, subject=body.lead_id, key=key)
        await enqueue(conn, ctx.source, ctx.topics.sales, [ev])
        await handlers.handle_event(conn, ctx, ev)
    ctx.after_commit()
    return {"event_id": eid, "type": ev.type, "status": "accepted"}


def _rep_resource(ctx: RoutingContext, rid: str, state: Any, now: datetime) -> dict[str, Any]:
    rep = ctx.config.reps[rid]
    why = can_take(rep, state, now)
    return {
        "id": rep.id, "name": rep.name, "email": rep.email, "team": rep.team,
        "weight": rep.weight, "timezone": rep.calendar.tz.key, "paused": state.paused,
        "out_of_office": [{"from": rfc3339(a), "to": rfc3339(b)} for a, b in state.out_of_office],
        "capacity": {"max_open": state.max_open if state.max_open is not None else rep.max_open,
                     "max_per_day": state.max_per_day if state.max_per_day is not None
                     else rep.max_per_day},
        "load": {"open": state.open_count, "today": state.today_count},
        "available": why is None, "unavailable_reason": why,
    }


@router.get("/reps")
async def list_reps(request: Request, runtime: RuntimeDep) -> dict[str, Any]:
    """Every rep with availability, capacity and current load."""
    ctx, now = _ctx(request), utcnow()
    async with runtime.engine.begin() as conn:
        await repo.ensure_rep_states(conn, ctx.config.reps, now)
        states = await repo.load_rep_states(conn, ctx.config, now, lock=False)
    return {"items": [_rep_resource(ctx, rid, states[rid], now) for rid in ctx.config.reps],
            "next_cursor": None}


class Range(BaseModel):
    """An out-of-office range."""

    from_: datetime = Field(alias="from")
    to: datetime


class Capacity(BaseModel):
    """Capacity overrides (null: back to the configured value)."""

    max_open: int | None = Field(default=None, ge=0, le=100_000)
    max_per_day: int | None = Field(default=None, ge=0, le=100_000)


class RepPatch(BaseModel):
    """What an operator may change about a rep at run time."""

    paused: bool | None = None
    out_of_office: list[Range] | None = Field(default=None, max_length=100)
    capacity: Capacity | None = None


@router.patch("/reps/{rep_id}", dependencies=[BearerAuth])
async def patch_rep(rep_id: str, body: RepPatch, request: Request,
                    runtime: RuntimeDep) -> dict[str, Any]:
    """Pause or resume a rep, set out-of-office ranges, or override capacity."""
    ctx, now = _ctx(request), utcnow()
    if rep_id not in ctx.config.reps:
        raise Problem(404, f"no rep {rep_id}")
    values: dict[str, Any] = {"updated_at": now}
    if body.paused is not None:
        values["paused"] = body.paused
    if body.out_of_office is not None:
        ranges = []
        for i, r in enumerate(body.out_of_office):
            a, b = _aware(r.from_), _aware(r.to)
            assert a is not None and b is not None
            if b <= a:
                raise Problem(422, "an out-of-office range must end after it starts", errors=[
                    {"loc": f"/body/out_of_office/{i}/to", "msg": "must be after 'from'"}])
            ranges.append({"from": rfc3339(a), "to": rfc3339(b)})
        values["out_of_office"] = ranges
    if body.capacity is not None:
        values["max_open"] = body.capacity.max_open
        values["max_per_day"] = body.capacity.max_per_day
    async with runtime.engine.begin() as conn:
        await repo.ensure_rep_states(conn, ctx.config.reps, now)
        await repo.update_rep_state(conn, rep_id, values)
        states = await repo.load_rep_states(conn, ctx.config, now, lock=False)
    ctx.after_commit()  # someone may be able to take queued leads now
    return _rep_resource(ctx, rep_id, states[rep_id], now)


@router.get("/sla/report")
async def sla_report(
    runtime: RuntimeDep,
    from_: Annotated[datetime | None, Query(alias="from")] = None,
    to: datetime | None = None,
) -> dict[str, Any]:
    """SLA attainment, time to first touch and breaches, overall, by team and by rep."""
    end = _aware(to) or utcnow()
    start = _aware(from_) or end - timedelta(days=30)
    if start >= end:
        raise Problem(422, "'from' must be before 'to'",
                      errors=[{"loc": "/query/from", "msg": "must be before 'to'"}])
    async with runtime.engine.connect() as conn:
        rows = await repo.report_rows(conn, start, end)
    return {"from": rfc3339(start), "to": rfc3339(end), **report(rows)}


@router.get("/queue")
async def list_queue(runtime: RuntimeDep, queue: str | None = None,
                     limit: Limit = 100) -> dict[str, Any]:
    """Leads waiting for an owner (``unassigned``) or escalated (``escalations``)."""
    async with runtime.engine.connect() as conn:
        rows = await repo.queued(conn, queue, limit)
    return {"items": [{"lead_id": r["lead_id"], "queue": r["queue"], "reason": r["reason"],
                       "attempts": r["attempts"], "queued_at": rfc3339(r["created_at"])}
                      for r in rows], "next_cursor": None}


@router.get("/webhooks/deliveries")
async def list_deliveries(
    runtime: RuntimeDep, state: Literal["pending", "delivered", "dead"] | None = None,
    limit: Limit = 50, cursor: str | None = None,
) -> dict[str, Any]:
    """The outbound webhook delivery log, newest first."""
    if cursor is not None and not cursor.isdigit():
        raise Problem(400, "cursor is not valid")
    before = int(cursor) if cursor else None
    async with runtime.engine.connect() as conn:
        rows = await repo.list_deliveries(conn, state=state, limit=limit + 1, before_id=before)
    more = len(rows) > limit
    rows = rows[:limit]
    items = [{"id": str(r["id"]), "webhook": r["webhook"], "url": r["url"],
              "event_id": r["event_id"], "event_type": r["event_type"], "state": r["state"],
              "attempts": r["attempts"], "last_status": r["last_status"],
              "last_error": r["last_error"], "created_at": rfc3339(r["created_at"]),
              "next_attempt_at": rfc3339(r["next_attempt_at"]),
              "delivered_at": rfc3339(r["delivered_at"]) if r["delivered_at"] else None}
             for r in rows]
    return {"items": items, "next_cursor": str(rows[-1]["id"]) if more else None}


__all__ = ["ASSIGNMENT_STATES", "router"]
