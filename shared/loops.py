"""A background loop that works when woken or when its next piece of work falls due.

Timers, retry queues, webhook deliveries and ad-lead fetches share this shape: do what is due,
learn when the next thing is due, and sleep until then unless a commit wakes the loop early.
No busy polling: the sleep is bounded below by ``min_sleep`` and above by ``max_sleep``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from shared.events import utcnow

log = logging.getLogger(__name__)


class DueWorkLoop:
    """Subclasses implement :meth:`step`; :meth:`run` schedules it (a Runtime worker)."""

    def __init__(self, max_sleep: float, *, min_sleep: float = 0.0, error_pause: float = 1.0):
        self.max_sleep = max_sleep
        self.min_sleep = min_sleep
        self.error_pause = error_pause
        self._wake = asyncio.Event()
        self._stopping = False

    def wake(self) -> None:
        """Run the loop body now (safe to call from any coroutine of the same loop)."""
        self._wake.set()

    async def stop(self) -> None:
        """Finish the current pass and stop."""
        self._stopping = True
        self._wake.set()

    async def step(self) -> datetime | None:
        """Do due work; return when the next work is due (None: nothing known)."""
        raise NotImplementedError

    async def run(self) -> None:
        """Run until stopped; errors are logged and retried after ``error_pause``."""
        while not self._stopping:
            self._wake.clear()
            try:
                nxt = await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed; retrying", type(self).__name__)
                nxt = None
                await asyncio.sleep(self.error_pause)
            delay = self.max_sleep
            if nxt is not None:
                delay = min(delay, max(self.min_sleep, (nxt - utcnow()).total_seconds()))
            if delay > 0 and not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)


class Periodic(DueWorkLoop):
    """Runs ``work`` every ``every`` seconds (and when woken): sweeps, retention, decay."""

    def __init__(
        self,
        every: float,
        work: Callable[[], Awaitable[object]],
        *,
        error_pause: float | None = None,
    ) -> None:
        super().__init__(
            max_sleep=every, error_pause=min(every, 60.0) if error_pause is None else error_pause
        )
        self.every = every
        self.work = work

    async def step(self) -> datetime | None:
        await self.work()
        return utcnow() + timedelta(seconds=self.every)


class PeriodicPurge(Periodic):
    """A retention job: :meth:`purge` what is past its time, every ``every`` seconds.

    Subclasses implement :meth:`purge` (and may call it directly, with ``now``, in tests).
    """

    def __init__(self, *, every: float = 3600.0, error_pause: float = 60.0) -> None:
        super().__init__(every, self.purge, error_pause=error_pause)

    async def purge(self, now: datetime | None = None) -> tuple[int, int]:
        """Delete what is past retention; return the two counts deleted."""
        raise NotImplementedError
