"""Queries on nurture's tables (:mod:`services.routing.nurture_tables`), PostgreSQL and SQLite.

Step timers follow the SLA timers' claim pattern: due rows are selected with
``FOR UPDATE SKIP LOCKED`` and leased on PostgreSQL, so replicas share them and a crashed
replica's claims come back when the lease ends (SQLite, one process, uses plain ordering);
firing flips a step from pending to fired with a conditional UPDATE, so exactly one caller wins.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.routing import leased_rows
from services.routing.nurture_tables import enrolments, leads, steps
from services.routing.repository import Row, rows_of
from shared.db import insert_for
from shared.events import rfc3339

# ---- the leads the stall scan looks at ---------------------------------------------------------


async def keep_lead(
    conn: AsyncConnection,
    lead_id: str,
    stage: str,
    last_activity_at: datetime,
    lead: Mapping[str, Any],
    now: datetime,
) -> None:
    """Remember (or refresh) a lead a stall rule may concern."""
    values = {
        "stage": stage,
        "last_activity_at": last_activity_at,
        "lead": dict(lead),
        "updated_at": now,
    }
    await conn.execute(
        insert_for(conn)(leads)
        .values(lead_id=lead_id, **values)
        .on_conflict_do_update(index_elements=["lead_id"], set_=values)
    )


async def forget_lead(conn: AsyncConnection, lead_id: str) -> None:
    """No stall rule concerns this lead any more (SQL, disqualified, erased, merged away)."""
    await conn.execute(delete(leads).where(leads.c.lead_id == lead_id))


async def stalled_leads(
    conn: AsyncConnection,
    stage: str,
    inactive_since: datetime,
    limit: int,
    after: str = "",
    *,
    track: str | None = None,
    again_after: datetime | None = None,
) -> list[Row]:
    """Leads at ``stage`` with no activity since ``inactive_since`` and not in a track, by id
    (page on with ``after``, the last id seen). With ``track``, leads that were in it are left
    out unless they left it before ``again_after`` (None: once in it, never again)."""
    busy = enrolments.c.state == "active"
    if track is not None:
        been = enrolments.c.track == track
        if again_after is not None:
            been = been & (enrolments.c.exited_at >= again_after)
        busy = busy | been
    q = (
        select(leads)
        .where(
            leads.c.stage == stage,
            leads.c.last_activity_at <= inactive_since,
            leads.c.lead_id > after,
            leads.c.lead_id.not_in(select(enrolments.c.lead_id).where(busy)),
        )
        .order_by(leads.c.lead_id)
        .limit(limit)
    )
    return rows_of(await conn.execute(q))


# ---- enrolments ---------------------------------------------------------------------------------


async def active_enrolment(conn: AsyncConnection, lead_id: str) -> Row | None:
    """The lead's enrolment in progress, if any (there is at most one)."""
    row = (
        await conn.execute(
            select(enrolments).where(
                enrolments.c.lead_id == lead_id, enrolments.c.state == "active"
            )
        )
    ).first()
    return dict(row._mapping) if row else None


async def actively_enrolled(conn: AsyncConnection, lead_ids: Sequence[str]) -> set[str]:
    """Which of these leads have an enrolment in progress (one read per 500 ids)."""
    found: set[str] = set()
    for i in range(0, len(lead_ids), 500):
        chunk = lead_ids[i : i + 500]
        rows = await conn.execute(
            select(enrolments.c.lead_id).where(
                enrolments.c.lead_id.in_(chunk), enrolments.c.state == "active"
            )
        )
        found.update(str(r[0]) for r in rows)
    return found


async def enrolment(conn: AsyncConnection, enrolment_id: str) -> Row | None:
    """One enrolment by id."""
    row = (await conn.execute(select(enrolments).where(enrolments.c.id == enrolment_id))).first()
    return dict(row._mapping) if row else None


async def enrolments_of(conn: AsyncConnection, lead_id: str) -> list[Row]:
    """Every enrolment of a lead, oldest first."""
    return rows_of(
        await conn.execute(
            select(enrolments)
            .where(enrolments.c.lead_id == lead_id)
            .order_by(enrolments.c.enrolled_at, enrolments.c.id)
        )
    )


async def add_enrolment(conn: AsyncConnection, row: Mapping[str, Any]) -> bool:
    """Start an enrolment; False if the id exists already (a replay)."""
    res = await conn.execute(
        insert_for(conn)(enrolments).values(**row).on_conflict_do_nothing(index_elements=["id"])
    )
    return bool(res.rowcount)


async def refresh_enrolment(
    conn: AsyncConnection,
    enrolment_id: str,
    lead: Mapping[str, Any],
    key: str | None,
    now: datetime,
) -> None:
    """Keep the lead as last seen on its enrolment (steps are announced with it)."""
    await conn.execute(
        update(enrolments)
        .where(enrolments.c.id == enrolment_id)
        .values(lead=dict(lead), lead_key=key, last_stage=str(lead.get("stage")), updated_at=now)
    )


async def advance(conn: AsyncConnection, enrolment_id: str, step_index: int, now: datetime) -> None:
    """The enrolment's next step is ``step_index``."""
    await conn.execute(
        update(enrolments)
        .where(enrolments.c.id == enrolment_id)
        .values(step_index=step_index, updated_at=now)
    )


async def end_enrolment(
    conn: AsyncConnection, enrolment_id: str, reason: str, now: datetime, stage: str | None = None
) -> bool:
    """Exit an active enrolment (the lead now at ``stage``, if known) and cancel its pending
    step; True only for the one caller that does."""
    values: dict[str, Any] = {"last_stage": stage} if stage else {}
    res = await conn.execute(
        update(enrolments)
        .where(enrolments.c.id == enrolment_id, enrolments.c.state == "active")
        .values(state="exited", exit_reason=reason, exited_at=now, updated_at=now, **values)
    )
    if not res.rowcount:
        return False
    await conn.execute(
        update(steps)
        .where(steps.c.enrolment_id == enrolment_id, steps.c.state == "pending")
        .values(state="cancelled", outcome=f"exited:{reason}", fired_at=now)
    )
    return True


async def scrub_enrolments(conn: AsyncConnection, lead_id: str) -> None:
    """Erasure: the lead's enrolments keep only its id."""
    await conn.execute(
        update(enrolments)
        .where(enrolments.c.lead_id == lead_id)
        .values(lead={"id": lead_id}, lead_key=None)
    )
    await forget_lead(conn, lead_id)


async def list_enrolments(
    conn: AsyncConnection,
    *,
    track: str | None,
    state: str | None,
    lead_id: str | None,
    limit: int,
) -> list[Row]:
    """Enrolments, newest first."""
    q = select(enrolments).order_by(enrolments.c.enrolled_at.desc(), enrolments.c.id).limit(limit)
    if track:
        q = q.where(enrolments.c.track == track)
    if state:
        q = q.where(enrolments.c.state == state)
    if lead_id:
        q = q.where(enrolments.c.lead_id == lead_id)
    return rows_of(await conn.execute(q))


async def track_figures(conn: AsyncConnection) -> list[Row]:
    """Every enrolment's track, state, exit reason, stages and times (for the KPIs)."""
    q = select(
        enrolments.c.track,
        enrolments.c.state,
        enrolments.c.exit_reason,
        enrolments.c.entry_stage,
        enrolments.c.last_stage,
        enrolments.c.enrolled_at,
        enrolments.c.exited_at,
    )
    return rows_of(await conn.execute(q))


# ---- step timers -------------------------------------------------------------------------------


async def add_step(
    conn: AsyncConnection,
    enrolment_id: str,
    lead_id: str,
    index: int,
    step_id: str,
    due_at: datetime,
) -> None:
    """The pending timer of an enrolment's step ``index`` (once per step)."""
    await conn.execute(
        insert_for(conn)(steps)
        .on_conflict_do_nothing(index_elements=["enrolment_id", "step_index"])
        .values(
            enrolment_id=enrolment_id,
            lead_id=lead_id,
            step_index=index,
            step_id=step_id,
            due_at=due_at,
            state="pending",
        )
    )


async def claim_due_steps(
    conn: AsyncConnection, owner: str, now: datetime, limit: int, lease_seconds: float
) -> list[Row]:
    """Due steps to fire; on PostgreSQL also leased to ``owner`` so replicas share the work."""
    return await leased_rows.claim_due(conn, steps, owner, now, limit, lease_seconds)


async def fire_step(conn: AsyncConnection, step_pk: int, now: datetime) -> bool:
    """Mark a step fired if it is still pending; True only for the one caller that does."""
    return await leased_rows.mark_fired(conn, steps, step_pk, now)


async def set_outcome(conn: AsyncConnection, step_pk: int, outcome: str) -> None:
    """What became of a fired step (``sent``, ``skipped_no_consent``, ``exited:<reason>``)."""
    await conn.execute(update(steps).where(steps.c.id == step_pk).values(outcome=outcome))


async def defer_step(conn: AsyncConnection, step_pk: int, until: datetime) -> None:
    """Firing failed: retry this step at ``until``."""
    await leased_rows.defer(conn, steps, step_pk, until)


async def next_step_due(conn: AsyncConnection, now: datetime) -> datetime | None:
    """When a pending step next becomes claimable (its due time, or its lease's end)."""
    return await leased_rows.next_due(conn, steps, now)


async def steps_of(conn: AsyncConnection, enrolment_ids: Sequence[str]) -> list[Row]:
    """The step history of enrolments, in order."""
    if not enrolment_ids:
        return []
    return rows_of(
        await conn.execute(
            select(steps)
            .where(steps.c.enrolment_id.in_(list(enrolment_ids)))
            .order_by(steps.c.enrolment_id, steps.c.step_index)
        )
    )


async def nurture_history(conn: AsyncConnection, lead_id: str) -> list[dict[str, Any]]:
    """A lead's tracks and the steps announced in each, oldest first, as published with its
    assignment (JSON-ready)."""
    enrolled = await enrolments_of(conn, lead_id)
    by_enrolment: dict[str, list[dict[str, Any]]] = {}
    for step in await steps_of(conn, [str(e["id"]) for e in enrolled]):
        if step["state"] == "fired" and step["fired_at"] is not None:
            by_enrolment.setdefault(str(step["enrolment_id"]), []).append(
                {
                    "step": step["step_id"],
                    "fired_at": rfc3339(step["fired_at"]),
                    "outcome": step["outcome"],
                }
            )
    return [
        {
            "track": e["track"],
            "enrolled_at": rfc3339(e["enrolled_at"]),
            "exited_at": rfc3339(e["exited_at"]) if e["exited_at"] else None,
            "exit_reason": e["exit_reason"],
            "steps": by_enrolment.get(str(e["id"]), []),
        }
        for e in enrolled
    ]


async def purge_exited(conn: AsyncConnection, before: datetime) -> tuple[int, int]:
    """Retention: enrolments that ended before ``before``, and their steps, are deleted;
    return (enrolments, steps) deleted."""
    old = select(enrolments.c.id).where(
        enrolments.c.state == "exited", enrolments.c.exited_at < before
    )
    s = await conn.execute(delete(steps).where(steps.c.enrolment_id.in_(old)))
    e = await conn.execute(
        delete(enrolments).where(enrolments.c.state == "exited", enrolments.c.exited_at < before)
    )
    return int(e.rowcount or 0), int(s.rowcount or 0)
