"""Who is this? Identity resolution of one interaction against known leads (pure).

Email first, then phone, then anonymous id. A lead found through a weaker identifier is only
used, or merged in, when it does not belong to a different identified person: two different
emails are never merged; the clash is recorded for a person to review.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.scoring.domain.identity import ANON, EMAIL, PHONE, Identifiers
from services.scoring.domain.model import Lead


@dataclass(slots=True)
class Resolution:
    """The lead an interaction belongs to (None: a new one), who joins it, and what clashed."""

    lead_id: str | None
    merge_ids: list[str] = field(default_factory=list)
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    #: identifiers that already point at another person's lead and must not be re-pointed
    foreign: set[tuple[str, str]] = field(default_factory=set)


def _other_person(lead: Lead, email: str | None) -> bool:
    """Whether ``lead`` is identified as someone other than the owner of ``email``."""
    return bool(email and lead.emails and email not in lead.emails)


def resolve(
    ids: Identifiers, index: Mapping[tuple[str, str], str], leads: Mapping[str, Lead]
) -> Resolution:
    """Resolve identifiers to a lead using ``index`` ((kind, value) → lead id) and ``leads``."""
    found: list[tuple[tuple[str, str], Lead]] = []
    for pair in ids.pairs():
        lead_id = index.get(pair)
        if lead_id is not None and lead_id in leads:
            found.append((pair, leads[lead_id]))
    res = Resolution(lead_id=None)
    primary: Lead | None = None
    for pair, lead in found:
        if primary is None:
            if pair[0] == EMAIL or not _other_person(lead, ids.email):
                primary = lead
                res.lead_id = lead.id
                continue
        elif lead.id == primary.id or lead.id in res.merge_ids:
            continue
        elif (
            not (primary.emails and lead.emails and not set(primary.emails) & set(lead.emails))
            and not _other_person(lead, ids.email)
            and not _other_person(primary, lead.email)
        ):
            # The weaker identifier's lead is anonymous, or the same person: join it.
            res.merge_ids.append(lead.id)
            continue
        res.foreign.add(pair)
        res.conflicts.append(
            {
                "identifier": {"kind": pair[0], "value": pair[1]},
                "other_lead_id": lead.id,
                "reason": "identifier belongs to a different identified person",
            }
        )
    return res


__all__ = ["ANON", "EMAIL", "PHONE", "Resolution", "resolve"]
