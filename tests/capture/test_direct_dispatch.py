"""Routes a ``DirectRoute`` can answer alone (capture's form posts) skip FastAPI's router and
request machinery (``shared.http.DirectDispatch``) and still behave as any route: guarded,
counted by route template, errors as problem+json, the router's choice of route kept."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from prometheus_client import REGISTRY

from services.capture.http_input import DirectRoute, read_body
from shared.db import create_engine
from shared.http import create_app
from shared.problems import Problem
from shared.runtime import Runtime
from tests.support import make_settings

LIMIT = 64


def _via_router(request: Request) -> bool:
    # FastAPI's request_response puts its exit stacks into the scope; a direct call does not.
    return "fastapi_inner_astack" in request.scope


async def _nothing() -> None:
    return None


def _routers() -> list[APIRouter]:
    shadow = APIRouter()

    @shadow.post("/shadowed/fixed")
    async def shadowing(request: Request) -> Response:
        return Response(f"shadowing {_via_router(request)}")

    router = APIRouter(route_class=DirectRoute)

    @router.post("/direct/{thing_id}", status_code=202)
    async def direct(thing_id: str, request: Request) -> Response:
        if thing_id == "refused":
            raise Problem(422, "refused here", headers={"X-Why": "test"})
        if thing_id == "broken":
            raise RuntimeError("a bug")
        body = await read_body(request, 10_000)
        return Response(f"{thing_id} {len(body)} {_via_router(request)}", status_code=202)

    @router.post("/shadowed/{thing_id}")
    async def shadowed(thing_id: str, request: Request) -> Response:
        return Response(f"shadowed {_via_router(request)}")

    @router.post("/with-dependency/{thing_id}")
    async def with_dependency(
        thing_id: str, request: Request, _: Annotated[None, Depends(_nothing)]
    ) -> Response:
        return Response(f"dependency {_via_router(request)}")

    return [shadow, router]


@pytest.fixture
async def app(sqlite_db_url: str) -> AsyncIterator[FastAPI]:
    settings = make_settings("127.0.0.1:1", sqlite_db_url)
    runtime = Runtime("t", settings, create_engine(sqlite_db_url))
    yield create_app(runtime, "t", _routers(), max_body_bytes=LIMIT)
    await runtime.engine.dispose()


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://t"
    )


def _count(method: str, route: str, status: str) -> float:
    labels = {"method": method, "route": route, "status": status}
    return REGISTRY.get_sample_value("leadflow_http_requests_total", labels) or 0.0


async def test_a_direct_route_is_answered_without_the_router_and_counted(app: FastAPI) -> None:
    before = _count("POST", "/direct/{thing_id}", "202")
    async with _client(app) as client:
        answer = await client.post("/direct/42", content=b"hello")
    assert (answer.status_code, answer.text) == (202, "42 5 False")
    assert _count("POST", "/direct/{thing_id}", "202") == before + 1


async def test_problems_of_a_direct_route_are_problem_json_and_counted(app: FastAPI) -> None:
    before = _count("POST", "/direct/{thing_id}", "422")
    async with _client(app) as client:
        refused = await client.post("/direct/refused", content=b"{}")
        broken = await client.post("/direct/broken", content=b"{}")
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["x-why"] == "test"
    assert refused.json()["detail"] == "refused here"
    assert _count("POST", "/direct/{thing_id}", "422") == before + 1
    # A bug is still the app's 500 problem, without a stack trace.
    assert broken.status_code == 500
    assert broken.headers["content-type"] == "application/problem+json"
    assert "RuntimeError" not in broken.text


async def test_the_guard_still_limits_direct_routes(app: FastAPI) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 20

    async with _client(app) as client:
        declared = await client.post("/direct/1", content=b"x" * (LIMIT + 1))
        chunked = await client.post("/direct/1", content=chunks())
    assert declared.status_code == 413
    assert chunked.status_code == 413
    assert chunked.headers["content-type"] == "application/problem+json"


async def test_the_router_still_decides_which_route_answers(app: FastAPI) -> None:
    async with _client(app) as client:
        # An earlier route of the same path wins, as in the router.
        assert (await client.post("/shadowed/fixed")).text == "shadowing True"
        assert (await client.post("/shadowed/other")).text == "shadowed False"
        # A route with dependencies is solved by FastAPI as before.
        assert (await client.post("/with-dependency/1")).text == "dependency True"
        # Another method of a direct route's path: 405 as before.
        wrong = await client.get("/direct/1")
    assert wrong.status_code == 405
    assert wrong.headers["content-type"] == "application/problem+json"
