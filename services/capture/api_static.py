"""Serves ``capture.js``, the website snippet (forms, attribution, consent, page views)."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from fastapi import APIRouter, Response

router = APIRouter(tags=["capture"])


def compact(source: str) -> str:
    """``capture.js`` as served: without its indentation, blank lines and whole-line ``//``
    comments (the ``/*!`` header stays). Only whole lines go, so no string or regular
    expression is touched and the statements, line by line, are the source's."""
    lines = (line.strip() for line in source.splitlines())
    return "\n".join(line for line in lines if line and not line.startswith("//")) + "\n"


@lru_cache(maxsize=1)
def _snippet() -> bytes:
    source = resources.files("services.capture").joinpath("static/capture.js").read_text("utf-8")
    return compact(source).encode()


@router.get("/capture.js", response_class=Response)
async def capture_js() -> Response:
    """The website snippet; any site may load it (it only talks to this capture server)."""
    return Response(
        _snippet(),
        media_type="application/javascript",
        headers={"Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"},
    )
