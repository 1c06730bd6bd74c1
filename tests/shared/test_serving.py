"""shared/serving.py: the socket several worker processes share serves without Nagle's delay."""

from __future__ import annotations

import asyncio
import socket

import uvicorn

from shared.serving import listener


async def _nodelay_of_accepted(sock: socket.socket) -> int:
    """TCP_NODELAY of a connection asyncio accepted on ``sock``, as a uvicorn worker does."""
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            conn = transport.get_extra_info("socket")
            accepted.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
    try:
        port = sock.getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        value = await asyncio.wait_for(accepted, 5)
        writer.close()
        return value
    finally:
        server.close()
        await server.wait_closed()


async def test_connections_accepted_on_the_shared_socket_send_at_once() -> None:
    assert await _nodelay_of_accepted(listener("127.0.0.1", 0)) != 0


async def test_uvicorns_own_worker_socket_would_not() -> None:
    # Why serving.py binds the socket itself: if this starts failing, uvicorn fixed it.
    sock = uvicorn.Config("x:y", host="127.0.0.1", port=0).bind_socket()
    assert await _nodelay_of_accepted(sock) == 0
