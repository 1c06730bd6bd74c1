"""The capture flow shared by the public endpoints: fields → event → durable → answer.

A handler in the cosmicpython sense: it turns parsed request fields into an interaction with
the pure domain, makes the event durable through the intake (Kafka, else the spool, in one
unit of work with the idempotency record), and renders the 202 / 303 answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel

from services.capture.context import CaptureContext
from services.capture.domain.interaction import FormSettings, InvalidSubmission, build_interaction
from services.capture.domain.jsonsafe import clean_str
from services.capture.events import interaction_event, submission_event_id
from services.capture.http_input import cors_headers, origin_of
from services.capture.intake import Submission
from shared.contract import Channel
from shared.events import new_event_id, utcnow
from shared.problems import Problem


class AcceptedOut(BaseModel):
    """The answer to an accepted submission."""

    event_id: str
    lead_key: str
    status: str = "accepted"


def idempotency_key(request: Request) -> str | None:
    """The ``Idempotency-Key`` header, trimmed; 422 when empty or longer than 200 characters."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not 1 <= len(key.strip()) <= 200:
        raise Problem(
            422,
            "Idempotency-Key must have 1 to 200 characters",
            errors=[{"loc": "/header/Idempotency-Key", "msg": "bad length"}],
        )
    return key.strip()


def path_id(value: str, what: str) -> str:
    """A path id (webinar id) made safe to store; 422 when empty or too long."""
    cleaned = clean_str(value).strip()
    if not 1 <= len(cleaned) <= 200:
        raise Problem(422, f"{what} must have 1 to 200 characters")
    return cleaned


def _redirect_target(fields: dict[str, Any], allowed: Iterable[str]) -> str | None:
    target = fields.get("_redirect")
    if target is None or target == "":
        return None
    allowed_set = {o.lower() for o in allowed}
    if not isinstance(target, str) or origin_of(target) not in allowed_set:
        raise Problem(
            422,
            "_redirect must be a URL on one of the form's allowed origins",
            errors=[{"loc": "/body/_redirect", "msg": "origin not allowed"}],
        )
    return target


async def capture(
    ctx: CaptureContext,
    request: Request,
    fields: dict[str, Any],
    *,
    event_type: str,
    channel: Channel,
    scope: str,
    allowed_origins: Iterable[str],
    form: FormSettings | None = None,
    extra: dict[str, Any] | None = None,
    natural_key: str | None = None,
    origin: str | None = None,
) -> Response:
    """Validate fields, build the event, make it durable and answer 202 (or 303)."""
    if fields.get("_hp"):
        # A bot filled the hidden honeypot: pretend success so it learns nothing; publish nothing.
        try:
            redirect = _redirect_target(fields, allowed_origins)
        except Problem:
            redirect = None
        return _answer(AcceptedOut(event_id=new_event_id(), lead_key=""), redirect, origin)
    redirect = _redirect_target(fields, allowed_origins)
    now = utcnow()
    try:
        interaction = build_interaction(
            fields,
            channel=channel,
            occurred_at=now,
            form=form,
            default_region=ctx.config.default_region,
        )
    except InvalidSubmission as exc:
        raise Problem(422, "the submission is invalid", errors=exc.errors) from None
    interaction = replace(interaction, **(extra or {}))
    key = idempotency_key(request) or natural_key
    event = interaction_event(
        event_type,
        interaction,
        id=submission_event_id(scope, key) if key else new_event_id(),
        time=now,
    )
    [accepted] = await ctx.intake.accept([Submission(event, scope if key else None)])
    return _answer(
        AcceptedOut(event_id=accepted.event_id, lead_key=accepted.lead_key), redirect, origin
    )


def _answer(body: AcceptedOut, redirect: str | None, origin: str | None) -> Response:
    if redirect:
        return RedirectResponse(redirect, status_code=303, headers=cors_headers(origin))
    return JSONResponse(body.model_dump(), status_code=202, headers=cors_headers(origin))
