"""Routing's operator API (thin): reps, the SLA report, queues, the webhook delivery log and
redelivery of dead deliveries."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from services.routing import durable_queues as queues
from services.routing import handlers, webhook_store
from services.routing import repository as repo
from services.routing.api_common import Limit, aware
from services.routing.deps import ContextDep, RoutingContext
from services.routing.domain.business_time import DAYS, Calendar, make_calendar
from services.routing.domain.model import Rep, RepState, effective_calendar, effective_weight
from services.routing.domain.rules import can_take
from services.routing.domain.sla import report
from services.routing.webhooks import url_host
from shared.auth import AdminAuth, ReadAuth
from shared.events import rfc3339, utcnow
from shared.http import RuntimeDep
from shared.problems import Problem

router = APIRouter(prefix="/v1", tags=["operations"])


def _span(t: time | None) -> str:
    return "24:00" if t is None else t.strftime("%H:%M")


def calendar_hours(cal: Calendar) -> str | dict[str, list[str]]:
    """A calendar's weekly hours in the config format (``"24x7"`` or ``{mon: [...]}``)."""
    if all(list(cal.weekly.get(i, ())) == [(time(0), None)] for i in range(7)):
        return "24x7"
    return {
        DAYS[i]: [f"{_span(a)}-{_span(b)}" for a, b in cal.weekly[i]]
        for i in sorted(cal.weekly)
        if cal.weekly[i]
    }


class WorkingHoursOut(BaseModel):
    """A rep's effective working hours, and whether they are configured or overridden."""

    timezone: str
    hours: str | dict[str, list[str]]
    holidays: list[str]
    source: Literal["config", "override"]


class RangeOut(BaseModel):
    """An out-of-office range (RFC 3339, UTC)."""

    from_: str = Field(serialization_alias="from")
    to: str


class CapacityOut(BaseModel):
    """A rep's effective capacity (null: unlimited)."""

    max_open: int | None
    max_per_day: int | None


class LoadOut(BaseModel):
    """A rep's open assignments and leads assigned today (their local day)."""

    open: int
    today: int


class RepOut(BaseModel):
    """A rep with availability, capacity and current load."""

    id: str
    name: str
    email: str
    team: str
    weight: int
    timezone: str
    working_hours: WorkingHoursOut
    paused: bool
    out_of_office: list[RangeOut]
    capacity: CapacityOut
    load: LoadOut
    available: bool
    unavailable_reason: str | None

    @classmethod
    def of(cls, rep: Rep, state: RepState, now: datetime) -> RepOut:
        """The resource of a configured rep in its run-time state."""
        why = can_take(rep, state, now)
        cal = effective_calendar(rep, state)
        return cls(
            id=rep.id,
            name=rep.name,
            email=rep.email,
            team=rep.team,
            weight=effective_weight(rep, state),
            timezone=cal.tz.key,
            working_hours=WorkingHoursOut(
                timezone=cal.tz.key,
                hours=calendar_hours(cal),
                holidays=sorted(d.isoformat() for d in cal.holidays),
                source="override" if state.calendar is not None else "config",
            ),
            paused=state.paused,
            out_of_office=[
                RangeOut(from_=rfc3339(a), to=rfc3339(b)) for a, b in state.out_of_office
            ],
            capacity=CapacityOut(
                max_open=state.max_open if state.max_open is not None else rep.max_open,
                max_per_day=state.max_per_day if state.max_per_day is not None else rep.max_per_day,
            ),
            load=LoadOut(open=state.open_count, today=state.today_count),
            available=why is None,
            unavailable_reason=why,
        )


class RepPageOut(BaseModel):
    """Every rep (one page: ``next_cursor`` is always null)."""

    items: list[RepOut]
    next_cursor: str | None = None


@router.get("/reps", dependencies=[ReadAuth])
async def list_reps(ctx: ContextDep, runtime: RuntimeDep) -> RepPageOut:
    """Every rep with availability, capacity and current load."""
    now = utcnow()
    # A read: reps without a state row yet are shown with the configured defaults.
    async with runtime.engine.connect() as conn:
        states = await repo.load_rep_states(conn, ctx.config, now, lock=False)
    items = [RepOut.of(rep, states[rid], now) for rid, rep in ctx.config.reps.items()]
    return RepPageOut(items=items)


class Range(BaseModel):
    """An out-of-office range."""

    from_: datetime = Field(alias="from")
    to: datetime


class Capacity(BaseModel):
    """Capacity overrides (null: back to the configured value)."""

    max_open: int | None = Field(default=None, ge=0, le=100_000)
    max_per_day: int | None = Field(default=None, ge=0, le=100_000)


_HHMM = r"([01][0-9]|2[0-3]):[0-5][0-9]"
Span = Annotated[str, Field(pattern=rf"^{_HHMM}-({_HHMM}|24:00)$")]


class WorkingHours(BaseModel):
    """Working hours as in the config: ``"24x7"`` or ``{mon: ["09:00-17:00"], ...}``."""

    model_config = ConfigDict(extra="forbid")

    timezone: str | None = Field(default=None, max_length=64)
    hours: (
        Literal["24x7"] | dict[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"], list[Span]]
    )
    holidays: list[date] | None = Field(default=None, max_length=1000)


class RepPatch(BaseModel):
    """What an operator may change about a rep at run time (null weight or working_hours:
    back to the configured value)."""

    paused: bool | None = None
    out_of_office: list[Range] | None = Field(default=None, max_length=100)
    capacity: Capacity | None = None
    weight: int | None = Field(default=None, ge=1, le=1000)
    working_hours: WorkingHours | None = None


@router.patch("/reps/{rep_id}", dependencies=[AdminAuth])
async def patch_rep(rep_id: str, body: RepPatch, ctx: ContextDep, runtime: RuntimeDep) -> RepOut:
    """Pause or resume a rep, set out-of-office ranges, or override capacity."""
    now = utcnow()
    if rep_id not in ctx.config.reps:
        raise Problem(404, f"no rep {rep_id}")
    values: dict[str, Any] = {"updated_at": now}
    if body.paused is not None:
        values["paused"] = body.paused
    if body.out_of_office is not None:
        ranges = []
        for i, r in enumerate(body.out_of_office):
            a, b = aware(r.from_), aware(r.to)
            assert a is not None and b is not None
            if b <= a:
                raise Problem(
                    422,
                    "an out-of-office range must end after it starts",
                    errors=[{"loc": f"/body/out_of_office/{i}/to", "msg": "must be after 'from'"}],
                )
            ranges.append({"from": rfc3339(a), "to": rfc3339(b)})
        values["out_of_office"] = ranges
    if body.capacity is not None:
        values["max_open"] = body.capacity.max_open
        values["max_per_day"] = body.capacity.max_per_day
    if "weight" in body.model_fields_set:
        values["weight"] = body.weight
    if "working_hours" in body.model_fields_set:
        values["working_hours"] = _working_hours(ctx, rep_id, body.working_hours)
    async with runtime.engine.begin() as conn:
        state = await handlers.change_rep(conn, ctx, rep_id, values, now)
    ctx.after_commit()  # someone may be able to take queued leads now
    return RepOut.of(ctx.config.reps[rep_id], state, now)


def _working_hours(
    ctx: RoutingContext, rep_id: str, wh: WorkingHours | None
) -> dict[str, Any] | None:
    """The override to store (checked by building its calendar), or None to go back."""
    if wh is None:
        return None
    configured = ctx.config.reps[rep_id].calendar
    tz = wh.timezone or configured.tz.key
    holidays = (
        [d.isoformat() for d in wh.holidays]
        if wh.holidays is not None
        else sorted(d.isoformat() for d in configured.holidays)
    )
    hours: Any = wh.hours
    # the configured calendar's public holidays (a country's, every year) stay closed days
    country, subdivision = configured.holidays_country, configured.holidays_subdivision
    public = {"holidays_country": country, "holidays_subdivision": subdivision}
    try:
        make_calendar(
            tz, hours, holidays, holidays_country=country, holidays_subdivision=subdivision
        )
    except ValueError as exc:
        loc = (
            "/body/working_hours/timezone"
            if "time zone" in str(exc)
            else "/body/working_hours/hours"
        )
        raise Problem(
            422, f"invalid working_hours: {exc}", errors=[{"loc": loc, "msg": str(exc)}]
        ) from None
    return {"timezone": tz, "hours": hours, "holidays": holidays, **public}


class SlaSummaryOut(BaseModel):
    """SLA attainment (met / (met + breached)) and time to first touch of some assignments."""

    assignments: int
    open: int
    met: int
    breaches: int
    attainment_pct: float | None
    median_first_touch_seconds: float | None
    p90_first_touch_seconds: float | None
    median_first_touch_business_seconds: float | None
    p90_first_touch_business_seconds: float | None


class TeamSlaOut(SlaSummaryOut):
    """One team's summary."""

    team: str


class RepSlaOut(SlaSummaryOut):
    """One rep's summary."""

    rep_id: str


class SlaReportOut(BaseModel):
    """The SLA report for assignments made in [from, to)."""

    from_: str = Field(serialization_alias="from")
    to: str
    overall: SlaSummaryOut
    by_team: list[TeamSlaOut]
    by_rep: list[RepSlaOut]


@router.get("/sla/report", dependencies=[ReadAuth])
async def sla_report(
    runtime: RuntimeDep,
    from_: Annotated[datetime | None, Query(alias="from")] = None,
    to: datetime | None = None,
) -> SlaReportOut:
    """SLA attainment, time to first touch and breaches, overall, by team and by rep."""
    end = aware(to) or utcnow()
    start = aware(from_) or end - timedelta(days=30)
    if start >= end:
        raise Problem(
            422,
            "'from' must be before 'to'",
            errors=[{"loc": "/query/from", "msg": "must be before 'to'"}],
        )
    async with runtime.engine.connect() as conn:
        rows = await repo.report_rows(conn, start, end)
    return SlaReportOut(from_=rfc3339(start), to=rfc3339(end), **report(rows))


class QueuedOut(BaseModel):
    """A lead waiting in a queue."""

    lead_id: str
    queue: str
    reason: str
    attempts: int
    queued_at: str


class QueuePageOut(BaseModel):
    """Queued leads, oldest first (one page: ``next_cursor`` is always null)."""

    items: list[QueuedOut]
    next_cursor: str | None = None


@router.get("/queue", dependencies=[ReadAuth])
async def list_queue(
    runtime: RuntimeDep, queue: str | None = None, limit: Limit = 100
) -> QueuePageOut:
    """Leads waiting for an owner (``unassigned``) or escalated (``escalations``)."""
    async with runtime.engine.connect() as conn:
        rows = await repo.queued(conn, queue, limit)
    return QueuePageOut(
        items=[
            QueuedOut(
                lead_id=r["lead_id"],
                queue=r["queue"],
                reason=r["reason"],
                attempts=r["attempts"],
                queued_at=rfc3339(r["created_at"]),
            )
            for r in rows
        ]
    )


class DeliveryOut(BaseModel):
    """One outbound webhook delivery (only the URL's host: for Slack, Zapier and the like the
    URL's path is the credential)."""

    id: str
    webhook: str
    host: str
    event_id: str
    event_type: str
    state: str
    attempts: int
    last_status: int | None
    last_error: str | None
    created_at: str
    next_attempt_at: str
    delivered_at: str | None


class DeliveryPageOut(BaseModel):
    """A page of the delivery log, newest first."""

    items: list[DeliveryOut]
    next_cursor: str | None


@router.get("/webhooks/deliveries", dependencies=[ReadAuth])
async def list_deliveries(
    runtime: RuntimeDep,
    state: Literal["pending", "delivered", "dead"] | None = None,
    limit: Limit = 50,
    cursor: str | None = None,
) -> DeliveryPageOut:
    """The outbound webhook delivery log, newest first."""
    # ASCII digits within a BIGINT ("²" is a digit to str.isdigit, not to int(); 30 digits
    # overflow the column): anything else is a client error, not a 500.
    if cursor is not None and not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 18):
        raise Problem(400, "cursor is not valid")
    before = int(cursor) if cursor else None
    async with runtime.engine.connect() as conn:
        rows = await queues.list_deliveries(conn, state=state, limit=limit + 1, before_id=before)
    more = len(rows) > limit
    rows = rows[:limit]
    items = [_delivery_out(r) for r in rows]
    return DeliveryPageOut(items=items, next_cursor=str(rows[-1]["id"]) if more else None)


def _delivery_out(r: Mapping[str, Any]) -> DeliveryOut:
    return DeliveryOut(
        id=str(r["id"]),
        webhook=r["webhook"],
        host=url_host(r["url"]),
        event_id=r["event_id"],
        event_type=r["event_type"],
        state=r["state"],
        attempts=r["attempts"],
        last_status=r["last_status"],
        last_error=r["last_error"],
        created_at=rfc3339(r["created_at"]),
        next_attempt_at=rfc3339(r["next_attempt_at"]),
        delivered_at=rfc3339(r["delivered_at"]) if r["delivered_at"] else None,
    )


@router.post(
    "/webhooks/deliveries/{delivery_id}/redeliver", status_code=202, dependencies=[AdminAuth]
)
async def redeliver_delivery(delivery_id: str, runtime: RuntimeDep, ctx: ContextDep) -> DeliveryOut:
    """Send a ``dead`` delivery again: it goes back to ``pending`` with its attempts reset and
    is sent (with the usual retries) to the webhook's current URL. 409 when it is not dead,
    when its webhook is no longer configured, or when it was given up because its lead was
    erased."""
    # ASCII digits within a BIGINT ("²" is a digit to str.isdigit, not to int()).
    if not (delivery_id.isascii() and delivery_id.isdigit() and len(delivery_id) <= 18):
        raise Problem(404, "no such delivery")
    configured = {h.name for h in ctx.config.webhooks}
    async with runtime.engine.begin() as conn:
        row = await webhook_store.get_delivery(conn, int(delivery_id))
        if row is None:
            raise Problem(404, "no such delivery")
        if row["webhook"] not in configured:
            raise Problem(409, f"webhook {row['webhook']!r} is no longer configured")
        if not await webhook_store.redeliver(conn, int(delivery_id), utcnow()):
            why = (
                "its lead was erased"
                if row["last_error"] == webhook_store.ERASED_ERROR
                else f"it is {row['state']}, not dead"
            )
            raise Problem(409, f"delivery {delivery_id} cannot be redelivered: {why}")
        row = await webhook_store.get_delivery(conn, int(delivery_id))
    ctx.after_commit()  # wake the webhook worker
    assert row is not None
    return _delivery_out(row)


class RedeliverIn(BaseModel):
    """Which dead deliveries to send again (all configured webhooks' when ``webhook`` is unset)."""

    model_config = ConfigDict(extra="forbid")
    webhook: str | None = None
    since: datetime | None = Field(
        default=None, description="Only deliveries created at or after this time (RFC 3339)."
    )


class RedeliveredOut(BaseModel):
    """How many dead deliveries went back to the queue."""

    redelivered: int


@router.post("/webhooks/deliveries/redeliver", status_code=202, dependencies=[AdminAuth])
async def redeliver_dead(body: RedeliverIn, runtime: RuntimeDep, ctx: ContextDep) -> RedeliveredOut:
    """Send every ``dead`` delivery (of one webhook, created since a time) again, e.g. after a
    receiver's outage; deliveries given up because their lead was erased are never resent."""
    configured = [h.name for h in ctx.config.webhooks]
    if body.webhook is not None and body.webhook not in configured:
        raise Problem(
            422,
            f"webhook {body.webhook!r} is not configured",
            errors=[{"loc": "/body/webhook", "msg": "not a configured webhook"}],
        )
    since = aware(body.since) if body.since is not None else None
    async with runtime.engine.begin() as conn:
        n = await webhook_store.redeliver_dead(
            conn,
            utcnow(),
            webhooks=[body.webhook] if body.webhook is not None else configured,
            since=since,
        )
    if n:
        ctx.after_commit()
    return RedeliveredOut(redelivered=n)
