"""Website-facing routes: form submissions, content downloads, webinar registrations and
the server-to-server webinar attendance report."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Request, Response

from services.capture.context import CaptureContext, ContextDep
from services.capture.domain.normalize import InvalidValue, parse_bool
from services.capture.handlers import AcceptedOut, capture, path_id
from services.capture.http_input import (
    check_origin,
    cors_on_problems,
    parse_fields,
    parse_json_object,
    preflight,
    read_body,
)
from shared.auth import AdminAuth
from shared.events import InteractionType
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


@asynccontextmanager
async def _browser_post(
    request: Request, ctx: CaptureContext, allowed_origins: Collection[str]
) -> AsyncIterator[tuple[str | None, dict[str, Any]]]:
    """What every browser-facing post shares: rate limit, origin check, body parsing, and CORS
    headers on any error inside, so the page's script can read why it was refused."""
    ctx.limiter.check(request)
    origin = check_origin(request, allowed_origins)
    with cors_on_problems(origin):
        yield (
            origin,
            await parse_fields(request, await read_body(request, ctx.config.max_body_bytes)),
        )


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
    form = ctx.form(form_id)
    async with _browser_post(request, ctx, form.allowed_origins) as (origin, fields):
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
    async with _browser_post(request, ctx, ctx.config.public_origins) as (origin, fields):
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
    async with _browser_post(request, ctx, ctx.config.public_origins) as (origin, fields):
        webinar_id = path_id(webinar_id, "webinar_id")
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
