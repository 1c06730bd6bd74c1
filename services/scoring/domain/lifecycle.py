"""What happens to a lead: an interaction, a merge, a sales or routing event, time passing.

Each function mutates the lead in memory and returns the changes to announce; the handler
turns changes into ``leadflow.leads`` events. Stage and status only move forward here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.scoring.domain import engine
from services.scoring.domain.model import PROFILE_FIELDS, Hit, Lead, status_moves_forward
from services.scoring.domain.profile import text_value, trim_identifiers, update_profile
from services.scoring.domain.ruleset import Rules
from shared.contract import Interaction, Owner
from shared.events import LeadType, SalesType

#: Sales activity → the status it implies.
SALES_STATUS = {
    SalesType.CONTACTED: "prospect",
    SalesType.MEETING_BOOKED: "prospect",
    SalesType.OPPORTUNITY_CREATED: "prospect",
    SalesType.WON: "client",
    SalesType.LOST: "disqualified",
    SalesType.DISQUALIFIED: "disqualified",
}
#: A repeatable rule keeps at most this many hits per lead (a lead's state stays small).
MAX_HITS_PER_RULE = 50


@dataclass(frozen=True, slots=True)
class Change:
    """A lead event to announce: its type and the ``change`` part of its data."""

    type: str
    change: dict[str, Any] | None = None


def add_hits(
    lead: Lead, event_id: str, event_type: str, data: Mapping[str, Any], at: datetime, rules: Rules
) -> list[Hit]:
    """Apply the engagement rules to one interaction; an (event, rule) pair counts once."""
    added = []
    matching = engine.matching_rules(event_type, data, rules)
    if matching:
        # what the lead already counted: this event's rules, and the rules it has hits of
        # (from the index of its hits: a lead has up to 50 hits per repeatable rule, and an
        # event is seldom among them)
        known = engine.hit_index(lead.hits)
        counted = (
            {h.rule for h in lead.hits if h.event_id == event_id}
            if event_id in known.event_ids
            else set()
        )
        ruled = known.rules  # read-only: the rules this event adds go to ``counted``
        for rule in matching:
            if rule.id in counted or (not rule.repeatable and rule.id in ruled):
                continue
            hit = Hit(rule.id, rule.group, rule.points, at, event_id)
            lead.hits.append(hit)
            added.append(hit)
            counted.add(rule.id)
            _keep_latest(lead, rule.id)
    intent = data.get("intent")
    if isinstance(intent, str) and intent in rules.sales_intents:
        lead.sales_intent = True
    return added


def _keep_latest(lead: Lead, rule_id: str) -> None:
    """Bound a repeatable rule's history: its oldest hits (the most decayed) go first."""
    if len(lead.hits) <= MAX_HITS_PER_RULE:
        return
    mine = [h for h in lead.hits if h.rule == rule_id]
    if len(mine) > MAX_HITS_PER_RULE:
        drop = sorted(mine, key=lambda h: (h.at, h.event_id))[: len(mine) - MAX_HITS_PER_RULE]
        gone = {id(h) for h in drop}
        lead.hits = [h for h in lead.hits if id(h) not in gone]


def refresh(
    lead: Lead, rules: Rules, now: datetime, *, engaged_before: datetime | None = None
) -> list[Change]:
    """Recompute score, temperature, stage and status; return what changed.

    ``engaged_before`` is the lead's last engagement before the interaction being applied:
    a cold lead that had engaged before and warms up again is announced as reactivated.

    Only forward moves happen here: a stage or status set back by a person stays until the
    lead earns a higher one again. ``lead.qualified`` is announced the first time SQL is reached.
    """
    before = (lead.fit, lead.engagement, lead.total)
    card = engine.score(lead, rules, now)
    lead.fit, lead.engagement, lead.reasons = card.fit, card.engagement, card.reasons
    changes: list[Change] = []
    if (lead.fit, lead.engagement, lead.total) != before:
        changes.append(Change(LeadType.SCORED, {"from": before[2], "to": lead.total}))
    temp = engine.temperature(card.engagement, lead.last_engaged_at, rules, now)
    if temp != lead.temperature:
        change: dict[str, Any] = {"from": lead.temperature, "to": temp}
        if lead.temperature == "cold" and engaged_before is not None:
            change["reactivated"] = True
        changes.append(Change(LeadType.TEMPERATURE_CHANGED, change))
        lead.temperature = temp
    if card.disqualified_by and lead.disqualified_by is None:
        lead.disqualified_by = card.disqualified_by
        changes.extend(
            set_status(lead, "disqualified", automatic=True, reason=card.disqualified_by)
        )
    if lead.status != "disqualified":
        stage = engine.forward_stage(
            lead.stage, engine.earned_stage(card, lead.sales_intent, rules)
        )
        if stage != lead.stage:
            changes.append(Change(LeadType.STAGE_CHANGED, {"from": lead.stage, "to": stage}))
            if stage == "SQL" and lead.qualified_at is None:
                lead.qualified_at = now
                changes.append(Change(LeadType.QUALIFIED, {"from": lead.stage, "to": stage}))
            lead.mql_at = lead.mql_at or now
            lead.stage = stage
    return changes


def apply_interaction(
    lead: Lead,
    event_id: str,
    event_type: str,
    ix: Interaction,
    rules: Rules,
    now: datetime,
    *,
    data: Mapping[str, Any] | None = None,
) -> list[Change]:
    """One interaction: profile, identifiers' data, engagement hits, then a refresh.

    ``data`` is the event's data as received (what the timeline stores and a rescore replays);
    without it the rules match on ``ix.to_data()``.
    """
    engaged_before = lead.last_engaged_at
    consent_before = _marketing_consent(lead)
    at = ix.occurred_at
    update_profile(lead, ix, at)
    consent_changes = []
    if _marketing_consent(lead) != consent_before:
        # Announced even when nothing else moves: a withdrawal must stop nurture steps now,
        # not with the lead's next score change.
        change = {"from": consent_before, "to": _marketing_consent(lead)}
        consent_changes.append(Change(LeadType.CONSENT_CHANGED, change))
    if lead.first_form_id is None:
        lead.first_form_id = text_value(ix.form_id)
    # Rules match on paths into the event data (``asset.gated``), as stored in the timeline
    # and replayed by a rescore.
    if add_hits(lead, event_id, event_type, ix.to_data() if data is None else data, at, rules):
        lead.last_engaged_at = max(lead.last_engaged_at or at, at)
    lead.last_activity_at = max(lead.last_activity_at or at, at)
    return consent_changes + refresh(lead, rules, now, engaged_before=engaged_before)


def _marketing_consent(lead: Lead) -> bool | None:
    """The recorded marketing consent: True, False, or None when never stated."""
    value = (lead.consent or {}).get("marketing")
    return value if isinstance(value, bool) else None


def merge(into: Lead, other: Lead, rules: Rules, now: datetime) -> list[Change]:
    """Join ``other`` (typically an anonymous visitor) into ``into``: identifiers, hits, touches."""
    for email in other.emails:
        if email not in into.emails:
            into.emails.append(email)
    for phone in other.phones:
        if phone not in into.phones:
            into.phones.append(phone)
    for anon in other.anonymous_ids:
        if anon not in into.anonymous_ids:
            into.anonymous_ids.append(anon)
    for hit in other.hits:
        once = next((r for r in rules.engagement if r.id == hit.rule and not r.repeatable), None)
        if into.has_hit(hit.event_id, hit.rule) or (
            once and any(h.rule == hit.rule for h in into.hits)
        ):
            continue
        into.hits.append(hit)
    # two bounded histories joined can exceed the bound (review C5)
    for rule_id in {h.rule for h in into.hits}:
        _keep_latest(into, rule_id)
    trim_identifiers(into)
    for name in PROFILE_FIELDS:
        if getattr(into, name) is None and getattr(other, name) is not None:
            setattr(into, name, getattr(other, name))
    into.first_touch = _earliest_touch(into, other)
    into.sales_intent = into.sales_intent or other.sales_intent
    into.created_at = min(into.created_at, other.created_at)
    for name in ("last_activity_at", "last_engaged_at"):
        values = [v for v in (getattr(into, name), getattr(other, name)) if v]
        setattr(into, name, max(values) if values else None)
    changes = [Change(LeadType.MERGED, {"merged_ids": [other.id], "into": into.id})]
    return changes + refresh(into, rules, now)


def _earliest_touch(a: Lead, b: Lead) -> dict[str, Any] | None:
    if a.first_touch and b.first_touch:
        return a.first_touch if a.created_at <= b.created_at else b.first_touch
    return a.first_touch or b.first_touch


def set_status(
    lead: Lead, status: str, *, automatic: bool, reason: str | None = None
) -> list[Change]:
    """Move the status; automatic moves only go forward, a person may move it anywhere."""
    if status == lead.status or (automatic and not status_moves_forward(lead.status, status)):
        return []
    change: dict[str, Any] = {"from": lead.status, "to": status}
    if reason:
        change["reason"] = reason
    lead.status = status
    return [Change(LeadType.STATUS_CHANGED, change)]


def apply_sales(lead: Lead, event_type: str, at: datetime) -> list[Change]:
    """A sales activity: contacted/meeting → prospect, won → client, lost → disqualified."""
    status = SALES_STATUS.get(event_type)
    lead.last_activity_at = max(lead.last_activity_at or at, at)
    if status is None:
        return []
    return set_status(lead, status, automatic=True, reason=event_type.rsplit(".", 1)[-1])


def apply_assignment(lead: Lead, owner: Owner) -> list[Change]:
    """Routing assigned (or reassigned) the lead: remember its owner."""
    lead.owner = owner.to_data()
    return []


def override(lead: Lead, *, stage: str | None, status: str | None, now: datetime) -> list[Change]:
    """A person sets stage and/or status, in any direction."""
    changes: list[Change] = []
    if stage and stage != lead.stage:
        changes.append(
            Change(LeadType.STAGE_CHANGED, {"from": lead.stage, "to": stage, "manual": True})
        )
        if stage == "SQL" and lead.qualified_at is None:
            lead.qualified_at = now
            changes.append(Change(LeadType.QUALIFIED, {"from": lead.stage, "to": stage}))
        lead.stage = stage
    if status:
        changes.extend(set_status(lead, status, automatic=False, reason="manual"))
    return changes
