"""Ad-platform webhooks: Meta Lead Ads, Google Ads lead forms, LinkedIn Lead Sync.

Each request is verified exactly as its platform specifies (constant-time comparisons); a
failed check is 401/403 and nothing is stored. Meta and LinkedIn send only a lead id: it is
stored durably and the answer is 200; the ad fetcher gets the details. Google sends the answers
inline, so its event is made durable right away. A LinkedIn ``DELETED`` notification cancels
the fetch and spools an ``erasure_requested`` event (with the email/phone capture kept from
the fetched response, if any) in the same transaction.
"""

from __future__ import annotations

import contextlib
import hmac
import re
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel

from services.capture import repository
from services.capture.deps import CaptureContext, ContextDep
from services.capture.domain.ads import (
    InvalidPayload,
    ad_interaction,
    erasure_interaction,
    google_fields,
    hmac_hex,
    id_str,
    linkedin_signature_ok,
    loads_exact,
    meta_leadgen_changes,
    meta_signature_ok,
)
from services.capture.domain.jsonsafe import clean
from services.capture.events import (
    SOURCE,
    ad_event_id,
    erasure_event_id,
    interaction_event,
)
from services.capture.http_input import read_body
from services.capture.intake import Submission
from shared.events import InteractionType, parse_time, rfc3339, utcnow
from shared.outbox import enqueue
from shared.problems import Problem
from shared.topics import Topics

router = APIRouter(tags=["ad platforms"])
WEBHOOK_LIMIT = 2 * 1024 * 1024
#: LinkedIn's ``challengeCode`` is a UUID. Signing nothing else matters: the validation HMAC
#: uses the same key and construction as ``X-LI-Signature``, so signing arbitrary text would
#: sign a forged notification body for anyone who asks.
_LI_CHALLENGE = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


class ReceivedOut(BaseModel):
    """Leads in the notification, and how many were new (the rest were repeats)."""

    received: int
    new: int | None = None
    deleted: bool | None = None
    event_id: str | None = None


class GoogleAcceptedOut(BaseModel):
    event_id: str
    lead_key: str


class LinkedInChallengeOut(BaseModel):
    challengeCode: str
    challengeResponse: str


#: The raw JSON body these routes verify before parsing, documented for clients and fuzzers.
_JSON_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}


def _configured(value: str | None, platform: str) -> str:
    if not value:
        raise Problem(403, f"the {platform} webhook is not configured on this server")
    return value


def _payload(raw: bytes) -> Any:
    try:
        return clean(loads_exact(raw))
    except (InvalidPayload, ValueError) as exc:
        raise Problem(400, str(exc)[:300]) from None


async def _store(
    ctx: CaptureContext, platform: str, leads: list[tuple[str, dict[str, Any]]]
) -> int:
    try:
        async with ctx.intake.runtime.engine.begin() as conn:
            new = [
                await repository.add_ad_fetch(conn, platform, lead_id, note)
                for lead_id, note in leads
            ]
    except Exception:
        # Not stored: the platform must retry, so answer an error (both retry on non-2xx).
        raise Problem(
            503, "the lead could not be stored; retry later", headers={"Retry-After": "10"}
        ) from None
    if any(new) and ctx.fetcher is not None:
        ctx.fetcher.wake()
    return sum(new)


@router.get("/v1/webhooks/meta", response_class=PlainTextResponse)
async def meta_verify(request: Request, ctx: ContextDep) -> Response:
    """Meta's subscription check: echo ``hub.challenge`` when ``hub.verify_token`` matches."""
    token = _configured(ctx.settings.meta_verify_token, "Meta")
    q = request.query_params
    given = q.get("hub.verify_token", "")
    if q.get("hub.mode") != "subscribe" or not hmac.compare_digest(given.encode(), token.encode()):
        raise Problem(403, "verification failed")
    return PlainTextResponse(q.get("hub.challenge", ""))


@router.post("/v1/webhooks/meta", response_model=ReceivedOut, openapi_extra=_JSON_BODY)
async def meta_notify(request: Request, ctx: ContextDep) -> Response:
    """A Meta ``leadgen`` notification (``X-Hub-Signature-256`` over the raw body)."""
    secret = _configured(ctx.settings.meta_app_secret, "Meta")
    raw = await read_body(request, WEBHOOK_LIMIT)
    signature = request.headers.get("x-hub-signature-256")
    if not signature:
        raise Problem(401, "X-Hub-Signature-256 is missing")
    if not meta_signature_ok(secret, raw, signature):
        raise Problem(403, "X-Hub-Signature-256 does not match the body")
    try:
        changes = meta_leadgen_changes(_payload(raw))
    except InvalidPayload as exc:
        raise Problem(422, str(exc)) from None
    leads = [(str(c["leadgen_id"]), dict(c)) for c in changes]
    new = await _store(ctx, "meta", leads)
    return JSONResponse({"received": len(leads), "new": new})


@router.post("/v1/webhooks/google-ads", response_model=GoogleAcceptedOut, openapi_extra=_JSON_BODY)
async def google_notify(request: Request, ctx: ContextDep) -> Response:
    """A Google Ads lead form webhook (``google_key`` in the body; answers inline)."""
    expected = _configured(ctx.settings.google_ads_webhook_key, "Google Ads")
    payload = _payload(await read_body(request, WEBHOOK_LIMIT))
    if not isinstance(payload, dict):
        raise Problem(422, "the body must be a JSON object")
    key = payload.get("google_key", payload.get("Google_key"))
    if not isinstance(key, str) or not hmac.compare_digest(key.encode(), expected.encode()):
        raise Problem(403, "google_key does not match")
    lead_id = id_str(payload.get("lead_id"))
    if lead_id is None:
        raise Problem(
            422, "lead_id is required", errors=[{"loc": "/body/lead_id", "msg": "required"}]
        )
    try:
        fields = google_fields(payload)
    except InvalidPayload as exc:
        raise Problem(422, str(exc)) from None
    ad = {
        "form_id": id_str(payload.get("form_id")),
        "campaign_id": id_str(payload.get("campaign_id")),
        "ad_id": id_str(payload.get("creative_id")),
        "adgroup_id": id_str(payload.get("adgroup_id")),
        "gcl_id": id_str(payload.get("gcl_id")),
        "api_version": id_str(payload.get("api_version")),
        "is_test": payload.get("is_test") is True,
    }
    occurred = utcnow()
    if isinstance(payload.get("lead_submit_time"), str):
        with contextlib.suppress(ValueError):  # unparseable: keep the receipt time
            occurred = parse_time(payload["lead_submit_time"])
    interaction = ad_interaction("google", lead_id, fields, ad, occurred)
    event = interaction_event(
        InteractionType.AD_LEAD_RECEIVED, interaction, id=ad_event_id("google", lead_id)
    )
    [accepted] = await ctx.intake.accept([Submission(event, "ad:google")])
    return JSONResponse({"event_id": accepted.event_id, "lead_key": accepted.lead_key})


@router.get("/v1/webhooks/linkedin", response_model=LinkedInChallengeOut)
async def linkedin_validate(request: Request, ctx: ContextDep) -> Response:
    """LinkedIn's validation: HMAC the ``challengeCode`` with the client secret."""
    secret = _configured(ctx.settings.linkedin_client_secret, "LinkedIn")
    code = request.query_params.get("challengeCode")
    if not code:
        raise Problem(422, "challengeCode is required")
    if not _LI_CHALLENGE.fullmatch(code):
        raise Problem(400, "challengeCode is not a LinkedIn challenge (a UUID)")
    return JSONResponse(
        {"challengeCode": code, "challengeResponse": hmac_hex(secret, code.encode())}
    )


@router.post("/v1/webhooks/linkedin", response_model=ReceivedOut, openapi_extra=_JSON_BODY)
async def linkedin_notify(request: Request, ctx: ContextDep) -> Response:
    """A Lead Sync notification (``X-LI-Signature``); CREATED leads are fetched."""
    secret = _configured(ctx.settings.linkedin_client_secret, "LinkedIn")
    raw = await read_body(request, WEBHOOK_LIMIT)
    if not linkedin_signature_ok(secret, raw, request.headers.get("x-li-signature")):
        raise Problem(401, "X-LI-Signature is missing or does not match")
    payload = _payload(raw)
    if not isinstance(payload, dict) or not isinstance(payload.get("leadGenFormResponse"), str):
        raise Problem(422, "leadGenFormResponse is required")
    lead_id = payload["leadGenFormResponse"].rsplit(":", 1)[-1].strip()
    if not lead_id or len(lead_id) > 300:
        raise Problem(422, "leadGenFormResponse is not a lead form response URN")
    if isinstance(payload.get("occurredAt"), int):
        payload["occurred_at"] = rfc3339(datetime.fromtimestamp(payload["occurredAt"] / 1000, UTC))
    if payload.get("leadAction") == "DELETED":
        # An erasure request for that response: nothing is captured for it from now on.
        event_id = await _forget(ctx, lead_id, payload.get("occurred_at"))
        return JSONResponse({"received": 1, "deleted": True, "event_id": event_id})
    new = await _store(ctx, "linkedin", [(lead_id, payload)])
    return JSONResponse({"received": 1, "new": new})


def _time_or_now(value: Any) -> datetime:
    """``occurred_at`` of a LinkedIn notification (set from ``occurredAt``), else now."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError, OverflowError):
            return parse_time(value)
    return utcnow()


async def _forget(ctx: CaptureContext, lead_id: str, occurred_at: Any) -> str:
    """Cancel the lead's fetch, drop what capture kept of it, and spool an erasure request
    carrying the email/phone capture learned from the fetched response, if any."""
    topic = Topics(ctx.settings.leadflow_topic_prefix).interactions
    try:
        async with ctx.intake.runtime.engine.begin() as conn:
            before = await repository.mark_deleted(conn, "linkedin", lead_id)
            interaction = erasure_interaction(
                "linkedin",
                lead_id,
                before.email if before is not None else None,
                before.phone if before is not None else None,
                _time_or_now(occurred_at),
                "linkedin_lead_deleted",
            )
            event = interaction_event(
                InteractionType.ERASURE_REQUESTED,
                interaction,
                id=erasure_event_id("linkedin", lead_id),
            )
            await enqueue(conn, SOURCE, topic, [event])
    except Exception:
        raise Problem(
            503, "the deletion could not be stored; retry later", headers={"Retry-After": "10"}
        ) from None
    ctx.intake.runtime.relay.wake()
    return event.id
