"""Every route of every service needs the credential its nature calls for (contract: Credentials).

The apps are built outside dev mode and asked without their lifespan: the guard answers before
any handler, database or broker is involved, and a handler reached with a valid token may fail
for want of a database (that is not a 401/403, which is all these tests look at).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

from services.capture.main import build_app as capture_app
from services.routing.main import build_app as routing_app
from services.scoring.main import build_app as scoring_app
from shared.settings import Settings, load_settings

ADMIN = "admin-token-0123456789abcdef"
READER = "read-token-0123456789abcdef"
WRONG = {"Authorization": "Bearer not-a-valid-token-at-all"}
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}
AS_READER = {"Authorization": f"Bearer {READER}"}
HEALTH = {"/healthz", "/readyz"}
DOCS = ("/openapi.json", "/docs", "/redoc", "/metrics")
FACTORIES: dict[str, Callable[[Settings], FastAPI]] = {
    "capture": capture_app,
    "scoring": scoring_app,
    "routing": routing_app,
}


def settings(dev: bool = False) -> Settings:
    return load_settings(
        leadflow_dev=dev,
        leadflow_api_token=ADMIN,
        leadflow_read_tokens=READER,
        database_url="sqlite+aiosqlite:///:memory:",
        kafka_bootstrap_servers="127.0.0.1:1",
    )


def client(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://t")


def operations(app: FastAPI) -> list[tuple[str, str]]:
    """(method, concrete path) of every API route, path parameters filled in."""
    out: list[tuple[str, str]] = []
    for route in iter_route_contexts(app.routes):
        if isinstance(route.original_route, APIRoute):
            path = re.sub(r"\{[^}]+\}", "x1", str(route.path))
            out.extend((m, path) for m in sorted(route.methods or ()) if m != "HEAD")
    return out


def refused(resp: httpx.Response) -> bool:
    """A 401/403 of the credential check (capture's own 403s, e.g. a bad origin, are not)."""
    problem = resp.headers.get("content-type") == "application/problem+json"
    return resp.status_code in (401, 403) and problem and "token" in resp.text


def protected(name: str, method: str, path: str) -> str | None:
    """What the contract says a route needs: None (public), "read" or "admin"."""
    if path in HEALTH or method == "OPTIONS":
        return None
    if path.startswith("/v1/deadletters"):
        # Parked events hold whole payloads (personal data): admin only, reads included.
        return "admin"
    if name == "capture":
        return "admin" if path.endswith("/attendance") else None
    if path in ("/login", "/logout"):
        return None
    return "read" if method == "GET" else "admin"


@pytest.mark.parametrize("name", sorted(FACTORIES))
async def test_each_route_refuses_missing_wrong_and_too_weak_credentials(name: str) -> None:
    app = FACTORIES[name](settings())
    checked = 0
    async with client(app) as http:
        for method, path in operations(app):
            need = protected(name, method, path)
            if path == "/metrics":
                need = "read"
            bare = await http.request(method, path, content=b"{}")
            if need is None:
                assert not refused(bare), (method, path, bare.text)
                continue
            checked += 1
            if path == "/dashboard":
                # A browser without a session is sent to the login form.
                assert bare.status_code == 303 and bare.headers["location"] == "/login"
            else:
                assert bare.status_code == 401, (method, path, bare.status_code)
                assert bare.headers["www-authenticate"] == "Bearer"
                assert bare.headers["content-type"] == "application/problem+json"
            wrong = await http.request(method, path, headers=WRONG, content=b"{}")
            assert wrong.status_code == 403, (method, path)
            assert wrong.headers["content-type"] == "application/problem+json"
            as_reader = await http.request(method, path, headers=AS_READER, content=b"{}")
            if need == "admin":
                assert as_reader.status_code == 403, (method, path)
            else:
                assert not refused(as_reader), (method, path)
                as_admin = await http.request(method, path, headers=AS_ADMIN)
                assert not refused(as_admin), (method, path)
    assert checked >= (1 if name == "capture" else 5)


@pytest.mark.parametrize("name", sorted(FACTORIES))
async def test_docs_and_metrics_need_a_read_token_outside_dev_mode(name: str) -> None:
    async with client(FACTORIES[name](settings())) as http:
        for path in DOCS:
            assert (await http.get(path)).status_code == 401, path
            assert (await http.get(path, headers=WRONG)).status_code == 403, path
            assert (await http.get(path, headers=AS_READER)).status_code == 200, path
    async with client(FACTORIES[name](settings(dev=True))) as http:
        for path in DOCS:
            assert (await http.get(path)).status_code == 200, path


@pytest.mark.parametrize("name", sorted(FACTORIES))
async def test_openapi_declares_the_bearer_schemes(name: str) -> None:
    spec: dict[str, Any] = FACTORIES[name](settings()).openapi()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["adminToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An admin token (LEADFLOW_API_TOKEN).",
    }
    for path, item in spec["paths"].items():
        for method, op in item.items():
            need = protected(name, method.upper(), path)
            declared = {k for req in op.get("security", []) for k in req}
            if need == "admin":
                assert declared == {"adminToken"}, (method, path)
            elif need == "read":
                assert declared == {"readToken"}, (method, path)
            elif name == "capture" and op.get("tags") == ["tracking"]:
                # Segment's write key (public by design: it names the source, not a secret).
                assert declared == {"writeKey"}, (method, path)
            else:
                assert not declared, (method, path)


async def test_capture_public_endpoints_stay_public() -> None:
    async with client(capture_app(settings())) as http:
        for method, path in [
            ("GET", "/capture.js"),
            ("POST", "/v1/forms/demo-request/submissions"),
            ("POST", "/v1/downloads"),
            ("POST", "/v1/webinars/w1/registrations"),
            ("POST", "/v1/track"),
            ("POST", "/v1/batch"),
            ("POST", "/v1/webhooks/meta"),
            ("GET", "/healthz"),
        ]:
            resp = await http.request(method, path, json={})
            assert not refused(resp), (method, path, resp.text)


async def test_dependencies_check_again_without_the_middleware() -> None:
    """Defence in depth: a route mounted on an app without the guard still refuses."""
    from types import SimpleNamespace

    from shared.auth import AdminAuth, ReadAuth
    from shared.problems import install_problem_handlers

    bare_app = FastAPI()
    bare_app.state.runtime = SimpleNamespace(settings=settings())
    install_problem_handlers(bare_app)

    @bare_app.get("/r", dependencies=[ReadAuth])
    async def read() -> dict[str, str]:
        return {"ok": "read"}

    @bare_app.post("/a", dependencies=[AdminAuth])
    async def admin() -> dict[str, str]:
        return {"ok": "admin"}

    async with client(bare_app) as http:
        assert (await http.get("/r")).status_code == 401
        assert (await http.get("/r", headers=WRONG)).status_code == 403
        assert (await http.get("/r", headers=AS_READER)).status_code == 200
        assert (await http.post("/a", headers=AS_READER)).status_code == 403
        assert (await http.post("/a", headers=AS_ADMIN)).status_code == 200


async def test_probing_other_methods_needs_the_credential_too() -> None:
    async with client(scoring_app(settings())) as http:
        # PUT is no method of /v1/leads/{id}: still no answer (not even 405) without a token.
        assert (await http.put("/v1/leads/x1")).status_code == 401
        assert (await http.put("/v1/leads/x1", headers=AS_ADMIN)).status_code == 405
        assert (await http.get("/no-such-path")).status_code == 404


async def test_the_remembered_access_follows_routes_added_later() -> None:
    # The guard remembers each (method, path)'s access level; a route added afterwards (a
    # router included late) must not inherit what the path meant before it existed.
    from fastapi import APIRouter

    from shared.auth import AdminAuth

    app = scoring_app(settings())
    async with client(app) as http:
        assert (await http.get("/v1/late")).status_code == 404  # public: no such route yet
        assert (await http.get("/v1/late")).status_code == 404  # remembered, same answer
        late = APIRouter(dependencies=[AdminAuth])

        @late.get("/v1/late")
        async def _late() -> dict[str, str]:
            return {"ok": "yes"}

        app.include_router(late)
        assert (await http.get("/v1/late")).status_code == 401
        assert (await http.get("/v1/late", headers=AS_ADMIN)).status_code == 200
