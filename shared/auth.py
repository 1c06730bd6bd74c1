"""Credentials for every service: read and admin bearer tokens, and the dashboard's session.

Each route has an access level: ``public`` (capture's website-facing endpoints, health),
``ops`` (``/metrics`` and the API docs: open in dev mode, read credential otherwise), ``read``,
``session`` (the dashboard: a read credential as a bearer header or a login cookie) and
``admin``. A route declares its level with one of the dependencies below; the
:class:`~shared.http.GuardMiddleware` reads that declaration and checks the credential *before*
any request body is read, and the dependency checks it again (defence in depth) and puts the
security scheme into the OpenAPI document.

Tokens come from settings: ``LEADFLOW_API_TOKEN`` (admin) and ``LEADFLOW_READ_TOKENS`` (read),
each comma-separated so an old and a new token can both be valid while clients move over. Admin
tokens may also read. Every comparison is constant-time against every configured token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any

import orjson
from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.problems import Problem
from shared.settings import Settings

SESSION_COOKIE = "leadflow_session"
SESSION_SECONDS = 8 * 3600
LOGIN_PATH = "/login"


class Access(StrEnum):
    """What a route needs."""

    PUBLIC = "public"
    OPS = "ops"
    READ = "read"
    SESSION = "session"
    ADMIN = "admin"


class Role(StrEnum):
    """What a credential grants."""

    READ = "read"
    ADMIN = "admin"


def _matches(token: str, candidates: tuple[str, ...]) -> bool:
    # Compare against every candidate without stopping early, so timing does not tell which
    # (or whether an earlier) token matched.
    found = False
    raw = token.encode()
    for candidate in candidates:
        found |= hmac.compare_digest(raw, candidate.encode())
    return found


def role_of(settings: Settings, token: str | None) -> Role | None:
    """The role a bearer token grants, or None for a missing or unknown token."""
    if not token:
        return None
    if _matches(token, settings.api_tokens):
        return Role.ADMIN
    if _matches(token, settings.read_tokens):
        return Role.READ
    return None


def bearer_of(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _unauthorized() -> Problem:
    return Problem(401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})


def check(settings: Settings, access: Access, token: str | None, session: str | None) -> None:
    """Raise the 401/403 :class:`Problem` when ``token`` (or the session cookie) does not grant
    ``access``; return when it does. The dashboard's redirect is the caller's job."""
    if access is Access.PUBLIC or (access is Access.OPS and settings.leadflow_dev):
        return
    if token is None:
        if access is Access.SESSION and session and verify_session(settings, session):
            return
        raise _unauthorized()
    role = role_of(settings, token)
    if role is None:
        raise Problem(403, "the bearer token is not valid")
    if access is Access.ADMIN and role is not Role.ADMIN:
        raise Problem(403, "this needs an admin token; a read token was given")


# --- the dashboard's login session -----------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _session_key(settings: Settings) -> bytes:
    if settings.leadflow_session_secret:
        return settings.leadflow_session_secret.encode()
    # Derived from the admin tokens: rotating them away also ends every session.
    material = "\n".join(sorted(settings.api_tokens)).encode()
    return hmac.new(b"leadflow-session-v1", material, hashlib.sha256).digest()


def _fingerprint(key: bytes, token: str) -> str:
    return hmac.new(key, b"token:" + token.encode(), hashlib.sha256).hexdigest()[:24]


def issue_session(settings: Settings, token: str, now: float | None = None) -> str | None:
    """A signed cookie value for a valid read or admin ``token``; None if the token is not valid.

    The cookie names the token only by an HMAC fingerprint, so removing a token from the settings
    also ends the sessions opened with it.
    """
    role = role_of(settings, token)
    if role is None:
        return None
    key = _session_key(settings)
    expires = int((time.time() if now is None else now) + SESSION_SECONDS)
    payload = _b64(orjson.dumps({"r": role.value, "e": expires, "f": _fingerprint(key, token)}))
    return f"{payload}.{_b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())}"


def verify_session(settings: Settings, value: str, now: float | None = None) -> Role | None:
    """The role of a valid, unexpired session cookie opened with a still-configured token."""
    key = _session_key(settings)
    payload, _, signature = value.partition(".")
    expected = _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())
    if not signature or not hmac.compare_digest(signature.encode(), expected.encode()):
        return None
    try:
        data: Any = orjson.loads(_unb64(payload))
        role, expires, fingerprint = Role(data["r"]), int(data["e"]), str(data["f"])
    except (ValueError, KeyError, TypeError):
        return None
    if expires < (time.time() if now is None else now):
        return None
    tokens = settings.api_tokens if role is Role.ADMIN else settings.read_tokens
    if not any(hmac.compare_digest(fingerprint, _fingerprint(key, t)) for t in tokens):
        return None
    return role


# --- FastAPI dependencies (OpenAPI security schemes + a second check) -------------------------

_read_scheme = HTTPBearer(
    scheme_name="readToken",
    description="A read token (LEADFLOW_READ_TOKENS) or an admin token (LEADFLOW_API_TOKEN).",
    auto_error=False,
)
_admin_scheme = HTTPBearer(
    scheme_name="adminToken",
    description="An admin token (LEADFLOW_API_TOKEN).",
    auto_error=False,
)
Credentials = HTTPAuthorizationCredentials | None


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.runtime.settings
    return settings


def require_read(request: Request, cred: Annotated[Credentials, Security(_read_scheme)]) -> None:
    """A read or admin bearer token."""
    check(_settings(request), Access.READ, cred.credentials if cred else None, None)


def require_admin(request: Request, cred: Annotated[Credentials, Security(_admin_scheme)]) -> None:
    """An admin bearer token."""
    check(_settings(request), Access.ADMIN, cred.credentials if cred else None, None)


def require_ops(request: Request, cred: Annotated[Credentials, Security(_read_scheme)]) -> None:
    """Operations endpoints (metrics, docs): open in dev mode, a read token otherwise."""
    check(_settings(request), Access.OPS, cred.credentials if cred else None, None)


def require_session(request: Request, cred: Annotated[Credentials, Security(_read_scheme)]) -> None:
    """The dashboard: a read token as a bearer header (scripts) or the login cookie (browsers).

    Without either, browsers are sent to the login form (303)."""
    token = cred.credentials if cred else None
    session = request.cookies.get(SESSION_COOKIE)
    try:
        check(_settings(request), Access.SESSION, token, session)
    except Problem as exc:
        if exc.status == 401:
            raise Problem(303, "log in first", headers={"Location": LOGIN_PATH}) from None
        raise


ReadAuth = Depends(require_read)
AdminAuth = Depends(require_admin)
OpsAuth = Depends(require_ops)
SessionAuth = Depends(require_session)

ACCESS_OF_DEPENDENCY = {
    require_read: Access.READ,
    require_admin: Access.ADMIN,
    require_ops: Access.OPS,
    require_session: Access.SESSION,
}
"""Which access level each dependency declares (read by the guard middleware)."""
