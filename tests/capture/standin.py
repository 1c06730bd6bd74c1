"""A local stand-in for the third-party APIs (Meta Graph, LinkedIn Lead Sync), under uvicorn."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from shared.broker import free_port


@dataclass
class StandIn:
    """Canned answers by path; ``failures[path]`` answers 500 that many times first."""

    answers: dict[str, Any] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    queries: list[dict[str, str]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    #: Request paths as sent, percent-escapes intact (``calls`` holds them decoded).
    raw_paths: list[str] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/{path:path}")
        async def answer(path: str, request: Request) -> Response:
            path = "/" + path
            self.calls.append(path)
            self.queries.append(dict(request.query_params))
            self.headers.append(dict(request.headers))
            self.raw_paths.append(request.scope["raw_path"].decode("latin-1"))
            if self.failures.get(path, 0) > 0:
                self.failures[path] -= 1
                return JSONResponse({"error": "try later"}, status_code=500)
            if path not in self.answers:
                return JSONResponse({"error": "unknown"}, status_code=404)
            body = self.answers[path]
            if isinstance(body, str):  # raw JSON text (to keep big integers exact)
                return Response(body, media_type="application/json")
            return JSONResponse(body)

        return app


@asynccontextmanager
async def running_standin() -> AsyncIterator[StandIn]:
    """Serve a :class:`StandIn` on a free port for the duration of the block."""
    standin = StandIn(port=free_port())
    server = uvicorn.Server(
        uvicorn.Config(
            standin.app(), host="127.0.0.1", port=standin.port, log_level="warning", lifespan="off"
        )
    )
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield standin
    finally:
        server.should_exit = True
        await task
