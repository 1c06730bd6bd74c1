"""Fixtures shared by the scoring tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import create_engine


@pytest.fixture
async def engine(pg_db_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a fresh, migrated PostgreSQL database (see ``pg_db_url``)."""
    eng = create_engine(pg_db_url)
    try:
        yield eng
    finally:
        await eng.dispose()
