"""Reading public requests safely: size limits, content types, body parsing, rate limits, CORS."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import (
    AsyncGenerator,
    Callable,
    Collection,
    Coroutine,
    Iterable,
    Iterator,
    Sequence,
)
from contextlib import contextmanager
from typing import Any, get_type_hints
from urllib.parse import parse_qsl, urlsplit

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartParser
from starlette.requests import ClientDisconnect

from services.capture.domain import jsonsafe
from services.capture.domain.ratelimit import Network, TokenBuckets, client_address
from services.capture.domain.segment import (
    BodyTooLarge,
    CorruptBody,
    UnsupportedEncoding,
    decode_content,
)
from shared.problems import Problem

log = logging.getLogger(__name__)

FORM_TYPES = ("application/json", "application/x-www-form-urlencoded", "multipart/form-data")


class DirectRoute(APIRoute):
    """An ``APIRoute``, documented as any other, whose endpoint is called with the request
    and its path parameters directly when that is all it takes (no dependencies, no body or
    query parameters, text path parameters, a :class:`Response` returned). FastAPI's
    dependency solving was a tenth of the CPU of a form post; such routes parse their own
    bodies anyway. Any other endpoint is handled the usual way.

    Such a route offers its handler as ``direct_endpoint``: the app's
    :class:`~shared.http.DirectDispatch` calls it without the router and FastAPI's request
    machinery.
    """

    direct_endpoint: Callable[[Request], Coroutine[Any, Any, Response]] | None = None

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        d = self.dependant
        request_name = d.request_param_name
        try:
            returns = get_type_hints(self.endpoint).get("return")
        except (NameError, TypeError):
            returns = None
        direct = (
            inspect.iscoroutinefunction(self.endpoint)
            and isinstance(returns, type)
            and issubclass(returns, Response)
            and not (d.dependencies or d.query_params or d.header_params or d.cookie_params)
            and not d.body_params
            and all(p.field_info.annotation is str for p in d.path_params)
        )
        if not direct or request_name is None:
            self.direct_endpoint = None
            return super().get_route_handler()
        endpoint, name = self.endpoint, request_name

        async def handler(request: Request) -> Response:
            response: Response = await endpoint(**{name: request}, **request.path_params)
            return response

        self.direct_endpoint = handler
        return handler


def media_type(request: Request) -> str:
    """The request's media type without parameters, lower-cased."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body; anything over ``limit`` bytes is refused with 413 before it is all read."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Problem(413, f"the body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Problem(413, f"the body is larger than {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        # The client hung up mid-body: an everyday event on the public internet, not a server
        # fault. Nothing is stored; the answer goes nowhere, but it must not be a 500 traceback.
        log.info("client disconnected before sending the whole body (%d bytes read)", size)
        raise Problem(400, "the client disconnected before the body was complete") from None
    return b"".join(chunks)


#: Compressed bytes allowed beyond the decoded limit (gzip's header and an incompressible body).
ENCODING_SLACK = 1024


async def read_decoded_body(request: Request, limit: int) -> bytes:
    """The body decoded by its ``Content-Encoding`` (gzip, deflate): 413 when the decoded body
    is over ``limit`` bytes (decoding stops there), 400 for corrupt data, 415 for an unknown
    coding."""
    encoding = request.headers.get("content-encoding", "").strip()
    if not encoding or encoding.lower() == "identity":
        return await read_body(request, limit)
    raw = await read_body(request, limit + ENCODING_SLACK)
    try:
        return decode_content(raw, encoding, limit)
    except BodyTooLarge as exc:
        raise Problem(413, str(exc)) from None
    except CorruptBody as exc:
        raise Problem(400, f"the {encoding[:40]} body cannot be decoded: {exc}"[:300]) from None
    except UnsupportedEncoding as exc:
        raise Problem(
            415,
            f"unsupported content encoding {str(exc)[:40]}; use gzip or deflate",
            headers={"Accept-Encoding": "gzip, deflate"},
        ) from None


def _control_characters(loc: str) -> Problem:
    return Problem(
        422,
        f"{loc.rsplit('/', 1)[-1]} must not contain control characters",
        errors=[{"loc": loc, "msg": "must not contain control characters"}],
    )


def parse_json_object(
    body: bytes, what: str = "body", identity_keys: Collection[str] = jsonsafe.IDENTITY_KEYS
) -> dict[str, Any]:
    """A JSON object from bytes: 400 if not JSON, 422 if not an object or if an identity field
    (``identity_keys``, at any depth) holds control characters."""
    try:
        value = jsonsafe.loads(body, identity_keys)
    except jsonsafe.ControlCharacters as exc:
        raise _control_characters(f"/body{exc.loc}") from None
    except ValueError as exc:
        raise Problem(400, f"the {what} is not valid JSON: {exc}"[:300]) from None
    if not isinstance(value, dict):
        raise Problem(
            422,
            f"the {what} must be a JSON object",
            errors=[{"loc": "/body", "msg": "must be an object"}],
        )
    return value


async def _one_chunk(body: bytes) -> AsyncGenerator[bytes, None]:
    yield body


def _collect(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    # A repeated name (a group of checkboxes) keeps all its values as a list.
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in jsonsafe.IDENTITY_KEYS and jsonsafe.has_control_characters(value):
            raise _control_characters(f"/body/{key}")
        key, value = jsonsafe.clean_str(key), jsonsafe.clean_str(value)
        if key in out:
            prev = out[key]
            out[key] = [*prev, value] if isinstance(prev, list) else [prev, value]
        else:
            out[key] = value
    return out


async def parse_fields(request: Request, body: bytes) -> dict[str, Any]:
    """Form fields from a JSON, urlencoded or multipart body (415 for anything else)."""
    kind = media_type(request)
    if kind == "application/json" or kind.endswith("+json"):
        return parse_json_object(body)
    if kind == "application/x-www-form-urlencoded":
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise Problem(400, "the form body is not UTF-8") from None
        try:
            pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=1000)
        except ValueError:  # more than max_num_fields
            raise Problem(413, "the form has more than 1000 fields") from None
        return _collect(pairs)
    if kind == "multipart/form-data":
        parser = MultiPartParser(request.headers, _one_chunk(body), max_files=10, max_fields=1000)
        try:
            form = await parser.parse()
        except Exception as exc:  # python-multipart raises several types for broken bodies
            raise Problem(400, f"the multipart body cannot be parsed: {exc}"[:300]) from None
        pairs = []
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                await value.close()  # files are not lead data; ignore them
                continue
            pairs.append((key, value))
        return _collect(pairs)
    raise Problem(
        415, f"unsupported content type {kind or '(none)'}; use one of " + ", ".join(FORM_TYPES)
    )


class RateLimiter:
    """Per-IP token buckets; raises 429 with ``Retry-After`` when a client exceeds its rate.

    The client is the TCP peer, unless the peer is in one of ``trusted_proxies``: then it is
    the rightmost untrusted address of ``X-Forwarded-For`` (see
    :func:`~services.capture.domain.ratelimit.client_address`).
    """

    def __init__(self, rate: float, burst: int, trusted_proxies: Sequence[Network] = ()) -> None:
        self.buckets = TokenBuckets(rate, burst)
        self.trusted = tuple(trusted_proxies)

    def client_ip(self, request: Request) -> str:
        """The address this request is charged to."""
        peer = request.client.host if request.client else "unknown"
        if not self.trusted:
            return peer
        return client_address(peer, request.headers.getlist("x-forwarded-for"), self.trusted)

    def check(self, request: Request) -> None:
        """Take a token for this request's client or refuse it."""
        wait = self.buckets.take(self.client_ip(request), time.monotonic())
        if wait > 0:
            raise Problem(
                429,
                "too many requests from this address; slow down",
                # older analytics.js releases read x-ratelimit-reset (seconds to wait) instead.
                headers={
                    "Retry-After": TokenBuckets.retry_after(wait),
                    "X-RateLimit-Reset": TokenBuckets.retry_after(wait),
                },
            )

    def charge(self, request: Request, cost: float) -> None:
        """Charge ``cost`` more tokens for work found inside an admitted request (the events of
        a tracking batch): the bucket may go into debt, so the client's next requests wait."""
        if cost > 0:
            self.buckets.charge(self.client_ip(request), cost, time.monotonic())


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of an absolute http(s) URL, else None."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def check_origin(request: Request, allowed: Iterable[str]) -> str | None:
    """The request's ``Origin`` if allowed (or absent: server posts have none); 403 otherwise."""
    origin = request.headers.get("origin")
    if origin is None:
        return None
    if origin.rstrip("/").lower() in {o.lower() for o in allowed}:
        return origin
    raise Problem(403, f"origin {origin[:200]} is not allowed to post here")


def cors_headers(origin: str | None) -> dict[str, str]:
    """CORS response headers for an allowed origin."""
    if not origin:
        return {}
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}


@contextmanager
def cors_on_problems(origin: str | None) -> Iterator[None]:
    """Add CORS headers to errors too, so a browser script can read why it was refused."""
    try:
        yield
    except Problem as problem:
        problem.headers.update(cors_headers(origin))
        raise


def preflight_response(origin: str, allow_headers: str) -> Response:
    """A 204 CORS preflight answer allowing POST from ``origin`` with ``allow_headers``."""
    return Response(
        status_code=204,
        headers={
            **cors_headers(origin),
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": allow_headers,
            "Access-Control-Max-Age": "600",
        },
    )


def preflight(request: Request, allowed: Iterable[str]) -> Response:
    """Answer a CORS preflight: 204 with the allow headers, or 403 for other origins."""
    origin = request.headers.get("origin")
    if origin is None or origin.rstrip("/").lower() not in {o.lower() for o in allowed}:
        raise Problem(403, "this origin may not post here")
    return preflight_response(origin, "Content-Type, Idempotency-Key, Authorization")
