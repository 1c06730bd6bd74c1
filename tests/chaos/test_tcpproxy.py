"""The drills' TCP proxy: cut refuses, freeze hangs, restore heals (PostgreSQL behind it)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.chaos.cluster import PG_ADMIN
from tests.tcpproxy import TcpProxy


def _through(proxy: TcpProxy) -> str:
    return PG_ADMIN.replace(PG_ADMIN.split("@", 1)[1].split("/", 1)[0], f"127.0.0.1:{proxy.port}")


async def _select_one(url: str) -> int:
    conn = await asyncpg.connect(url, timeout=1.0)
    try:
        return int(await conn.fetchval("SELECT 1", timeout=1.0))
    finally:
        conn.terminate()


@pytest.mark.infra  # connects to TEST_PG_URL itself
async def test_cut_refuses_freeze_hangs_and_restore_heals() -> None:
    with TcpProxy("127.0.0.1", int(PG_ADMIN.rsplit(":", 1)[1].split("/", 1)[0])) as proxy:
        url = _through(proxy)
        assert await _select_one(url) == 1
        proxy.cut()
        with pytest.raises(OSError):
            await _select_one(url)
        proxy.restore()
        assert await _select_one(url) == 1
        conn = await asyncpg.connect(url)
        proxy.freeze()
        # an open connection hangs, and so does a new one: no answer, no error
        with pytest.raises(asyncio.TimeoutError):
            await conn.fetchval("SELECT 1", timeout=0.5)
        with pytest.raises(asyncio.TimeoutError):
            await _select_one(url)
        conn.terminate()
        proxy.restore()
        assert await _select_one(url) == 1
