"""Serving one ASGI app from several processes on one port (uvicorn's worker supervisor).

uvicorn's own ``workers=`` binds its listening socket without naming the protocol, and asyncio
sets ``TCP_NODELAY`` only on sockets that name TCP: every answer of a worker then waits out
Nagle's algorithm against the client's delayed acknowledgement (about 40 ms a request,
measured: 723 form posts/s on two workers against 5,352 on one). The socket is bound here
instead, as TCP, and handed to the same supervisor, which restarts a worker that dies.
"""

from __future__ import annotations

import socket
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

#: How every service's uvicorn runs (``leadflow capture|scoring|routing``), and the bench's
#: baseline apps beside capture: Leadflow logs as JSON itself, and a stop drains for 20 s.
SERVER_OPTIONS: dict[str, Any] = {
    "log_config": None,
    "access_log": False,
    "timeout_graceful_shutdown": 20,
}


def listener(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` that worker processes inherit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def serve_processes(factory: str, workers: int, host: str, port: int, **options: Any) -> None:
    """Serve ``factory`` (``module:function`` returning the app) from ``workers`` processes
    until SIGTERM or SIGINT, which each worker answers with its graceful shutdown."""
    config = uvicorn.Config(factory, factory=True, workers=workers, host=host, port=port, **options)
    sock = listener(host, port)
    try:
        Multiprocess(config, sockets=[sock]).run()
    finally:
        sock.close()
