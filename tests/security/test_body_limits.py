"""H4: the credential and the body size are checked before a body is read, on a real server.

A raw socket streams a 50 MB body slowly enough to notice when the server answers; a server that
reads the body first only answers after the client has sent all of it.
"""

from __future__ import annotations

import asyncio
import select
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from services.scoring.main import build_app
from shared.broker import free_port
from shared.settings import load_settings
from tests.browser import serve

ADMIN = "admin-token-0123456789abcdef"
READER = "read-token-0123456789abcdef"
BODY = 50 * 1024 * 1024
CHUNK = 64 * 1024
LIMIT = 1024 * 1024


@asynccontextmanager
async def scoring_server() -> AsyncIterator[int]:
    """Scoring outside dev mode under uvicorn (no lifespan: nothing here reaches a handler)."""
    settings = load_settings(
        leadflow_dev=False,
        leadflow_api_token=ADMIN,
        leadflow_read_tokens=READER,
        database_url="sqlite+aiosqlite:///:memory:",
        kafka_bootstrap_servers="127.0.0.1:1",
    )
    port = free_port()
    async with serve(build_app(settings), port):
        yield port


def stream(port: int, head: str, *, chunked: bool) -> tuple[int, int, bytes]:
    """Send ``head`` then up to BODY bytes of JSON whitespace, stopping as soon as an answer
    arrives. Returns (status, body bytes sent before the answer, answer)."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode())
        sock.setblocking(False)
        piece = b" " * CHUNK
        frame = f"{CHUNK:x}\r\n".encode() + piece + b"\r\n" if chunked else piece
        pending = b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock] if sent < BODY else [], [], 5)
            if readable:
                break
            if writable:
                if not pending:
                    pending = frame
                try:
                    n = sock.send(pending)
                except (BrokenPipeError, ConnectionResetError):
                    break
                pending = pending[n:]
                if not pending:
                    sent += CHUNK
        sock.setblocking(True)
        answer = b""
        try:
            while b"\r\n\r\n" not in answer:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except ConnectionResetError:
            pass
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    return status, sent, answer


def _head(method: str, path: str, port: int, *, token: str | None, chunked: bool) -> str:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines.append("Content-Type: application/json")
    lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {BODY}")
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return "\r\n".join(lines) + "\r\n\r\n"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(("method", "path"), [("PATCH", "/v1/leads/x1"), ("POST", "/v1/ad-spend")])
async def test_unauthenticated_big_body_is_refused_before_it_is_read(
    method: str, path: str, chunked: bool
) -> None:
    async with scoring_server() as port:
        head = _head(method, path, port, token=None, chunked=chunked)
        status, sent, answer = await asyncio.to_thread(stream, port, head, chunked=chunked)
    assert status == 401, answer[:300]
    assert b"application/problem+json" in answer
    # The answer came on the headers alone: at most the socket buffers' worth was sent.
    assert sent < 8 * 1024 * 1024, sent


async def test_read_token_on_an_admin_route_is_refused_before_the_body() -> None:
    async with scoring_server() as port:
        head = _head("POST", "/v1/ad-spend", port, token=READER, chunked=True)
        status, sent, _ = await asyncio.to_thread(stream, port, head, chunked=True)
    assert status == 403 and sent < 8 * 1024 * 1024


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_authenticated_oversized_body_gets_413(chunked: bool) -> None:
    async with scoring_server() as port:
        head = _head("POST", "/v1/ad-spend", port, token=ADMIN, chunked=chunked)
        status, sent, answer = await asyncio.to_thread(stream, port, head, chunked=chunked)
    assert status == 413, answer[:300]
    assert b"application/problem+json" in answer
    if chunked:
        # Counted while streaming: refused just past the 1 MiB limit, not at 50 MB.
        assert LIMIT <= sent < LIMIT + 8 * 1024 * 1024, sent
    else:
        assert sent < 8 * 1024 * 1024, sent


async def test_capture_keeps_room_for_its_own_larger_per_route_limits() -> None:
    import httpx

    from services.capture.main import build_app as capture_app

    settings = load_settings(
        leadflow_dev=False,
        leadflow_api_token=ADMIN,
        database_url="sqlite+aiosqlite:///:memory:",
        kafka_bootstrap_servers="127.0.0.1:1",
    )
    transport = httpx.ASGITransport(app=capture_app(settings), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        # 1.5 MB: over the global default, under the signed webhooks' own 2 MiB limit. The
        # unsigned request is refused by the webhook itself (401/403), not by the size guard.
        resp = await http.post("/v1/webhooks/meta", content=b" " * 1_500_000)
        assert resp.status_code != 413, resp.text
        resp = await http.post("/v1/webhooks/meta", content=b" " * (3 * 1024 * 1024))
        assert resp.status_code == 413
