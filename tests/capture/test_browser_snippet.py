"""capture.js in headless Chromium: a real page posts a form and a page view to capture."""

from __future__ import annotations

import asyncio
from typing import Any

from shared.events import InteractionType
from tests.browser import BROWSER_TESTS, headless_chromium
from tests.capture.conftest import site_with_capture
from tests.support import wait_for_events

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
    async with site_with_capture(kafka_bootstrap, sqlite_db_url, "/pricing", PAGE) as (
        url,
        settings,
    ):
        site_origin = url.removesuffix("/pricing")
        result = await asyncio.to_thread(
            _browse, f"{url}?utm_source=newsletter&utm_campaign=launch"
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
