"""A Kafka producer created lazily, inside the running event loop.

aiokafka refuses to build a producer outside a running loop, but the CLI calls ``build_app``
before uvicorn starts its loop, and ``shared.runtime.Runtime`` builds its producer eagerly in
its constructor. This stand-in makes the real producer on ``start()``. (A fix belongs in
shared/; until then each service carries this workaround.)
"""

from __future__ import annotations

from typing import Any, cast

from aiokafka import AIOKafkaProducer

from shared.bus import make_producer
from shared.settings import Settings


class DeferredProducer:
    """Proxies an AIOKafkaProducer that is only made when started."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._real: AIOKafkaProducer | None = None

    async def start(self) -> None:
        """Create and start the real producer."""
        if self._real is None:
            self._real = make_producer(self._settings)
        await self._real.start()

    async def stop(self) -> None:
        """Stop the real producer, if there is one."""
        if self._real is not None:
            await self._real.stop()

    def __getattr__(self, name: str) -> Any:
        real = self.__dict__.get("_real")
        if real is None:
            raise AttributeError(f"producer not started yet (no {name})")
        return getattr(real, name)


def deferred_producer(settings: Settings) -> AIOKafkaProducer:
    """Producer factory for :class:`shared.runtime.Runtime`."""
    return cast(AIOKafkaProducer, DeferredProducer(settings))
