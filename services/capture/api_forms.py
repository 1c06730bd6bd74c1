"""Website-facing routes: form submissions, content downloads, webinar registrations and
the server-to-server webinar attendance report."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel

from services.capture.context import SOURCE_URI, CaptureContext, ContextDep
from services.capture.domain.interaction import FormSettings, InvalidSubmission, build_interaction
from services.capture.domain.jsonsafe import clean_str
from services.capture.domain.normalize import InvalidValue, parse_bool
from services.capture.http_input import (
    check_origin,
    cors_headers,
    cors_on_problems,
    origin_of,
    parse_fields,
    parse_json_object,
    preflight,
    read_body,
)
from services.capture.intake import Submission
from shared.events import (
    CloudEvent,
    InteractionType,
    derived_event_id,
    new_event_id,
    rfc3339,
    utcnow,
)
from shared.http import BearerAuth
from shared.problems import Problem

router = APIRouter(tags=["capture"])
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


def _idempotency_key(request: Request) -> str | None:
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


def _path_id(value: str, what: str) -> str:
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
    channel: str,
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
            occurred_at=rfc3339(now),
            form=form,
            default_region=ctx.config.default_region,
        )
    except InvalidSubmission as exc:
        raise Problem(422, "the submission is invalid", errors=exc.errors) from None
    interaction.data.update(extra or {})
    key = _idempotency_key(request) or natural_key
    event = CloudEvent(
        type=event_type,
        source=SOURCE_URI,
        data=interaction.data,
        time=now,
        id=derived_event_id("capture", scope, key) if key else new_event_id(),
        key=interaction.lead_key,
    )
    [accepted] = await ctx.intake.accept([Submission(event, scope if key else None)])
    return _answer(
        AcceptedOut(event_id=accepted.event_id, lead_key=accepted.lead_key), redirect, origin
    )


def _answer(body: AcceptedOut, redirect: str | None, origin: str | None) -> Response:
    if redirect:
        return RedirectResponse(redirect, status_code=303, headers=cors_headers(origin))
    return JSONResponse(body.model_dump(), status_code=202, headers=cors_headers(origin))


@router.options("/v1/forms/{form_id}/submissions", include_in_schema=False)
async def form_preflight(form_id: str, request: Request, ctx: ContextDep) -> Response:
    return preflight(request, ctx.form(form_id).allowed_origins)


@router.post(
    "/v1/forms/{form_id}/submissions",
    status_code=202,
    response_model=AcceptedOut,
    openapi_extra=_FIELDS_BODY,
)
async def submit_form(form_id: str, request: Request, ctx: ContextDep) -> Response:
    """A website form submission (JSON, urlencoded or multipart)."""
    ctx.limiter.check(request)
    form = ctx.form(form_id)
    origin = check_origin(request, form.allowed_origins)
    with cors_on_problems(origin):
        fields = await parse_fields(request, await read_body(request, ctx.config.max_body_bytes))
        return await capture(
            ctx,
            request,
            fields,
            event_type=InteractionType.FORM_SUBMITTED,
            channel="form",
            scope=f"form:{form_id}",
            form=form,
            allowed_origins=form.allowed_origins,
            origin=origin,
        )


@router.options("/v1/downloads", include_in_schema=False)
@router.options("/v1/webinars/{webinar_id}/registrations", include_in_schema=False)
async def public_preflight(request: Request, ctx: ContextDep) -> Response:
    return preflight(request, ctx.config.public_origins)


@router.post(
    "/v1/downloads", status_code=202, response_model=AcceptedOut, openapi_extra=_FIELDS_BODY
)
async def download(request: Request, ctx: ContextDep) -> Response:
    """A content download (contact fields plus ``asset_id``, ``asset_type``, ``gated``)."""
    ctx.limiter.check(request)
    origin = check_origin(request, ctx.config.public_origins)
    with cors_on_problems(origin):
        fields = await parse_fields(request, await read_body(request, ctx.config.max_body_bytes))
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
        return await capture(
            ctx,
            request,
            fields,
            event_type=InteractionType.CONTENT_DOWNLOADED,
            channel="download",
            scope="download",
            extra={"asset": asset},
            allowed_origins=ctx.config.public_origins,
            origin=origin,
        )


@router.post(
    "/v1/webinars/{webinar_id}/registrations",
    status_code=202,
    response_model=AcceptedOut,
    openapi_extra=_FIELDS_BODY,
)
async def register_for_webinar(webinar_id: str, request: Request, ctx: ContextDep) -> Response:
    """A webinar registration (contact fields)."""
    ctx.limiter.check(request)
    webinar_id = _path_id(webinar_id, "webinar_id")
    origin = check_origin(request, ctx.config.public_origins)
    with cors_on_problems(origin):
        fields = await parse_fields(request, await read_body(request, ctx.config.max_body_bytes))
        return await capture(
            ctx,
            request,
            fields,
            event_type=InteractionType.WEBINAR_REGISTERED,
            channel="webinar",
            scope=f"webinar:{webinar_id}",
            extra={"webinar": {"id": webinar_id, "attended_minutes": None}},
            allowed_origins=ctx.config.public_origins,
            origin=origin,
        )


@router.post(
    "/v1/webinars/{webinar_id}/attendance",
    status_code=202,
    response_model=AcceptedOut,
    dependencies=[BearerAuth],
)
async def report_attendance(webinar_id: str, request: Request, ctx: ContextDep) -> Response:
    """Server-to-server: ``{"email", "attended_minutes"}`` from the webinar platform."""
    webinar_id = _path_id(webinar_id, "webinar_id")
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
    natural = f"{fields['email'].strip().lower()}"
    return await capture(
        ctx,
        request,
        fields,
        event_type=InteractionType.WEBINAR_ATTENDED,
        channel="webinar",
        scope=f"attendance:{webinar_id}",
        allowed_origins=(),
        extra={"webinar": {"id": webinar_id, "attended_minutes": minutes}},
        natural_key=natural,
    )
