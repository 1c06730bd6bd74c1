"""Baseline apps, each measured beside capture in the same run with the same uvicorn settings
(those of ``leadflow capture``: services/cli.py) and the same load generator:

- ``echo``: a bare FastAPI endpoint with a body model like a form post's; validates, answers 202.
- ``naive``: the same endpoint writing each lead straight into PostgreSQL (SQLAlchemy async,
  one INSERT and commit per request), the setup teams usually build by hand.

    python -m bench.baselines echo PORT [WORKERS]
    python -m bench.baselines naive PORT DATABASE_URL [WORKERS]

``WORKERS`` processes serve the port, as ``LEADFLOW_CAPTURE_WORKERS`` does for capture.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from shared.serving import SERVER_OPTIONS, serve_processes


class Submission(BaseModel):
    """A form post: contact fields, anything else kept."""

    model_config = ConfigDict(extra="allow")

    email: str
    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    phone: str | None = None
    consent_marketing: bool | None = None


def _answer(sub: Submission) -> JSONResponse:
    body = {"event_id": uuid.uuid4().hex, "lead_key": sub.email.lower(), "status": "accepted"}
    return JSONResponse(body, status_code=202)


def echo_app() -> FastAPI:
    app = FastAPI()

    @app.get("/readyz")
    async def ready() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/forms/{form_id}/submissions", status_code=202)
    async def submit(form_id: str, sub: Submission) -> JSONResponse:
        return _answer(sub)

    return app


def naive_app(url: str) -> FastAPI:
    engine = create_async_engine(url)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "CREATE TABLE IF NOT EXISTS naive_leads (id text PRIMARY KEY, form_id text, "
                    "email text, data jsonb, created_at timestamptz DEFAULT now())"
                )
            )
        yield
        await engine.dispose()

    app = FastAPI(lifespan=lifespan)
    insert = text(
        "INSERT INTO naive_leads (id, form_id, email, data) "
        "VALUES (:id, :form_id, :email, CAST(:data AS jsonb))"
    )

    @app.get("/readyz")
    async def ready() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/forms/{form_id}/submissions", status_code=202)
    async def submit(form_id: str, sub: Submission) -> JSONResponse:
        async with engine.begin() as conn:
            await conn.execute(
                insert,
                {
                    "id": uuid.uuid4().hex,
                    "form_id": form_id,
                    "email": sub.email.lower(),
                    "data": sub.model_dump_json(),
                },
            )
        return _answer(sub)

    return app


_NAIVE_URL = "BENCH_NAIVE_DATABASE_URL"


def naive_from_environment() -> FastAPI:
    """The naive app as each worker process builds it."""
    return naive_app(os.environ[_NAIVE_URL])


def serve(kind: str, port: int, workers: int = 1, database_url: str | None = None) -> None:
    """The uvicorn settings of ``leadflow capture`` (services/cli.py), workers included."""
    options = {"host": "127.0.0.1", "port": port, **SERVER_OPTIONS}
    if workers > 1:
        if database_url:
            os.environ[_NAIVE_URL] = database_url
        factory = "echo_app" if kind == "echo" else "naive_from_environment"
        serve_processes(f"bench.baselines:{factory}", workers, **options)
        return
    app = echo_app() if kind == "echo" else naive_app(database_url or "")
    uvicorn.Server(uvicorn.Config(app, **options)).run()


if __name__ == "__main__":
    kind, port, rest = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    url = rest.pop(0) if kind == "naive" else None
    serve(kind, port, int(rest[0]) if rest else 1, url)
