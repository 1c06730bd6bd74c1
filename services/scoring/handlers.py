"""Event → domain → repository and outbox, one consumer batch in one unit of work.

The ConsumerRunner has already claimed the batch's event ids (the inbox) in this transaction,
so an event redelivered after a crash is never applied twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import orjson
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
    normalise_email,
)
from services.scoring.domain.lifecycle import Change
from services.scoring.domain.model import Lead
from services.scoring.domain.resolution import resolve
from services.scoring.domain.rules import Rules
from services.scoring.outgoing import SOURCE, lead_events
from services.scoring.repository import LeadRepository
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
from shared.outbox import enqueue
from shared.topics import Topics

log = logging.getLogger(__name__)

ASSIGNMENT_TYPES = frozenset({RoutingType.ASSIGNED, RoutingType.REASSIGNED})


class ScoringHandler:
    """Applies a batch of interaction, routing and sales events to leads."""

    def __init__(
        self, rules: Rules, topics: Topics, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.rules = rules
        self.topics = topics
        self.clock = clock

    async def __call__(self, conn: AsyncConnection, events: Sequence[CloudEvent]) -> None:
        """The ConsumerRunner's batch handler.

        An erasure request splits the batch: what came before it is written first, then the
        erasure, then what came after (which then sees the erased identifiers), in order.
        """
        now = self.clock()
        run: list[CloudEvent] = []
        for ev in (_without_nul(e) for e in events):
            if ev.type != InteractionType.ERASURE_REQUESTED:
                run.append(ev)
                continue
            if run:
                await self._apply(conn, run, now)
                run = []
            await self._erase(conn, ev, now)
        if run:
            await self._apply(conn, run, now)

    async def _erase(self, conn: AsyncConnection, ev: CloudEvent, now: datetime) -> None:
        """Erase the lead the request names (as DELETE /v1/leads/{id} does), or, if there is
        none, remember the identifiers' hashes so the person is not created without consent."""
        ids = identifiers_of(dict(ev.data), ev.key)
        if not ids.pairs():
            log.info("erasure request %s names no email, phone or anonymous id; ignored", ev.id)
            return
        repo = LeadRepository(conn)
        index = await repo.find_identities(ids.pairs())
        await repo.load(set(index.values()))
        await _settle(repo, index)
        res = resolve(ids, index, repo.loaded)
        # an identifier that belongs to another identified person is not theirs to block
        hashes = [identifier_hash(k, v) for k, v in ids.pairs() if (k, v) not in res.foreign]
        targets = [res.lead_id, *res.merge_ids] if res.lead_id else []
        details = _erasure_details(ev)
        for lead_id in targets:
            await commands.erase_lead(
                conn,
                self.topics,
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

    async def _apply(
        self, conn: AsyncConnection, events: Sequence[CloudEvent], now: datetime
    ) -> None:
        repo = LeadRepository(conn)
        ids_of = {
            e.id: identifiers_of(dict(e.data), e.key) for e in events if e.type in INTERACTION_TYPES
        }
        hashes_of = {
            eid: [identifier_hash(k, v) for k, v in ids.pairs()] for eid, ids in ids_of.items()
        }
        refs = [
            str(e.data["lead_id"])
            for e in events
            if e.type not in INTERACTION_TYPES and e.data.get("lead_id")
        ]
        sales_emails = [
            normalise_email(e.data.get("email")) for e in events if e.type in SALES_TYPES
        ]
        pairs = [p for i in ids_of.values() for p in i.pairs()]
        pairs += [(MERGED, r) for r in refs] + [(EMAIL, m) for m in sales_emails if m]
        index = await repo.find_identities(pairs)
        await repo.load(set(index.values()) | set(refs))
        await _settle(repo, index)
        # Read the erasure block only now, holding the leads' locks: an erasure that committed
        # while we waited for a lock (PostgreSQL) has remembered its hashes and dropped the
        # lead's identifiers, so the index read before the lock is stale for that lead. Using
        # it would put the person's data back on the erased lead (review H2).
        for pair, lead_id in list(index.items()):
            if repo.loaded[lead_id].erased_at is not None:
                del index[pair]
        erased = await repository.erased_among(conn, [h for hs in hashes_of.values() for h in hs])
        out: list[CloudEvent] = []
        merges: list[tuple[str, str]] = []
        consented: list[str] = []
        for ev in events:
            if ev.type in INTERACTION_TYPES:
                ids = ids_of[ev.id]
                blocked = [h for h in hashes_of[ev.id] if h in erased]
                if blocked:
                    if not _new_consent(ev.data):
                        log.info("event %s: erased person without new consent; ignored", ev.id)
                        continue
                    erased.difference_update(blocked)
                    consented += blocked
                out += self._interaction(repo, index, ev, ids, merges, now)
            elif ev.type in ASSIGNMENT_TYPES or ev.type in SALES_TYPES:
                lead = self._referenced(repo, index, ev)
                if lead is None:
                    log.info("event %s: no lead for %s; ignored", ev.id, ev.type)
                    continue
                at = profile.event_time(ev.data, ev.time)
                if ev.type in SALES_TYPES:
                    changes = lifecycle.apply_sales(lead, ev.type, at)
                else:
                    changes = lifecycle.apply_assignment(lead, ev.data)
                repo.touch(lead)
                repo.add_timeline(
                    lead.id,
                    at,
                    "sales" if ev.type in SALES_TYPES else "routing",
                    ev.type,
                    ev.id,
                    dict(ev.data),
                )
                self._record(repo, lead, changes, ev, now)
                out += lead_events(lead, changes, ev.id, ev.type, now)
        await repository.forget_erased(conn, consented)
        await repo.flush(now, merges=merges)
        await enqueue(conn, SOURCE, self.topics.leads, out)

    def _referenced(
        self, repo: LeadRepository, index: dict[tuple[str, str], str], ev: CloudEvent
    ) -> Lead | None:
        ref = ev.data.get("lead_id")
        if ref:
            ref = str(ref)
            lead = repo.loaded.get(ref) or repo.loaded.get(index.get((MERGED, ref), ""))
            if lead is not None:
                return lead
        email = normalise_email(ev.data.get("email"))
        return repo.loaded.get(index.get((EMAIL, email), "")) if email else None

    def _interaction(
        self,
        repo: LeadRepository,
        index: dict[tuple[str, str], str],
        ev: CloudEvent,
        ids: Identifiers,
        merges: list[tuple[str, str]],
        now: datetime,
    ) -> list[CloudEvent]:
        if not ids.pairs():
            log.info("event %s has no email, phone or anonymous id; ignored", ev.id)
            return []
        res = resolve(ids, index, repo.loaded)
        # identifiers the lead (or those it absorbs) may drop to stay bounded, see below
        candidates = {p for p in ids.pairs() if p[0] in (EMAIL, PHONE, ANON)}
        for lead_id in [res.lead_id, *res.merge_ids]:
            if lead_id is not None:
                candidates |= profile.identifier_pairs(repo.loaded[lead_id])
        changes: list[Change] = []
        if res.lead_id is None:
            lead = profile.new_lead(derived_event_id(ev.id, "lead", ids.key or ""), ids, now)
            repo.add(lead)
            changes.append(Change(LeadType.CREATED))
        else:
            lead = repo.loaded[res.lead_id]
        for other_id in res.merge_ids:
            other = repo.loaded[other_id]
            changes += lifecycle.merge(lead, other, self.rules, now)
            repo.remove(other_id)
            merges.append((other_id, lead.id))
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
        at = profile.event_time(ev.data, ev.time)
        changes += lifecycle.apply_interaction(lead, ev.id, ev.type, ev.data, at, self.rules, now)
        repo.touch(lead)
        repo.add_timeline(lead.id, at, "interaction", ev.type, ev.id, dict(ev.data))
        for conflict in res.conflicts:
            repo.add_timeline(
                lead.id, at, "identity_conflict", "identity_conflict", ev.id, conflict
            )
        self._record(repo, lead, changes, ev, now)
        return lead_events(lead, changes, ev.id, ev.type, now)

    @staticmethod
    def _record(
        repo: LeadRepository, lead: Lead, changes: Sequence[Change], ev: CloudEvent, now: datetime
    ) -> None:
        for change in changes:
            repo.add_timeline(lead.id, now, "change", change.type, ev.id, change.change or {})


async def _settle(repo: LeadRepository, index: dict[tuple[str, str], str]) -> None:
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


def _erasure_details(ev: CloudEvent) -> dict[str, Any]:
    """What the timeline keeps of an erasure request: who asked and why, nothing personal."""
    data = dict(ev.data)
    custom, ad, channel = data.get("custom"), data.get("ad"), data.get("channel")
    reason = custom.get("reason") if isinstance(custom, dict) else None
    platform = ad.get("platform") if isinstance(ad, dict) else None
    return {
        "by": "event",
        "channel": channel if isinstance(channel, str) else None,
        "platform": platform if isinstance(platform, str) else None,
        "reason": reason[:200] if isinstance(reason, str) else None,
    }


def _new_consent(data: Any) -> bool:
    consent = data.get("consent") if hasattr(data, "get") else None
    return isinstance(consent, dict) and consent.get("marketing") is True


def _without_nul(ev: CloudEvent) -> CloudEvent:
    """PostgreSQL JSON cannot store NUL characters: drop them from the event's data."""
    if "\\u0000" not in orjson.dumps(ev.data).decode():
        return ev
    return replace(ev, data=_strip(ev.data))


def _strip(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_strip(k): _strip(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value
