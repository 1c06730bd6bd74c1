"""analytics.js (``@segment/analytics-next``, its UMD bundle from the npm registry) in headless
Chromium against capture: the short paths (``/v1/t``, ``/p``, ``/i``, ``/g``, ``/a``, and ``/b``
when batching) with ``text/plain`` bodies, CORS preflights for its ``Authorization`` header,
and every call on the browser's lead."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tarfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from services.capture.main import build_app
from services.scoring.domain.identity import ANON, EMAIL, identifiers_of
from shared.broker import free_port
from shared.contract import Interaction
from shared.events import InteractionType
from tests.browser import BROWSER_TESTS, IN_CI, headless_chromium, serve
from tests.capture.conftest import make_config
from tests.support import make_settings, wait_for_events

# In CI a missing browser or package fails these tests; elsewhere they are skipped.
pytestmark = BROWSER_TESTS

PACKAGE = "@segment/analytics-next@1.84.3"
ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".venv" / "node_modules-cache" / "segment-analytics-next-1.84.3"

PAGE = """<!doctype html><html><head><title>Pricing</title>
<script>window.analytics = {{_cdn: "{site}"}};</script>
<script src="/analytics-next/bundles/index.js"></script></head><body><script>
const segment = (extra) => ({{ integrations: {{ "Segment.io": Object.assign({{
  apiKey: "dev-write-key", apiHost: "{capture_host}/v1", protocol: "http" }}, extra) }} }});
async function run() {{
  const {{ AnalyticsBrowser }} = window.AnalyticsNext;
  const [a] = await AnalyticsBrowser.load(
    {{ writeKey: "dev-write-key", cdnSettings: segment({{}}) }},
    {{ disableClientPersistence: true }});
  await a.page("Docs", "Pricing");
  await a.identify("web-u", {{ email: "Web.User@Example.com", firstName: "Web" }});
  await a.track("Signed Up", {{ plan: "pro" }});
  await a.group("acme", {{ name: "Acme", employees: 40 }});
  await a.alias("web-u", "anon-web");
  const [b] = await AnalyticsBrowser.load(
    {{ writeKey: "dev-write-key",
      cdnSettings: segment({{ deliveryStrategy: {{ strategy: "batching",
        config: {{ size: 2, timeout: 100 }} }} }}) }},
    {{ disableClientPersistence: true }});
  await b.track("Batched 1", {{}}, {{ anonymousId: "batch-anon" }});
  await b.track("Batched 2", {{}}, {{ anonymousId: "batch-anon" }});
  document.body.setAttribute("data-result", "done");
}}
run().catch((e) => document.body.setAttribute("data-result", "error " + e));
</script></body></html>"""


def _bundle(tmp_path: Path) -> Path:
    """analytics-next's dist/umd directory, from the npm registry (npm pack), cached."""
    umd = CACHE / "package" / "dist" / "umd"
    if (umd / "index.js").exists():
        return umd

    def unavailable(why: str) -> None:
        if IN_CI:
            pytest.fail(f"{PACKAGE}: {why}")
        pytest.skip(f"{PACKAGE}: {why}")

    npm = shutil.which("npm")
    if not npm:
        unavailable("npm is needed")
    staging = tmp_path / "pack"
    staging.mkdir()
    try:
        done = subprocess.run(
            [npm or "npm", "pack", PACKAGE, "--pack-destination", str(staging), "--silent"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired:
        unavailable("npm pack timed out")
    tgz = list(staging.glob("*.tgz"))
    if done.returncode != 0 or not tgz:
        unavailable(f"npm pack failed: {done.stderr[-500:]}")
    with tarfile.open(tgz[0]) as tar:
        tar.extractall(staging / "x", filter="data")
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    try:
        (staging / "x").rename(CACHE)
    except OSError:
        return staging / "x" / "package" / "dist" / "umd"
    return umd


@asynccontextmanager
async def site_and_capture(
    kafka_bootstrap: str, db_url: str, umd: Path
) -> AsyncIterator[tuple[str, str]]:
    """Capture and a website serving analytics.js, on real ports; yields (page URL, topic)."""
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse
    from starlette.staticfiles import StaticFiles

    site_port, capture_port = free_port(), free_port()
    site = f"http://127.0.0.1:{site_port}"
    config = make_config()
    config["forms"]["test-form"]["allowed_origins"] = [site]  # the tracking API's CORS
    settings = make_settings(kafka_bootstrap, db_url)
    capture = build_app(settings, config)
    html = PAGE.format(site=site, capture_host=f"127.0.0.1:{capture_port}")
    web = FastAPI()
    web.add_api_route("/pricing", lambda: HTMLResponse(html), methods=["GET"])
    web.mount("/analytics-next/bundles", StaticFiles(directory=umd))
    async with capture.router.lifespan_context(capture):
        await capture.state.runtime.wait_ready()
        async with serve(capture, capture_port), serve(web, site_port):
            yield f"{site}/pricing", f"{settings.leadflow_topic_prefix}interactions"


def _browse(url: str) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with headless_chromium() as driver:
        driver.get(url)

        def result(d: Any) -> Any:
            return d.find_element(By.TAG_NAME, "body").get_attribute("data-result")

        return str(WebDriverWait(driver, 20).until(result))


async def test_analytics_next_in_chromium(
    kafka_bootstrap: str, sqlite_db_url: str, tmp_path: Path
) -> None:
    umd = _bundle(tmp_path)
    async with site_and_capture(kafka_bootstrap, sqlite_db_url, umd) as (url, topic):
        result = await asyncio.to_thread(_browse, url)
        assert result == "done", result
        events = await wait_for_events(kafka_bootstrap, topic, lambda evs: len(evs) >= 7)
    assert len(events) == 7, [e.data for e in events]
    tracked = {e.data["track"]["event"]: e for e in events if e.type == InteractionType.TRACKED}
    assert set(tracked) == {"page", "Signed Up", "Batched 1", "Batched 2"}
    identified = [e for e in events if e.type == InteractionType.IDENTIFIED]
    kinds = {
        next((k for k in ("group", "alias") if k in (e.data["custom"] or {})), "identify"): e
        for e in identified
    }
    assert set(kinds) == {"identify", "group", "alias"}
    browser_anon = tracked["page"].data["anonymous_id"]
    assert browser_anon and browser_anon != "batch-anon"
    # The page view, identify, track and group of this visitor all name its anonymous id.
    for ev in (tracked["page"], tracked["Signed Up"], kinds["identify"], kinds["group"]):
        ids = identifiers_of(Interaction.from_data(ev.data), ev.key)
        assert (ANON, browser_anon) in ids.pairs(), ev.data
    assert (EMAIL, "web.user@example.com") in identifiers_of(
        Interaction.from_data(kinds["identify"].data)
    ).pairs()
    assert kinds["group"].data["contact"]["company"] == "Acme"
    assert kinds["identify"].data["contact"]["first_name"] == "Web"  # Segment's firstName
    alias = kinds["alias"].data
    assert (alias["anonymous_id"], alias["user_id"]) == ("anon-web", "web-u")
    assert tracked["Batched 1"].data["anonymous_id"] == "batch-anon"
    assert tracked["Signed Up"].data["track"]["properties"] == {"plan": "pro"}
