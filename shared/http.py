"""The HTTP shell every service shares: lifespan, health, metrics, problem+json and auth."""

from __future__ import annotations

import gc
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.routing import iter_route_contexts
from opentelemetry import propagate
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict
from starlette._exception_handler import wrap_app_handling_exceptions
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.auth import (
    ACCESS_OF_DEPENDENCY,
    LOGIN_PATH,
    SESSION_COOKIE,
    Access,
    OpsAuth,
    bearer_of,
    check,
)
from shared.logs import register_secrets
from shared.metrics import HTTP_DURATION, HTTP_REQUESTS, exposition, method_label
from shared.openapi import install_openapi
from shared.problems import Problem, install_problem_handlers, problem_response
from shared.runtime import Runtime
from shared.settings import Settings
from shared.tracing import active as tracing_active
from shared.tracing import setup_tracing, shutdown_tracing, tracer

#: Objects allocated (net) before the collector looks at the young generation (default 700).
GC_YOUNG_THRESHOLD = 10_000


class HealthOut(BaseModel):
    """The process is alive."""

    status: str


class ReadinessOut(BaseModel):
    """Every check the runtime makes, when all pass."""

    model_config = ConfigDict(extra="allow")

    status: str
    database: str
    broker: str
    workers: dict[str, dict[str, Any]]
    problems: list[str]


def settle_heap() -> None:
    """Tune the garbage collector for a service's life, once it has started.

    Everything built so far (modules, schemas, the app, pools) lives as long as the process:
    frozen out of the collector's way, a full collection no longer walks it again and again
    under load (~90 us of every form post of capture went to those walks). And a young
    collection starts whenever 700 more objects are alive than at the last one: under load
    that is every request or batch or two (their objects die by reference counting anyway),
    each walking everything in flight, ~20 us of a form post. Requests and batches make next
    to no cyclic garbage, so collecting after 10,000 costs little memory.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def create_app(
    runtime: Runtime,
    title: str,
    routers: Sequence[APIRouter],
    *,
    max_body_bytes: int | None = None,
    routers_first: bool = False,
) -> FastAPI:
    """A FastAPI app whose lifespan starts and drains ``runtime``.

    Every request passes the :class:`GuardMiddleware` first: the credential its route needs and
    the body size limit (``max_body_bytes``, default ``LEADFLOW_MAX_BODY_BYTES``) are checked
    before any of the body is read.
    """

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Traces only when the OTEL_* variables ask for them (see shared.tracing).
        tracing = setup_tracing(runtime.name)
        await runtime.start()
        settle_heap()
        try:
            yield
        finally:
            await runtime.stop()
            if tracing:
                shutdown_tracing()

    # Whatever this process logs from now on is scrubbed of its configured secrets.
    register_secrets(runtime.settings.secrets)
    app = FastAPI(title=title, version="1.0.0", lifespan=lifespan)
    app.state.runtime = runtime
    install_problem_handlers(app)

    @app.get("/healthz", tags=["operations"], response_model=HealthOut)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], response_model=ReadinessOut)
    async def readyz() -> Response:
        from fastapi.responses import JSONResponse

        # The runtime knows what is wrong (dead or stalled consumers, DB, broker, relay).
        ready, report = await runtime.readiness()
        if ready:
            return JSONResponse(report)
        raise Problem(
            503,
            "; ".join(report["problems"]),
            errors=[{"loc": "/readiness", "msg": p} for p in report["problems"]],
        )

    @app.get("/metrics", tags=["operations"], include_in_schema=False, dependencies=[OpsAuth])
    async def metrics() -> Response:
        return Response(exposition(), media_type=CONTENT_TYPE_LATEST)

    before = len(app.router.routes)
    for router in routers:
        app.include_router(router)
    if routers_first:
        # Matched in order: the operations routes and the OpenAPI pages, matched first, cost
        # ~30 us of every request to a service route. Only for services none of whose
        # routes shares a path with them (capture's public posts).
        routes = app.router.routes
        routes[:] = [*routes[before:], *routes[:before]]
    install_openapi(app, lambda route: access_of(route, frozenset()))
    # Innermost of the middleware below: only requests the guard let through reach it.
    app.add_middleware(DirectDispatch, routes_of=app)
    app.add_middleware(
        GuardMiddleware,
        routes_of=app,
        settings=runtime.settings,
        max_body_bytes=max_body_bytes or runtime.settings.leadflow_max_body_bytes,
    )
    # Outermost, so refusals by the guard are counted and traced too.
    app.add_middleware(ObservabilityMiddleware, routes_of=app)
    return app


_ORDER = [Access.PUBLIC, Access.OPS, Access.READ, Access.SESSION, Access.ADMIN]


def access_of(route: Any, docs_paths: frozenset[str]) -> Access:
    """The access level a route declares through its auth dependencies (the strictest wins)."""
    dependant = getattr(route, "dependant", None)
    if dependant is not None:
        levels = [Access.PUBLIC]
        stack = list(dependant.dependencies)
        while stack:
            dep = stack.pop()
            if dep.call in ACCESS_OF_DEPENDENCY:
                levels.append(ACCESS_OF_DEPENDENCY[dep.call])
            stack.extend(dep.dependencies)
        return max(levels, key=_ORDER.index)
    # FastAPI's own /openapi.json, /docs and /redoc are plain routes without dependencies.
    if getattr(route, "path", None) in docs_paths:
        return Access.OPS
    return Access.PUBLIC


#: Distinct (method, path) pairs whose access level the guard remembers.
ACCESS_CACHE_SIZE = 4096


class GuardMiddleware:
    """Credential check and body size limit, both before the application reads any body.

    FastAPI reads (and buffers) a whole JSON body before it resolves dependencies, so a bearer
    dependency alone would read a 200 MB upload before answering 401. This ASGI middleware finds
    the route of the request, checks the credential that route declares, refuses a declared
    ``Content-Length`` over the limit, and counts streamed (chunked) bytes so an undeclared
    oversized body is cut off at the limit with 413.
    """

    def __init__(
        self, app: ASGIApp, *, routes_of: FastAPI, settings: Settings, max_body_bytes: int
    ) -> None:
        self.app = app
        self.fastapi = routes_of
        self.settings = settings
        self.limit = max_body_bytes
        self._routes: list[tuple[Any, Access]] | None = None
        self._routes_seen = -1
        # (method, path) -> access: matching every route's regex per request cost about 5% of a
        # form post. Bounded (paths carry ids), and dropped whenever the route table changes.
        self._access: dict[tuple[str, str], Access] = {}

    def _table(self) -> list[tuple[Any, Access]]:
        """Every route (included routers flattened) with its access level, built once."""
        app = self.fastapi
        if self._routes is None or self._routes_seen != len(app.router.routes):
            docs = app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url
            paths = frozenset(p for p in docs if p)
            self._routes = [
                (rc, access_of(rc, paths)) for rc in iter_route_contexts(app.router.routes)
            ]
            self._routes_seen = len(app.router.routes)
        return self._routes

    def _route_access(self, scope: Scope) -> Access:
        seen = self._routes_seen
        table = self._table()
        if self._routes_seen != seen:
            self._access.clear()
        key = (str(scope.get("method", "")), str(scope.get("path", "")))
        known = self._access.get(key)
        if known is not None:
            return known
        access = self._match(table, scope)
        if len(self._access) >= ACCESS_CACHE_SIZE:
            self._access.clear()
        self._access[key] = access
        return access

    @staticmethod
    def _match(table: list[tuple[Any, Access]], scope: Scope) -> Access:
        partial: list[Access] = []
        for route, access in table:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return access
            if match is Match.PARTIAL:
                partial.append(access)
        # Only a wrong method matched (405): guard it like the strictest route of that path, so
        # probing methods needs the same credential as using them.
        return max(partial, key=_ORDER.index, default=Access.PUBLIC)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        access = self._route_access(scope)
        if access is not Access.PUBLIC:  # a public route needs no credential: nothing to read
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            try:
                check(self.settings, access, bearer_of(headers), _cookie(headers, SESSION_COOKIE))
            except Problem as problem:
                if access is Access.SESSION and problem.status == 401:
                    # A browser without a session goes to the login form.
                    await _send_redirect(send, LOGIN_PATH)
                else:
                    await problem_response(problem)(scope, receive, send)
                return
        declared = ""
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value.decode("latin-1")  # the last one, as a dict of them would keep
        if declared.isdigit():
            if int(declared) > self.limit:
                await self._too_large(scope, receive, send)
                return
            # The server frames the body by its declared length (h11 refuses more), so only
            # a body without one (chunked) needs counting as it arrives.
            await self.app(scope, receive, send)
            return
        await self._limited(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        problem = Problem(413, f"the body is larger than {self.limit} bytes")
        await problem_response(problem)(scope, receive, send)

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = {"seen": 0, "started": False, "refused": False}

        async def counting_receive() -> Message:
            if state["refused"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["seen"] += len(message.get("body", b""))
                if state["seen"] > self.limit:
                    # Answer 413 now (if nothing was sent yet) and tell the app the client left,
                    # so it stops reading; whatever it tries to send afterwards is dropped.
                    state["refused"] = True
                    if not state["started"]:
                        state["started"] = True
                        await self._too_large(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if state["refused"]:
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not state["refused"]:
                raise


#: A route may offer ``direct_endpoint``, an ``async (request) -> Response`` that answers it
#: without FastAPI's request machinery (capture's ``DirectRoute``): see :class:`DirectDispatch`.
DIRECT_ENDPOINT = "direct_endpoint"

DirectEndpoint = Callable[[Request], Awaitable[Response]]


class DirectDispatch:
    """Calls the ``direct_endpoint`` of a route that offers one itself, skipping Starlette's
    ExceptionMiddleware, FastAPI's exit stacks, the router and the route's own wrappers: those
    layers took about a fifth of the CPU of a form post whose endpoint needs none of them.

    It sits inside the guard and the observability middleware, so both see the request as
    before. The route is the one the router would pick (the first that fully matches), and
    an exception goes to the app's handlers as ExceptionMiddleware would send it; anything
    else (no direct route, FastAPI's own telemetry on) takes the usual path.
    """

    def __init__(self, app: ASGIApp, *, routes_of: FastAPI) -> None:
        self.app = app
        self.fastapi = routes_of
        self._routes_seen = -1
        self._table: list[tuple[Any, DirectEndpoint | None]] = []
        self._any = False
        # (method, path, root path) -> (route, child scope, endpoint), or None for the usual path.
        # Bounded (paths carry ids), dropped whenever the route table changes.
        self._hits: dict[tuple[str, str, str], tuple[Any, Scope, DirectEndpoint] | None] = {}
        self._handlers: tuple[dict[Any, Any], dict[int, Any]] | None = None

    def _refresh(self) -> None:
        routes = self.fastapi.router.routes
        if self._routes_seen == len(routes):
            return
        table: list[tuple[Any, DirectEndpoint | None]] = []
        for rc in iter_route_contexts(routes):
            direct = getattr(rc.original_route, DIRECT_ENDPOINT, None)
            # Dependencies added where the router was included would be skipped: not direct.
            dependant = getattr(rc, "dependant", None)
            if dependant is not None and dependant.dependencies:
                direct = None
            table.append((rc, direct))
        self._table = table
        self._any = any(direct is not None for _, direct in table)
        self._hits.clear()
        self._handlers = None
        self._routes_seen = len(routes)

    def _hit(self, scope: Scope) -> tuple[Any, Scope, DirectEndpoint] | None:
        key = (str(scope["method"]), str(scope["path"]), str(scope.get("root_path", "")))
        try:
            return self._hits[key]
        except KeyError:
            pass
        hit = None
        for rc, direct in self._table:
            match, child = rc.matches(scope)
            if match is Match.FULL:
                # The path params depend on the path alone, so the match is kept.
                hit = (rc.original_route, child, direct) if direct is not None else None
                break
        if len(self._hits) >= ACCESS_CACHE_SIZE:
            self._hits.clear()
        self._hits[key] = hit
        return hit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._refresh()
        hit = (
            self._hit(scope)
            if self._any and scope["type"] == "http" and "fastapi.telemetry" not in scope
            else None
        )
        if hit is None:
            await self.app(scope, receive, send)
            return
        route, child, endpoint = hit
        # What the router and the route would have put in the scope.
        scope.update(child)
        scope["path_params"] = dict(child.get("path_params", {}))
        scope["route"] = route
        scope.setdefault("router", self.fastapi.router)
        scope["starlette.exception_handlers"] = self._exception_handlers()
        request = Request(scope, receive, send)

        async def answer(scope: Scope, receive: Receive, send: Send) -> None:
            response = await endpoint(request)
            await response(scope, receive, send)

        # an exception goes to the app's handlers exactly as ExceptionMiddleware sends it
        await wrap_app_handling_exceptions(answer, request)(scope, receive, send)

    def _exception_handlers(self) -> tuple[dict[Any, Any], dict[int, Any]]:
        """The handlers ExceptionMiddleware has: all the app's but those of 500 and Exception
        (ServerErrorMiddleware's, outside)."""
        if self._handlers is None:
            by_type: dict[Any, Any] = {}
            by_status: dict[int, Any] = {}
            for key, value in self.fastapi.exception_handlers.items():
                if key in (500, Exception):
                    continue
                if isinstance(key, int):
                    by_status[key] = value
                else:
                    by_type[key] = value
            self._handlers = by_type, by_status
        return self._handlers


UNMATCHED = "<unmatched>"


class ObservabilityMiddleware:
    """Request metrics and a server span per HTTP request, labelled by route *template*.

    ``leadflow_http_requests_total{method,route,status}`` and
    ``leadflow_http_request_duration_seconds{method,route}`` use the matched route's path
    template (``/leads/{lead_id}``), never the raw path, so the label set stays bounded; a path
    no route matches is ``<unmatched>``. The span continues the caller's W3C ``traceparent``
    and is current while the app runs, so events enqueued by the request carry its trace.
    """

    def __init__(self, app: ASGIApp, *, routes_of: FastAPI) -> None:
        self.app = app
        self.fastapi = routes_of
        # Metric children by labels (bounded: methods x route templates x statuses).
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._timers: dict[tuple[str, str], Any] = {}

    def _observe(self, method: str, route: str, code: int, started: float) -> None:
        counter = self._counters.get((method, route, code))
        if counter is None:
            counter = HTTP_REQUESTS.labels(method, route, str(code))
            self._counters[(method, route, code)] = counter
        counter.inc()
        timer = self._timers.get((method, route))
        if timer is None:
            timer = self._timers[(method, route)] = HTTP_DURATION.labels(method, route)
        timer.observe(time.perf_counter() - started)

    def _template(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None:  # answered before routing (the guard): match it here
            partial = None
            for candidate in self.fastapi.router.routes:
                match, _ = candidate.matches(scope)
                if match is Match.FULL:
                    route = candidate
                    break
                if match is Match.PARTIAL and partial is None:
                    partial = candidate
            route = route or partial
        path = getattr(route, "path_format", None) or getattr(route, "path", None)
        return str(path) if path else UNMATCHED

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = method_label(str(scope.get("method", "")))
        status = {"code": 500}

        async def observed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        started = time.perf_counter()
        caller = any(k == b"traceparent" for k, _ in scope["headers"])
        if not (caller or tracing_active()):
            # Nothing records spans and no caller context to pass on: metrics only.
            try:
                await self.app(scope, receive, observed_send)
            finally:
                self._observe(method, self._template(scope), status["code"], started)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        parent = propagate.extract(headers)
        with tracer().start_as_current_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.scheme": scope.get("scheme", "")},
        ) as span:
            try:
                await self.app(scope, receive, observed_send)
            finally:
                route = self._template(scope)
                code = status["code"]
                self._observe(method, route, code, started)
                if span.is_recording():
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                    span.set_attribute("http.response.status_code", code)
                    if code >= 500:
                        span.set_status(StatusCode.ERROR)


def _cookie(headers: dict[str, str], name: str) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name and value:
            return value
    return None


async def _send_redirect(send: Send, location: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [(b"location", location.encode()), (b"content-length", b"0")],
        }
    )
    await send({"type": "http.response.body", "body": b""})


def get_runtime(request: Request) -> Runtime:
    """The runtime of the app serving this request."""
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
