"""capture.js in headless Chromium: a real page posts a form and a page view to capture."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from services.capture.main import build_app
from shared.broker import free_port
from shared.events import InteractionType
from tests.browser import BROWSER_TESTS, headless_chromium, serve
from tests.capture.conftest import make_config
from tests.support import make_settings, wait_for_events

# In CI a missing browser fails these tests; elsewhere they are skipped (tests/browser.py).
pytestmark = BROWSER_TESTS

PAGE = """<!doctype html><html><head><title>Pricing</title>
<script src="{capture}/capture.js" data-write-key="dev-write-key" defer></script></head>
<body><form data-leadflow-form="test-form">
<input name="email"><input name="first_name"><input type="checkbox" name="consent_marketing">
<input name="_hp" style="display:none"><button type="submit">Send</button></form>
<script>document.addEventListener("leadflow:submitted", function (e) {{
  document.body.setAttribute("data-result", JSON.stringify(e.detail.response)); }});
document.addEventListener("leadflow:rejected", function (e) {{
  document.body.setAttribute("data-result", "rejected " + JSON.stringify(e.detail)); }});
document.addEventListener("leadflow:failed", function (e) {{
  document.body.setAttribute("data-result", "failed " + e.detail.error); }});</script>
</body></html>"""


def _browse(url: str) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with headless_chromium() as driver:
        driver.get(url)
        driver.find_element(By.NAME, "email").send_keys("Browser.User@Example.com")
        driver.find_element(By.NAME, "first_name").send_keys("  Bea ")
        driver.find_element(By.NAME, "consent_marketing").click()
        driver.find_element(By.CSS_SELECTOR, "button").click()

        def result(d: Any) -> Any:
            return d.find_element(By.TAG_NAME, "body").get_attribute("data-result")

        return str(WebDriverWait(driver, 20).until(result))


async def test_snippet_posts_form_with_attribution_and_page_view(
    kafka_bootstrap: str, sqlite_db_url: str
) -> None:
    site_port, capture_port = free_port(), free_port()
    site_origin = f"http://127.0.0.1:{site_port}"
    config = make_config()
    config["forms"]["test-form"]["allowed_origins"] = [site_origin]
    settings = make_settings(kafka_bootstrap, sqlite_db_url)
    capture_app = build_app(settings, config)
    site = FastAPI()

    @site.get("/pricing", response_class=HTMLResponse)
    async def pricing() -> str:
        return PAGE.format(capture=f"http://127.0.0.1:{capture_port}")

    async with capture_app.router.lifespan_context(capture_app):
        await capture_app.state.runtime.wait_ready()
        async with serve(capture_app, capture_port), serve(site, site_port):
            result = await asyncio.to_thread(
                _browse, f"{site_origin}/pricing?utm_source=newsletter&utm_campaign=launch"
            )
        assert '"status":"accepted"' in result, result
        topic = f"{settings.leadflow_topic_prefix}interactions"
        events = await wait_for_events(kafka_bootstrap, topic, lambda evs: len(evs) >= 2)
    by_type = {e.type: e for e in events}
    form = by_type[InteractionType.FORM_SUBMITTED]
    page = by_type[InteractionType.TRACKED]
    assert form.key == "browser.user@example.com"
    assert form.data["contact"]["first_name"] == "Bea"
    assert form.data["consent"]["marketing"] is True
    assert form.data["attribution"]["utm_source"] == "newsletter"
    assert form.data["attribution"]["utm_campaign"] == "launch"
    assert form.data["attribution"]["page_url"].startswith(f"{site_origin}/pricing")
    assert form.data["anonymous_id"] and form.data["anonymous_id"] == page.key
    assert page.data["track"]["event"] == "page" and page.data["track"]["name"] == "Pricing"
    assert page.data["attribution"]["utm_source"] == "newsletter"
