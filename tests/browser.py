"""Headless Chromium for the browser tests, and a uvicorn server a test can run in its loop.

In CI (``CI`` set) a missing selenium, Chromium or chromedriver is a failure, never a skip; on a
developer's machine without them the browser tests are skipped, saying why.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
import uvicorn

IN_CI = bool(os.environ.get("CI"))
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")

#: Markers for a module of browser tests.
BROWSER_TESTS = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CHROMIUM and DRIVER) and not IN_CI,
        reason="chromium/chromedriver not installed (apt-get install chromium chromium-driver)",
    ),
]


@contextmanager
def headless_chromium() -> Iterator[Any]:
    """A selenium driver of headless Chromium, quit on exit."""
    if IN_CI:
        from selenium import webdriver
    else:
        webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM or ""
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER or ""), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@asynccontextmanager
async def serve(app: Any, port: int, *, lifespan: str = "off") -> AsyncIterator[None]:
    """Serve ``app`` with uvicorn on ``127.0.0.1:port`` inside the running loop."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, log_level="warning", lifespan=lifespan
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield
    finally:
        server.should_exit = True
        await task
