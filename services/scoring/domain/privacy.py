"""What of an interaction survives an erasure: only what scoring needs, nothing personal."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_KEEP = ("occurred_at", "channel", "form_id", "intent", "asset", "webinar")


def scrub_interaction(data: Mapping[str, Any]) -> dict[str, Any]:
    """Interaction data without contact, identifiers, attribution URLs, custom fields or notes."""
    out: dict[str, Any] = {k: data.get(k) for k in _KEEP if k in data}
    track = data.get("track")
    if isinstance(track, Mapping):
        out["track"] = {"event": track.get("event"), "name": track.get("name"), "properties": {}}
    ad = data.get("ad")
    if isinstance(ad, Mapping):
        out["ad"] = {k: ad.get(k) for k in ("platform", "campaign_id", "ad_id", "is_test")}
    out["erased"] = True
    return out
