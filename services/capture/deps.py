"""What capture's routes depend on: the per-process :class:`CaptureContext` and ``ContextDep``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from services.capture.config import CaptureConfig
from services.capture.domain.interaction import FormSettings
from services.capture.http_input import RateLimiter
from services.capture.intake import Intake
from shared.loops import DueWorkLoop
from shared.problems import Problem
from shared.settings import Settings


@dataclass
class CaptureContext:
    """The capture service's collaborators, built once in ``main.build_app``."""

    settings: Settings
    config: CaptureConfig
    intake: Intake
    limiter: RateLimiter
    #: The ad-lead fetcher, woken when a webhook stores a lead to fetch (set when wired).
    fetcher: DueWorkLoop | None = None
    #: Origins whose browser scripts may read tracking API answers; ``{"*"}`` allows any.
    tracking_origins: frozenset[str] = frozenset()

    def form(self, form_id: str) -> FormSettings:
        """The configured form, or 404."""
        form = self.config.forms.get(form_id)
        if form is None:
            raise Problem(404, f"there is no form {form_id[:100]!r}")
        return form


async def get_context(request: Request) -> CaptureContext:
    """The capture context of the app serving this request."""
    ctx: CaptureContext = request.app.state.capture
    return ctx


ContextDep = Annotated[CaptureContext, Depends(get_context)]
