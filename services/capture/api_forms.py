"""Website-facing routes: form submissions, content downloads, webinar registrations and
the server-to-server webinar attendance report.

Each route reads its request into a :class:`~services.capture.handlers.CaptureInteraction`;
:func:`_submit` does what they share around the use case: the honeypot, the ``_redirect``
target, the ``Idempotency-Key`` header and the 202 (or 303) answer.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import replace
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel

from services.capture.deps import CaptureContext, ContextDep
from services.capture.domain.interaction import InvalidSubmission
from services.capture.domain.jsonsafe import clean_str
from services.capture.domain.normalize import InvalidValue, parse_bool
from services.capture.handlers import (
    CaptureInteraction,
    capture_interaction,
    request_fingerprint,
)
from services.capture.http_input import (
    DirectRoute,
    check_origin,
    cors_headers,
    origin_of,
    parse_fields,
    parse_json_object,
    preflight,
    read_body,
)
from shared.auth import AdminAuth
from shared.events import InteractionType, new_event_id, utcnow
from shared.problems import Problem

router = APIRouter(tags=["capture"], route_class=DirectRoute)
ASSET_TYPES = ("whitepaper", "ebook", "report", "case_study", "checklist", "other")
_FIELDS_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            media: {
                "schema": {
                    "type": "object",
                    "additionalProperties": True,
                    "properties": {
                        "email": {"type": "string"},
                        "phone": {"type": "string"},
                        "consent_marketing": {"type": "boolean"},
                        "_hp": {"type": "string"},
                        "_redirect": {"type": "string"},
                    },
                }
            }
            for media in (
                "application/json",
                "application/x-www-form-urlencoded",
                "multipart/form-data",
            )
        },
    }
}


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


def _redirect_target(fields: Mapping[str, Any], allowed: Iterable[str]) -> str | None:
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


def _answer(event_id: str, lead_key: str, redirect: str | None, origin: str | None) -> Response:
    if redirect:
        return RedirectResponse(redirect, status_code=303, headers=cors_headers(origin))
    # AcceptedOut as JSONResponse renders it (compact, UTF-8), without building the model and
    # the stdlib encoder on the hottest route.
    content = orjson.dumps({"event_id": event_id, "lead_key": lead_key, "status": "accepted"})
    return Response(
        content, status_code=202, media_type="application/json", headers=cors_headers(origin)
    )


async def _submit(
    ctx: CaptureContext,
    request: Request,
    cmd: CaptureInteraction,
    allowed_origins: Iterable[str] = (),
    origin: str | None = None,
) -> Response:
    """Capture ``cmd`` and answer 202, or 303 to the form's ``_redirect``."""
    if cmd.fields.get("_hp"):
        # A bot filled the hidden honeypot: pretend success so it learns nothing; publish nothing.
        try:
            redirect = _redirect_target(cmd.fields, allowed_origins)
        except Problem:
            redirect = None
        return _answer(new_event_id(), "", redirect, origin)
    redirect = _redirect_target(cmd.fields, allowed_origins)
    # The header wins over a key the route derived from the request itself (attendance).
    header_key = idempotency_key(request)
    if header_key is not None:
        cmd = replace(cmd, idempotency_key=header_key, fingerprint=request_fingerprint(cmd.fields))
    try:
        accepted = await capture_interaction(cmd, ctx, utcnow())
    except InvalidSubmission as exc:
        raise Problem(422, "the submission is invalid", errors=exc.errors) from None
    if accepted.key_reused:
        # A retry repeats the request; other fields under the same key are another request.
        raise Problem(
            422,
            "this Idempotency-Key was already used for a different request",
            errors=[{"loc": "/header/Idempotency-Key", "msg": "reused with a different body"}],
        )
    return _answer(accepted.event_id, accepted.lead_key, redirect, origin)


def _admit(request: Request, ctx: CaptureContext, allowed_origins: Collection[str]) -> str | None:
    """What every browser-facing post checks first: the rate limit, then the origin (the
    ``Origin`` it answers to). Whatever the route raises after this carries the CORS headers,
    so the page's script can read why it was refused."""
    ctx.limiter.check(request)
    return check_origin(request, allowed_origins)


async def _fields(request: Request, ctx: CaptureContext) -> dict[str, Any]:
    return await parse_fields(request, await read_body(request, ctx.config.max_body_bytes))


@router.options("/v1/forms/{form_id}/submissions", include_in_schema=False)
async def form_preflight(form_id: str, request: Request, ctx: ContextDep) -> Response:
    return preflight(request, ctx.form(form_id).allowed_origins)


@router.post(
    "/v1/forms/{form_id}/submissions",
    status_code=202,
    response_model=AcceptedOut,
    openapi_extra=_FIELDS_BODY,
)
async def submit_form(form_id: str, request: Request) -> Response:
    """A website form submission (JSON, urlencoded or multipart)."""
    # The hottest route: the context straight from the app, not through a dependency that
    # FastAPI would solve on every request.
    ctx: CaptureContext = request.app.state.capture
    form = ctx.form(form_id)
    origin = _admit(request, ctx, form.allowed_origins)
    try:
        fields = await _fields(request, ctx)
        cmd = CaptureInteraction(
            InteractionType.FORM_SUBMITTED, "form", f"form:{form_id}", fields, form=form
        )
        return await _submit(ctx, request, cmd, form.allowed_origins, origin)
    except Problem as problem:
        problem.headers.update(cors_headers(origin))
        raise


@router.options("/v1/downloads", include_in_schema=False)
@router.options("/v1/webinars/{webinar_id}/registrations", include_in_schema=False)
async def public_preflight(request: Request, ctx: ContextDep) -> Response:
    return preflight(request, ctx.config.public_origins)


@router.post(
    "/v1/downloads", status_code=202, response_model=AcceptedOut, openapi_extra=_FIELDS_BODY
)
async def download(request: Request, ctx: ContextDep) -> Response:
    """A content download (contact fields plus ``asset_id``, ``asset_type``, ``gated``)."""
    origin = _admit(request, ctx, ctx.config.public_origins)
    try:
        fields = await _fields(request, ctx)
        errors = []
        asset_id, asset_type = (
            fields.pop("asset_id", None),
            fields.pop("asset_type", None) or "other",
        )
        if (
            not isinstance(asset_id, str | int)
            or isinstance(asset_id, bool)
            or not str(asset_id).strip()
        ):
            errors.append({"loc": "/body/asset_id", "msg": "asset_id is required"})
        if asset_type not in ASSET_TYPES:
            errors.append(
                {"loc": "/body/asset_type", "msg": "must be one of " + ", ".join(ASSET_TYPES)}
            )
        try:
            gated = parse_bool(fields.pop("gated", False))
        except InvalidValue as exc:
            errors.append({"loc": "/body/gated", "msg": str(exc)})
        if errors and not fields.get("_hp"):
            raise Problem(422, "the download is invalid", errors=errors)
        asset = {
            "id": str(asset_id).strip()[:200],
            "type": asset_type,
            "gated": not errors and gated,
        }
        cmd = CaptureInteraction(
            InteractionType.CONTENT_DOWNLOADED,
            "download",
            "download",
            fields,
            extra={"asset": asset},
        )
        return await _submit(ctx, request, cmd, ctx.config.public_origins, origin)
    except Problem as problem:
        problem.headers.update(cors_headers(origin))
        raise


@router.post(
    "/v1/webinars/{webinar_id}/registrations",
    status_code=202,
    response_model=AcceptedOut,
    openapi_extra=_FIELDS_BODY,
)
async def register_for_webinar(webinar_id: str, request: Request, ctx: ContextDep) -> Response:
    """A webinar registration (contact fields)."""
    origin = _admit(request, ctx, ctx.config.public_origins)
    try:
        fields = await _fields(request, ctx)
        webinar_id = path_id(webinar_id, "webinar_id")
        cmd = CaptureInteraction(
            InteractionType.WEBINAR_REGISTERED,
            "webinar",
            f"webinar:{webinar_id}",
            fields,
            extra={"webinar": {"id": webinar_id, "attended_minutes": None}},
        )
        return await _submit(ctx, request, cmd, ctx.config.public_origins, origin)
    except Problem as problem:
        problem.headers.update(cors_headers(origin))
        raise


@router.post(
    "/v1/webinars/{webinar_id}/attendance",
    status_code=202,
    response_model=AcceptedOut,
    dependencies=[AdminAuth],
)
async def report_attendance(webinar_id: str, request: Request, ctx: ContextDep) -> Response:
    """Server-to-server: ``{"email", "attended_minutes"}`` from the webinar platform."""
    webinar_id = path_id(webinar_id, "webinar_id")
    if not request.headers.get("content-type", "").lower().startswith("application/json"):
        raise Problem(415, "attendance reports are JSON")
    fields = parse_json_object(await read_body(request, ctx.config.max_body_bytes))
    minutes = fields.pop("attended_minutes", None)
    if not isinstance(minutes, int) or isinstance(minutes, bool) or not 0 <= minutes <= 100_000:
        raise Problem(
            422,
            "attended_minutes must be a whole number of minutes",
            errors=[
                {"loc": "/body/attended_minutes", "msg": "must be an integer from 0 to 100000"}
            ],
        )
    if not isinstance(fields.get("email"), str):
        raise Problem(422, "email is required", errors=[{"loc": "/body/email", "msg": "required"}])
    fields.pop("_hp", None)
    fields.pop("_redirect", None)
    # One attendance per person and webinar: a re-sent report is a repeat, not a second visit.
    cmd = CaptureInteraction(
        InteractionType.WEBINAR_ATTENDED,
        "webinar",
        f"attendance:{webinar_id}",
        fields,
        extra={"webinar": {"id": webinar_id, "attended_minutes": minutes}},
        idempotency_key=fields["email"].strip().lower(),
    )
    return await _submit(ctx, request, cmd)
