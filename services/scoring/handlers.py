"""Consumed events → domain → repository and outbox: one consumer batch, one unit of work.

The ConsumerRunner has already claimed the batch's event ids (the inbox) in this transaction,
so an event redelivered after a crash is never applied twice. A batch is first read into its
``shared.contract`` types (:func:`parse`; one out of contract raises :class:`InvalidEvent` and
is dead-lettered alone), then all its leads are loaded at once (:func:`load_batch`), each event
is applied in memory by its :data:`EVENT_HANDLERS` entry, and everything is written back once
(:meth:`LeadRepository.commit`). An erasure request is the exception: it splits the batch. On
PostgreSQL a large batch is written in parts of :data:`WRITE_AHEAD_EVERY` events, each while
the next part is applied (same transaction), until something is merged, dropped or deleted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.scoring import commands, repository
from services.scoring.domain import lifecycle, profile
from services.scoring.domain.identity import (
    ANON,
    EMAIL,
    MERGED,
    PHONE,
    Identifiers,
    identifier_hash,
    identifiers_of,
)
from services.scoring.domain.lifecycle import Change
from services.scoring.domain.model import Lead
from services.scoring.domain.resolution import resolve
from services.scoring.domain.ruleset import Rules
from services.scoring.events import lead_events
from services.scoring.lead_cache import LeadCache
from services.scoring.repository import LeadRepository
from shared.contract import Assigned, Interaction, SalesActivity
from shared.events import (
    INTERACTION_TYPES,
    SALES_TYPES,
    CloudEvent,
    InteractionType,
    LeadType,
    RoutingType,
    derived_event_id,
    utcnow,
)
from shared.topics import Topics

log = logging.getLogger(__name__)

ASSIGNMENT_TYPES = frozenset({RoutingType.ASSIGNED, RoutingType.REASSIGNED})
#: What a person does on purpose (a form, a download, a webinar, an ad form): what can make a
#: lead hot or sales-qualified. The consumer applies these leads' events before the rest of
#: their batch (mostly page views), so speed to lead does not grow with the tracking traffic.
URGENT_TYPES = INTERACTION_TYPES - {
    InteractionType.TRACKED,
    InteractionType.IDENTIFIED,
    InteractionType.ERASURE_REQUESTED,
}


#: A batch's rows are written every so many events, while the next ones are applied
#: (PostgreSQL; see :meth:`ScoringHandler._apply`). Smaller parts overlap more of the
#: database's work but each write has a fixed cost (planning, a round trip).
WRITE_AHEAD_EVERY = 128
#: While a write runs, the loop gets a turn every so many events (to send the rest of it).
_YIELD_EVERY = 16


def is_urgent(ev: CloudEvent) -> bool:
    """Whether the consumer applies this event's lead before the rest of its batch."""
    return ev.type in URGENT_TYPES


#: A consumed event read once, at the edge: its typed data (None: not one scoring applies).
Message = Interaction | SalesActivity | Assigned | None


def parse(ev: CloudEvent) -> Message:
    """The typed data of an event; :class:`InvalidEvent` (dead-lettered) when out of contract."""
    if ev.type in INTERACTION_TYPES:
        return Interaction.from_data(ev.data)
    if ev.type in SALES_TYPES:
        return SalesActivity.from_data(ev.data)
    if ev.type in ASSIGNMENT_TYPES:
        return Assigned.from_data(ev.data)
    return None


@dataclass(slots=True)
class Batch:
    """One batch in memory: its leads, their identity index, and what it will write."""

    repo: LeadRepository
    rules: Rules
    now: datetime
    #: (kind, value) → lead id, for every identifier the batch names
    index: dict[tuple[str, str], str]
    #: each interaction's identifiers and their hashes, by event id
    ids_of: dict[str, Identifiers]
    hashes_of: dict[str, list[str]]
    #: the hashes among them that belong to erased people
    erased: set[str]
    out: list[CloudEvent] = field(default_factory=list)
    merges: list[tuple[str, str]] = field(default_factory=list)
    consented: list[str] = field(default_factory=list)


#: Applies one event (its typed data) to a loaded batch, in memory.
EventHandler = Callable[[Batch, CloudEvent, Any], None]


class ScoringHandler:
    """The ConsumerRunner's batch handler: interaction, routing and sales events to leads."""

    def __init__(
        self,
        rules: Rules,
        topics: Topics,
        clock: Callable[[], datetime] = utcnow,
        cache: LeadCache | None = None,
    ) -> None:
        self.rules = rules
        self.topics = topics
        self.clock = clock
        #: the leads this consumer wrote last (a lead's events come from one partition)
        self.cache = LeadCache() if cache is None else cache

    async def __call__(self, conn: AsyncConnection, events: Sequence[CloudEvent]) -> None:
        """Apply a batch in order.

        Every event is read before anything is written: one out of contract raises, and the
        runner applies the batch again one event at a time, dead-lettering only that one. An
        erasure request splits the batch: what came before it is written first, then the
        erasure, then what came after (which then sees the erased identifiers).
        """
        batch = [(ev, parse(ev)) for ev in events]
        now = self.clock()
        run: list[tuple[CloudEvent, Any]] = []
        for ev, msg in batch:
            if isinstance(msg, Interaction) and ev.type == InteractionType.ERASURE_REQUESTED:
                if run:
                    await self._apply(conn, run, now)
                    run = []
                await erase_requested(conn, self.topics, ev, msg, now)
            elif ev.type in EVENT_HANDLERS:
                run.append((ev, msg))
        if run:
            await self._apply(conn, run, now)

    async def _apply(
        self, conn: AsyncConnection, run: Sequence[tuple[CloudEvent, Any]], now: datetime
    ) -> None:
        repo = LeadRepository(conn, self.topics.leads, self.cache)
        b = await load_batch(repo, run, self.rules, now)
        ahead: asyncio.Task[None] | None = None
        try:
            for n, (ev, msg) in enumerate(run, 1):
                EVENT_HANDLERS[ev.type](b, ev, msg)
                if n % WRITE_AHEAD_EVERY == 0 and n < len(run) and repo.can_write_ahead():
                    # This part's rows go to PostgreSQL while the next part is applied here:
                    # the database's work (about a third of a batch's) overlaps this
                    # process's instead of following it. One write at a time on the
                    # connection; write_ahead takes and encodes the rows before returning.
                    if ahead is not None:
                        await ahead
                    ahead = asyncio.ensure_future(repo.write_ahead(now, b.out))
                    b.out = []
                    await asyncio.sleep(0)  # the task sends its rows now
                elif ahead is not None and n % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # the driver sends the rest of a large write
            if ahead is not None:
                await ahead
            ahead = None
        finally:
            if ahead is not None:
                # a failure while the write runs: the connection is free again (for the
                # rollback) only once it ends; its own error, if any, is not this one
                await asyncio.wait([ahead])
                if not ahead.cancelled():
                    ahead.exception()
        await repository.forget_erased(conn, b.consented)
        await b.repo.commit(now, b.out, merges=b.merges)


async def load_batch(
    repo: LeadRepository, run: Sequence[tuple[CloudEvent, Any]], rules: Rules, now: datetime
) -> Batch:
    """Everything the batch's events need, read at once: the leads they name, and which of
    their identifiers belong to erased people."""
    ids_of = {ev.id: identifiers_of(msg, ev.key) for ev, msg in run if isinstance(msg, Interaction)}
    hashes_of = {
        eid: [identifier_hash(k, v) for k, v in ids.pairs()] for eid, ids in ids_of.items()
    }
    refs = [
        msg.lead_id for _, msg in run if isinstance(msg, SalesActivity | Assigned) and msg.lead_id
    ]
    sales_emails = [msg.email for _, msg in run if isinstance(msg, SalesActivity) and msg.email]
    pairs = [p for i in ids_of.values() for p in i.pairs()]
    pairs += [(MERGED, r) for r in refs] + [(EMAIL, m) for m in sales_emails]
    index = await repo.find_identities(pairs)
    await repo.load(set(index.values()) | set(refs))
    await _reread_vanished(repo, index)
    # Read the erasure block only now, holding the leads' locks: an erasure that committed
    # while we waited for a lock (PostgreSQL) has remembered its hashes and dropped the
    # lead's identifiers, so the index read before the lock is stale for that lead. Using
    # it would put the person's data back on the erased lead (review H2).
    for pair, lead_id in list(index.items()):
        if repo.loaded[lead_id].erased_at is not None:
            del index[pair]
    erased = await repository.erased_among(repo.conn, [h for hs in hashes_of.values() for h in hs])
    return Batch(repo, rules, now, index, ids_of, hashes_of, erased)


def _on_interaction(b: Batch, ev: CloudEvent, ix: Interaction) -> None:
    """Find or create the person's lead (merging an anonymous one it turns out to be), then
    profile, engagement and score."""
    ids = b.ids_of[ev.id]
    blocked = [h for h in b.hashes_of[ev.id] if h in b.erased]
    if blocked:
        if not _new_consent(ix):
            log.info("event %s: erased person without new consent; ignored", ev.id)
            return
        b.erased.difference_update(blocked)
        b.consented += blocked
    if not ids.pairs():
        log.info("event %s has no email, phone or anonymous id; ignored", ev.id)
        return
    repo, index = b.repo, b.index
    res = resolve(ids, index, repo.loaded)
    # identifiers the lead (or those it absorbs) may drop to stay bounded, see below
    candidates = {p for p in ids.pairs() if p[0] in (EMAIL, PHONE, ANON)}
    for lead_id in [res.lead_id, *res.merge_ids]:
        if lead_id is not None:
            candidates |= profile.identifier_pairs(repo.loaded[lead_id])
    changes: list[Change] = []
    if res.lead_id is None:
        lead = profile.new_lead(derived_event_id(ev.id, "lead", ids.key or ""), ids, b.now)
        repo.add(lead)
        changes.append(Change(LeadType.CREATED))
    else:
        lead = repo.loaded[res.lead_id]
    for other_id in res.merge_ids:
        other = repo.loaded[other_id]
        changes += lifecycle.merge(lead, other, b.rules, b.now)
        repo.remove(other_id)
        b.merges.append((other_id, lead.id))
        repo.add_identity(MERGED, other_id, lead.id)
        for pair, owner in list(index.items()):
            if owner == other_id:
                index[pair] = lead.id
    for pair in ids.pairs():
        if pair not in index and pair not in res.foreign:
            index[pair] = lead.id
            repo.add_identity(pair[0], pair[1], lead.id)
    # identifiers that belong to someone else are not taken over (see resolution)
    profile.add_identifiers(lead, ids.without(res.foreign))
    # The lead keeps only its latest identifiers (review C5); the index rows of those it
    # dropped go too, so neither the state nor the index grows without bound.
    kept = profile.identifier_pairs(lead)
    for pair in candidates - kept:
        # not in this batch's index: an identifier the lead listed, so its row is the
        # lead's (the delete checks the owner anyway)
        if index.get(pair, lead.id) == lead.id:
            index.pop(pair, None)
            repo.drop_identity(pair[0], pair[1], lead.id)
    changes += lifecycle.apply_interaction(lead, ev.id, ev.type, ix, b.rules, b.now, data=ev.data)
    at = ix.occurred_at
    repo.touch(lead)
    repo.add_timeline(lead.id, at, "interaction", ev.type, ev.id, dict(ev.data))
    for conflict in res.conflicts:
        repo.add_timeline(lead.id, at, "identity_conflict", "identity_conflict", ev.id, conflict)
    _record(b, lead, changes, ev)


def _on_sales(b: Batch, ev: CloudEvent, activity: SalesActivity) -> None:
    """Sales activity moves the status forward (contacted → prospect, won → client …)."""
    lead = _referenced(b, activity.lead_id, activity.email)
    if lead is None:
        log.info("event %s: no lead for %s; ignored", ev.id, ev.type)
        return
    at = activity.occurred_at or ev.time
    changes = lifecycle.apply_sales(lead, ev.type, at)
    b.repo.touch(lead)
    b.repo.add_timeline(lead.id, at, "sales", ev.type, ev.id, dict(ev.data))
    _record(b, lead, changes, ev)


def _on_assignment(b: Batch, ev: CloudEvent, assigned: Assigned) -> None:
    """Routing assigned (or reassigned) the lead: it has an owner."""
    lead = _referenced(b, assigned.lead_id, None)
    if lead is None:
        log.info("event %s: no lead for %s; ignored", ev.id, ev.type)
        return
    at = assigned.assigned_at
    changes = lifecycle.apply_assignment(lead, assigned.owner)
    b.repo.touch(lead)
    b.repo.add_timeline(lead.id, at, "routing", ev.type, ev.id, dict(ev.data))
    _record(b, lead, changes, ev)


#: What each consumed event type does (an erasure request splits the batch instead, see
#: :class:`ScoringHandler`); other types are not scoring's business.
EVENT_HANDLERS: dict[str, EventHandler] = {
    **dict.fromkeys(INTERACTION_TYPES - {InteractionType.ERASURE_REQUESTED}, _on_interaction),
    **dict.fromkeys(SALES_TYPES, _on_sales),
    **dict.fromkeys(ASSIGNMENT_TYPES, _on_assignment),
}


def _record(b: Batch, lead: Lead, changes: Sequence[Change], ev: CloudEvent) -> None:
    """The lead's changes caused by ``ev``: in its timeline, and as events to publish."""
    for change in changes:
        b.repo.add_timeline(lead.id, b.now, "change", change.type, ev.id, change.change or {})
    b.out += lead_events(lead, changes, ev.id, ev.type, b.now)


async def erase_requested(
    conn: AsyncConnection, topics: Topics, ev: CloudEvent, ix: Interaction, now: datetime
) -> None:
    """Erase the lead the request names (as DELETE /v1/leads/{id} does), or, if there is
    none, remember the identifiers' hashes so the person is not created without consent."""
    ids = identifiers_of(ix, ev.key)
    if not ids.pairs():
        log.info("erasure request %s names no email, phone or anonymous id; ignored", ev.id)
        return
    repo = LeadRepository(conn, topics.leads)
    index = await repo.find_identities(ids.pairs())
    await repo.load(set(index.values()))
    await _reread_vanished(repo, index)
    res = resolve(ids, index, repo.loaded)
    # an identifier that belongs to another identified person is not theirs to block
    hashes = [identifier_hash(k, v) for k, v in ids.pairs() if (k, v) not in res.foreign]
    targets = [res.lead_id, *res.merge_ids] if res.lead_id else []
    details = _erasure_details(ix)
    for lead_id in targets:
        await commands.erase_lead(
            conn,
            topics,
            lead_id,
            now,
            cause_id=ev.id,
            cause_type=ev.type,
            details=details,
            extra_hashes=hashes,
        )
    if not targets:
        log.info("erasure request %s matches no lead; identifiers remembered", ev.id)
        await repository.remember_erased(conn, hashes, now)


async def _reread_vanished(repo: LeadRepository, index: dict[tuple[str, str], str]) -> None:
    """Re-read identifiers whose lead vanished between the identity read and the lead's lock.

    Another replica merged that lead away meanwhile (PostgreSQL: our lock waited for its
    commit); the identifiers now point at the survivor, which a fresh read (READ COMMITTED)
    sees. Without this, the event would create a second lead for a known person.
    """
    for _ in range(3):
        stale = [pair for pair, lead_id in index.items() if lead_id not in repo.loaded]
        if not stale:
            return
        for pair in stale:
            del index[pair]
        fresh = await repo.find_identities(stale)
        index.update(fresh)
        await repo.load(set(fresh.values()))
    for pair in [p for p, lead_id in index.items() if lead_id not in repo.loaded]:
        del index[pair]  # a new identity row for it collides, and the runner retries


def _referenced(b: Batch, lead_id: str | None, email: str | None) -> Lead | None:
    """The lead an event names by id (or a merged-away id), else by email."""
    loaded, index = b.repo.loaded, b.index
    if lead_id:
        lead = loaded.get(lead_id) or loaded.get(index.get((MERGED, lead_id), ""))
        if lead is not None:
            return lead
    return loaded.get(index.get((EMAIL, email), "")) if email else None


def _erasure_details(ix: Interaction) -> dict[str, Any]:
    """What the timeline keeps of an erasure request: who asked and why, nothing personal."""
    reason = ix.part("custom").get("reason")
    platform = ix.part("ad").get("platform")
    return {
        "by": "event",
        "channel": ix.channel,
        "platform": platform if isinstance(platform, str) else None,
        "reason": reason[:200] if isinstance(reason, str) else None,
    }


def _new_consent(ix: Interaction) -> bool:
    return ix.part("consent").get("marketing") is True
