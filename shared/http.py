"""The HTTP shell every service shares: lifespan, health, metrics, problem+json and auth."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared.problems import Problem, install_problem_handlers
from shared.runtime import Runtime


def create_app(runtime: Runtime, title: str, routers: Sequence[APIRouter]) -> FastAPI:
    """A FastAPI app whose lifespan starts and drains ``runtime``."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(title=title, version="1.0.0", lifespan=lifespan)
    app.state.runtime = runtime
    install_problem_handlers(app)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    async def readyz() -> Response:
        db = await runtime.check_database()
        broker = await runtime.check_broker()
        if db and broker:
            return Response('{"status":"ready"}', media_type="application/json")
        raise Problem(
            503, f"database {'up' if db else 'down'}, broker {'up' if broker else 'down'}"
        )

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    for router in routers:
        app.include_router(router)
    return app


def get_runtime(request: Request) -> Runtime:
    """The runtime of the app serving this request."""
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def require_token(request: Request) -> None:
    """Bearer ``LEADFLOW_API_TOKEN`` check for server-to-server and admin endpoints."""
    runtime = get_runtime(request)
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Problem(401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(token.strip().encode(), runtime.settings.api_token.encode()):
        raise Problem(403, "the bearer token is not valid")


BearerAuth = Depends(require_token)
