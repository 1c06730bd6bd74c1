"""Fixtures for capture tests: a running capture app on the real broker and database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.capture.main import build_app
from shared.config import load_config
from shared.settings import Settings
from shared.topics import Topics
from tests.support import make_settings


@dataclass
class Running:
    """A started capture app with an HTTP client bound to it."""

    app: FastAPI
    client: httpx.AsyncClient
    settings: Settings
    bootstrap: str

    @property
    def topic(self) -> str:
        return Topics(self.settings.leadflow_topic_prefix).interactions


def make_config(**capture: Any) -> dict[str, Any]:
    """The packaged config with a test form and optional overrides of the capture section."""
    config = load_config()
    config["forms"]["test-form"] = {
        "name": "Test",
        "intent": "quote",
        "allowed_origins": ["https://www.example.com"],
        "default_region": "DE",
        "consent_text_version": "v7",
    }
    config.setdefault("capture", {}).update(capture)
    return config


@asynccontextmanager
async def start(
    bootstrap: str, db_url: str, config: dict[str, Any] | None = None, **overrides: Any
) -> AsyncIterator[Running]:
    """Run a capture app for the duration of a test."""
    settings = make_settings(bootstrap, db_url, **overrides)
    app = build_app(settings, config or make_config())
    async with app.router.lifespan_context(app):
        await app.state.runtime.wait_ready()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield Running(app, client, settings, bootstrap)


@pytest.fixture
async def capture(kafka_bootstrap: str, db_url: str) -> AsyncIterator[Running]:
    """A capture app on the session broker, once on PostgreSQL and once on SQLite."""
    async with start(kafka_bootstrap, db_url) as running:
        yield running


@pytest.fixture
async def capture_sqlite(kafka_bootstrap: str, sqlite_db_url: str) -> AsyncIterator[Running]:
    """A capture app on SQLite only (for tests whose behaviour does not depend on the database)."""
    async with start(kafka_bootstrap, sqlite_db_url) as running:
        yield running


@asynccontextmanager
async def site_with_capture(
    kafka_bootstrap: str, db_url: str, path: str, page: str
) -> AsyncIterator[tuple[str, Settings]]:
    """A running capture and a website serving ``page`` at ``path`` (``{capture}`` in the page
    is capture's base URL), both on real ports for a browser; yields (page URL, settings)."""
    from fastapi.responses import HTMLResponse

    from shared.broker import free_port
    from tests.browser import serve

    site_port, capture_port = free_port(), free_port()
    site_origin = f"http://127.0.0.1:{site_port}"
    config = make_config()
    config["forms"]["test-form"]["allowed_origins"] = [site_origin]
    settings = make_settings(kafka_bootstrap, db_url)
    capture_app = build_app(settings, config)
    site = FastAPI()
    html = page.format(capture=f"http://127.0.0.1:{capture_port}")
    site.add_api_route(path, lambda: HTMLResponse(html), methods=["GET"])
    async with capture_app.router.lifespan_context(capture_app):
        await capture_app.state.runtime.wait_ready()
        async with serve(capture_app, capture_port), serve(site, site_port):
            yield f"{site_origin}{path}", settings
