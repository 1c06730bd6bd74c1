"""Capture's use cases: submitted fields, already read from their request, become a durable
interaction event. No HTTP here: the routes (``api_*.py``) read requests and render answers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import orjson

from services.capture.deps import CaptureContext
from services.capture.domain.interaction import FormSettings, build_interaction
from services.capture.events import interaction_event, submission_event_id
from services.capture.intake import Accepted, Submission
from shared.contract import Channel
from shared.events import new_event_id


@dataclass(frozen=True, slots=True)
class CaptureInteraction:
    """Capture one interaction from submitted fields: a form submission, a content download,
    a webinar registration or an attendance report."""

    event_type: str
    channel: Channel
    #: Where an idempotency key is unique (``form:<id>``, ``download``, ``webinar:<id>`` …).
    scope: str
    fields: Mapping[str, Any]
    form: FormSettings | None = None
    #: Parts of the interaction the route knows itself (``asset``, ``webinar``).
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: With a key, a repeat of the submission is the same event and is published once.
    idempotency_key: str | None = None
    #: Of a client-chosen key: the request's fingerprint (:func:`request_fingerprint`).
    fingerprint: str | None = None


def request_fingerprint(fields: Mapping[str, Any]) -> str:
    """SHA-256 of the submitted fields, independent of their order: a retry has the same one."""
    canonical = orjson.dumps(dict(fields), option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(canonical).hexdigest()


async def capture_interaction(
    cmd: CaptureInteraction, ctx: CaptureContext, now: datetime
) -> Accepted:
    """Build the interaction and make its event durable (Kafka, else the spool).

    Raises ``InvalidSubmission`` when the fields cannot become an interaction.
    """
    interaction = build_interaction(
        cmd.fields,
        channel=cmd.channel,
        occurred_at=now,
        form=cmd.form,
        default_region=ctx.config.default_region,
    )
    if cmd.extra:
        interaction = replace(interaction, **cmd.extra)
    key = cmd.idempotency_key
    event = interaction_event(
        cmd.event_type,
        interaction,
        id=submission_event_id(cmd.scope, key) if key else new_event_id(),
        time=now,
    )
    submission = Submission(
        event, cmd.scope if key else None, fingerprint=cmd.fingerprint if key else None
    )
    [accepted] = await ctx.intake.accept([submission])
    return accepted
