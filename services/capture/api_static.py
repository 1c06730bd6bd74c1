"""Serves ``capture.js``, the website snippet (forms, attribution, page views)."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from fastapi import APIRouter, Response

router = APIRouter(tags=["capture"])


@lru_cache(maxsize=1)
def _snippet() -> bytes:
    return resources.files("services.capture").joinpath("static/capture.js").read_bytes()


@router.get("/capture.js", response_class=Response)
async def capture_js() -> Response:
    """The website snippet; any site may load it (it only talks to this capture server)."""
    return Response(
        _snippet(),
        media_type="application/javascript",
        headers={"Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"},
    )
