"""The Segment-compatible tracking API.

``/v1/track``, ``/v1/identify``, ``/v1/page``, ``/v1/screen``, ``/v1/group``, ``/v1/alias`` and
``/v1/batch`` as Segment's server libraries post them (JSON, optionally gzip or deflate), and
analytics.js's short paths ``/v1/t``, ``/v1/p``, ``/v1/i``, ``/v1/g``, ``/v1/a``, ``/v1/s``,
``/v1/b`` (``text/plain`` bodies carrying the ``writeKey``).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from services.capture.deps import CaptureContext, ContextDep
from services.capture.domain.interaction import InvalidSubmission
from services.capture.domain.segment import CALL_TYPES, SHORT_PATHS, parse_message, triage_batch
from services.capture.domain.tracking import TrackedCall
from services.capture.events import interaction_event, tracking_event_id
from services.capture.http_input import (
    DirectRoute,
    cors_headers,
    cors_on_problems,
    media_type,
    parse_json_object,
    preflight_response,
    read_decoded_body,
)
from services.capture.intake import Submission
from shared.events import new_event_id, utcnow
from shared.problems import Problem

router = APIRouter(tags=["tracking"], route_class=DirectRoute)


class RejectedCallOut(BaseModel):
    """A call of a batch refused on its own (the others were accepted)."""

    model_config = ConfigDict(extra="allow")

    index: int
    messageId: str | None = None
    errors: list[dict[str, Any]]


class TrackedOut(BaseModel):
    """Segment's answer: ``success``; a batch also counts what it accepted and lists the
    rejected calls (at most 100)."""

    success: bool
    accepted: int | None = None
    rejected: list[RejectedCallOut] | None = None


EVENT_LIMIT = 32 * 1024
BATCH_LIMIT = 500 * 1024
BATCH_EVENTS = 2_500
_SEGMENT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "additionalProperties": True,
                    "properties": {
                        "userId": {"type": "string"},
                        "anonymousId": {"type": "string"},
                        "event": {"type": "string"},
                        "name": {"type": "string"},
                        "traits": {"type": "object"},
                        "properties": {"type": "object"},
                        "context": {"type": "object"},
                        "messageId": {"type": "string"},
                        "timestamp": {"type": "string"},
                    },
                }
            }
        },
    },
    "security": [{"writeKey": []}],
}


def _ctx(request: Request) -> CaptureContext:
    # The hot routes take the context straight from the app, not through a dependency that
    # FastAPI would solve on every request (see DirectRoute).
    ctx: CaptureContext = request.app.state.capture
    return ctx


def _write_key(request: Request, body: dict[str, Any]) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() == "basic" and encoded:
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[0]
    # analytics.js beacons cannot set headers; Segment accepts the key in the body then.
    key = body.get("writeKey")
    return key if isinstance(key, str) else None


def _authenticate(ctx: CaptureContext, request: Request, body: dict[str, Any]) -> None:
    key = _write_key(request, body)
    if not key:
        raise Problem(
            401,
            "HTTP Basic auth with the write key as username is required",
            headers={"WWW-Authenticate": 'Basic realm="leadflow"'},
        )
    matches = [hmac.compare_digest(key.encode(), k.encode()) for k in ctx.settings.write_keys]
    if not any(matches):
        raise Problem(
            401,
            "the write key is not valid",
            headers={"WWW-Authenticate": 'Basic realm="leadflow"'},
        )


async def _read(ctx: CaptureContext, request: Request, limit: int) -> dict[str, Any]:
    ctx.limiter.check(request)
    if media_type(request) not in ("application/json", "text/plain", ""):
        raise Problem(415, "the tracking API takes JSON")
    body = parse_json_object(await read_decoded_body(request, limit))
    _authenticate(ctx, request, body)
    return body


def _event(call: TrackedCall, now: datetime) -> Submission:
    key = call.message_id
    event = interaction_event(
        call.event_type,
        call.interaction,
        id=tracking_event_id(key) if key else new_event_id(),
        time=now,
    )
    # The id follows from the messageId, and Segment's answer carries nothing stored: no claim.
    return Submission(event, "segment", claim=False) if key else Submission(event)


def _allowed_origin(ctx: CaptureContext, request: Request) -> str | None:
    """The request's Origin when it may read the answer (configured, or any in dev mode)."""
    origin = request.headers.get("origin")
    if origin is None:
        return None
    if "*" in ctx.tracking_origins or origin.rstrip("/").lower() in ctx.tracking_origins:
        return origin
    return None


async def _accept(
    ctx: CaptureContext,
    request: Request,
    calls: list[TrackedCall],
    rejected: list[dict[str, Any]] | None = None,
) -> Response:
    now = utcnow()
    if calls:
        await ctx.intake.accept([_event(c, now) for c in calls])
    # Write keys are public, so CORS is not access control here; but only the configured
    # sites' scripts get to read the answer (no echo of an arbitrary Origin).
    answer: dict[str, Any] = {"success": True}
    if rejected is not None:
        answer |= {"accepted": len(calls), "rejected": rejected[:100]}
    return JSONResponse(answer, headers=cors_headers(_allowed_origin(ctx, request)))


async def _single(ctx: CaptureContext, request: Request, call_type: str) -> Response:
    with cors_on_problems(_allowed_origin(ctx, request)):
        body = await _read(ctx, request, EVENT_LIMIT)
        try:
            call = parse_message(body, call_type, utcnow())
        except InvalidSubmission as exc:
            raise Problem(422, "the call is invalid", errors=exc.errors) from None
        return await _accept(ctx, request, [call])


async def _batch(ctx: CaptureContext, request: Request) -> Response:
    with cors_on_problems(_allowed_origin(ctx, request)):
        body = await _read(ctx, request, BATCH_LIMIT)
        items = body.get("batch")
        if not isinstance(items, list):
            raise Problem(
                400, "batch must be a list", errors=[{"loc": "/body/batch", "msg": "list"}]
            )
        if len(items) > BATCH_EVENTS:
            raise Problem(413, f"a batch holds at most {BATCH_EVENTS} events")
        # One token was taken for the request; the others are charged per event, so a batch
        # cannot carry 2,500 events for the price of one (the client's next requests wait).
        ctx.limiter.charge(request, len(items) - 1)
        context = body.get("context")
        triage = triage_batch(
            items, utcnow(), context if isinstance(context, dict) else None, EVENT_LIMIT
        )
        return await _accept(ctx, request, triage.calls, triage.rejected)


_BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["batch"],
                    "properties": {
                        "batch": {"type": "array", "items": {"type": "object"}},
                        "context": {"type": "object"},
                        "writeKey": {"type": "string"},
                    },
                }
            }
        },
    },
    "security": [{"writeKey": []}],
}

_PATHS = frozenset({*CALL_TYPES, "batch", *SHORT_PATHS})


@router.options("/v1/{call}", include_in_schema=False)
async def tracking_preflight(call: str, request: Request, ctx: ContextDep) -> Response:
    if call not in _PATHS:
        raise Problem(404, "not found")
    origin = _allowed_origin(ctx, request)
    if origin is None:
        raise Problem(403, "this origin may not call the tracking API")
    # analytics.js adds Authorization (the write key) and X-Retry-Count to its posts.
    return preflight_response(origin, "Content-Type, Authorization, X-Retry-Count")


@router.post("/v1/track", response_model=TrackedOut, openapi_extra=_SEGMENT_BODY)
async def track(request: Request) -> Response:
    """A Segment ``track`` call (``event`` required)."""
    return await _single(_ctx(request), request, "track")


@router.post("/v1/page", response_model=TrackedOut, openapi_extra=_SEGMENT_BODY)
async def page(request: Request) -> Response:
    """A Segment ``page`` call (a page view)."""
    return await _single(_ctx(request), request, "page")


@router.post("/v1/screen", response_model=TrackedOut, openapi_extra=_SEGMENT_BODY)
async def screen(request: Request) -> Response:
    """A Segment ``screen`` call (a mobile screen view, recorded like a page view)."""
    return await _single(_ctx(request), request, "screen")


@router.post("/v1/identify", response_model=TrackedOut, openapi_extra=_SEGMENT_BODY)
async def identify(request: Request) -> Response:
    """A Segment ``identify`` call; with ``traits.email`` it joins the anonymous history."""
    return await _single(_ctx(request), request, "identify")


@router.post("/v1/group", response_model=TrackedOut, openapi_extra=_SEGMENT_BODY)
async def group(request: Request) -> Response:
    """A Segment ``group`` call (``groupId`` required): the account's ``name``, ``industry``,
    ``employees`` and ``country`` become the lead's company fields."""
    return await _single(_ctx(request), request, "group")


@router.post("/v1/alias", response_model=TrackedOut, openapi_extra=_SEGMENT_BODY)
async def alias(request: Request) -> Response:
    """A Segment ``alias`` call: ``previousId`` and ``userId`` are the same person."""
    return await _single(_ctx(request), request, "alias")


@router.post("/v1/batch", response_model=TrackedOut, openapi_extra=_BATCH_BODY)
async def batch(request: Request) -> Response:
    """Up to 2,500 calls (500 KB, 32 KB each) in one request. Each call is checked on its own,
    as Segment does: the answer is 200 with the rejected calls listed (index, messageId,
    errors) and the others accepted; only a malformed request is refused whole."""
    return await _batch(_ctx(request), request)


def _short_route(call_type: str) -> Any:
    async def endpoint(request: Request) -> Response:
        ctx = _ctx(request)
        if call_type == "batch":
            return await _batch(ctx, request)
        return await _single(ctx, request, call_type)

    return endpoint


# analytics.js's paths: a ``text/plain`` JSON body with the ``writeKey`` in it (and, in recent
# versions, the same key as Basic auth).
for _short, _call_type in SHORT_PATHS.items():
    router.add_api_route(
        f"/v1/{_short}",
        _short_route(_call_type),
        methods=["POST"],
        name=f"analytics_js_{_call_type}",
        summary=f"analytics.js {_call_type} (short path)",
        description=f"The ``{_call_type}`` call as analytics.js posts it.",
        response_model=TrackedOut,
        openapi_extra=_BATCH_BODY if _call_type == "batch" else _SEGMENT_BODY,
    )
