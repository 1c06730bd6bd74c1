"""A lead erased, disqualified or merged away: its assignment released and its data forgotten."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncConnection

from services.routing import durable_queues as queues
from services.routing import repository as repo
from services.routing.deps import RoutingContext
from services.routing.events import (
    scrub_body,
    scrub_data,
)
from services.routing.handlers.sales import close
from shared.events import (
    CloudEvent,
    LeadType,
    utcnow,
)
from shared.outbox import rewrite_rows

log = logging.getLogger(__name__)


async def on_lead_gone(conn: AsyncConnection, ctx: RoutingContext, ev: CloudEvent) -> None:
    """Erased or disqualified lead: close its clock, drop it from queues; erasure also scrubs
    the personal data kept in assignment snapshots."""
    lead = ev.data.get("lead")
    lead_id = str(lead.get("id")) if isinstance(lead, Mapping) and lead.get("id") else ev.subject
    if not lead_id:
        return
    if ev.type == LeadType.STATUS_CHANGED and (
        not isinstance(lead, Mapping) or lead.get("status") != "disqualified"
    ):
        return
    if ev.type != LeadType.ERASED:
        await repo.lock_person(conn, lead_id)
        lead_id, erased = await repo.resolve_lead(conn, lead_id)
        if erased:
            return
        await repo.lock_person(conn, lead_id)
        await _release(conn, ctx, lead_id)
        return
    now = utcnow()
    merged_ids = await repo.merged_into(conn, lead_id)
    for lid in sorted(merged_ids):  # merged-away ids before the survivor: see repo.lock_person
        await repo.lock_person(conn, lid)
    await repo.lock_person(conn, lead_id)  # a qualified racing this erasure waits, then sees it
    # The tombstone makes a later (or redelivered) qualified of this person a no-op; what was
    # kept under ids merged into this lead is this person's data too.
    await repo.add_tombstone(conn, lead_id, "erased", now)
    ids = [lead_id, *merged_ids]
    for lid in ids:
        await _release(conn, ctx, lid)
        await repo.scrub_lead(conn, lid)
        # Consumers of routing events read the owner and ids, not the lead snapshot, so unsent
        # rows are scrubbed too; a published row's key (an email or phone) becomes the lead id.
        await rewrite_rows(conn, ctx.source, scrub_data, subject=lid, unsent=True, sent_key=lid)
    await queues.scrub_deliveries(conn, ids, scrub_body, now)


async def _release(conn: AsyncConnection, ctx: RoutingContext, lead_id: str) -> None:
    """Close the lead's active assignment (its timers stop) and drop it from every queue."""
    a = await repo.active_assignment(conn, lead_id)
    if a is not None:
        await close(conn, ctx, a)
    await repo.take_from_queue(conn, lead_id)


async def on_merged(conn: AsyncConnection, ctx: RoutingContext, ev: CloudEvent) -> None:
    """Scoring merged leads into one person: that person keeps at most one live assignment.

    A merged-away lead's live assignment is handed to the survivor when the survivor has none
    (same owner, same SLA clock), else closed with its timers; its queue entry likewise moves
    or goes. A tombstone makes the merged-away id follow the survivor from now on.
    """
    data = ev.data
    lead = data.get("lead")
    change = data.get("change")
    if not isinstance(lead, Mapping) or not isinstance(change, Mapping):
        raise ValueError("lead.merged without data.lead or data.change")
    into = str(change.get("into") or lead.get("id") or ev.subject or "")
    merged = change.get("merged_ids")
    if not into or not isinstance(merged, list):
        raise ValueError("lead.merged without change.into or change.merged_ids")
    others = sorted({str(m) for m in merged if m and str(m) != into})
    for other in others:  # merged-away ids before the survivor: see repo.lock_person
        await repo.lock_person(conn, other)
    await repo.lock_person(conn, into)
    survivor, erased = await repo.resolve_lead(conn, into)
    if survivor != into:
        await repo.lock_person(conn, survivor)
    now = utcnow()
    for other in others:
        await repo.add_tombstone(conn, other, "merged", now, into=into)
        if erased:
            await _release(conn, ctx, other)  # the survivor is gone: so is this
            continue
        snapshot = {**lead, "id": survivor}
        old = await repo.active_assignment(conn, other)
        keep = await repo.active_assignment(conn, survivor)
        if old is not None and keep is None:
            await repo.repoint_assignment(conn, old.id, survivor, snapshot, now)
            await repo.take_from_queue(conn, survivor)  # it has an owner now
        elif old is not None:
            await close(conn, ctx, old)
        queued = await repo.take_from_queue_row(conn, other)
        if (
            queued is not None
            and old is None
            and keep is None
            and not await repo.lead_known(conn, survivor)
        ):
            await repo.queue_lead(
                conn,
                {**queued, "lead_id": survivor, "lead_key": snapshot.get("key"), "lead": snapshot},
            )
