"""The OpenAPI document every service publishes at ``/openapi.json``, completed with what FastAPI
cannot see: the problem+json errors the guard and the handlers send, and the credentials.

FastAPI documents only the 2xx answer and a JSON ``HTTPValidationError`` for 422, which Leadflow
never sends (every error is RFC 9457 problem+json, see :mod:`shared.problems`). The guard
middleware answers 401/403 and 413 before a route runs, so no route declares them either. This
module adds, per operation, the errors it can really answer, all as ``Problem``:

* 400 (malformed body) and 413 (body too large) where there is a request body;
* 401 and 403 where the route needs a credential (the access level the guard enforces);
* 404 where the path has parameters; 422 where anything is validated;
* 503 on ``/readyz``; a ``5XX`` problem everywhere (the last-resort handler).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts

from shared.auth import Access
from shared.problems import PROBLEM_MEDIA_TYPE

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details.",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "example": "about:blank"},
        "title": {"type": "string", "example": "Unprocessable Content"},
        "status": {"type": "integer", "example": 422},
        "detail": {"type": "string", "example": "the request is invalid"},
        "errors": {
            "type": "array",
            "description": "one entry per invalid field or part",
            "items": {
                "type": "object",
                "properties": {"loc": {"type": "string"}, "msg": {"type": "string"}},
            },
        },
    },
}

#: Credentials beyond the bearer tokens FastAPI lists itself, declared when an operation uses
#: them (a route names ``writeKey`` in its ``openapi_extra`` security; session routes get
#: ``session`` from their access level).
EXTRA_SECURITY_SCHEMES: dict[str, Any] = {
    "writeKey": {
        "type": "http",
        "scheme": "basic",
        "description": "Segment-style write key as the Basic user name (tracking API).",
    },
    "session": {
        "type": "apiKey",
        "in": "cookie",
        "name": "leadflow_session",
        "description": "Dashboard session after POST /login.",
    },
}

_DESCRIPTIONS = {
    "400": "The body is not valid JSON (or not decodable).",
    "401": "A credential is missing or wrong.",
    "403": "The credential does not grant this.",
    "404": "No such resource.",
    "413": "The body is larger than the configured limit.",
    "422": "The request is invalid; `errors` names each field.",
    "503": "Not ready; `errors` lists the problems.",
    "5XX": "Unexpected error (never with a stack trace).",
}


def _problem(code: str) -> dict[str, Any]:
    return {
        "description": _DESCRIPTIONS[code],
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def install_openapi(app: FastAPI, access_of: Callable[[RouteContext], Access]) -> None:
    """Replace ``app.openapi`` with one that documents errors and credentials."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        # Included routers are flattened lazily (FastAPI >= 0.16x): walk their route contexts.
        access = {
            (route.path_format, method.lower()): access_of(route)
            for route in iter_route_contexts(app.router.routes)
            if isinstance(route.original_route, APIRoute)
            for method in route.methods or ()
        }
        components = schema.setdefault("components", {})
        components.setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
        used: set[str] = set()
        for path, operations in schema.get("paths", {}).items():
            for method, op in operations.items():
                _complete(path, op, access.get((path, method), Access.PUBLIC))
                used.update(name for req in op.get("security", ()) for name in req)
        schemes = components.setdefault("securitySchemes", {})
        schemes.update({k: v for k, v in EXTRA_SECURITY_SCHEMES.items() if k in used})
        # Nothing refers to FastAPI's validation-error shapes any more.
        for name in ("HTTPValidationError", "ValidationError"):
            components["schemas"].pop(name, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _complete(path: str, op: dict[str, Any], access: Access) -> None:
    responses: dict[str, Any] = op.setdefault("responses", {})
    codes = ["5XX"]
    if "requestBody" in op:
        codes += ["400", "413", "422"]
    if op.get("parameters"):
        codes.append("422")
    if "{" in path:
        codes.append("404")
    if access in (Access.READ, Access.ADMIN, Access.OPS):
        codes += ["401", "403"]
    if access is Access.SESSION:
        op.setdefault("security", [{"session": []}])
    if path == "/readyz":
        codes.append("503")
    if "422" in responses:  # FastAPI's JSON HTTPValidationError: sent as problem+json instead
        codes.append("422")
    for code in dict.fromkeys(codes):
        responses[code] = _problem(code)
