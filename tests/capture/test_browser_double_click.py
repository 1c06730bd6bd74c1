"""docs/capture.md, the capture.js section: "Each submit carries an Idempotency-Key, so a double
click counts once." Headless Chromium double-clicks a form's submit button, at machine speed and at
a human double-click's pace, and each person must be on the interactions topic exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from tests.browser import BROWSER_TESTS, headless_chromium
from tests.capture.conftest import site_with_capture
from tests.support import wait_for_events

pytestmark = BROWSER_TESTS

PAGE = """<!doctype html><html><head><title>Contact</title>
<script src="{capture}/capture.js" defer></script></head>
<body data-submitted="0"><form data-leadflow-form="test-form">
<input name="email"><button type="submit">Send</button></form>
<script>document.addEventListener("leadflow:submitted", function () {{
  var b = document.body; b.setAttribute("data-submitted", +b.getAttribute("data-submitted") + 1);
}});</script>
</body></html>"""

#: A human double click: the second click follows within the desktop's double-click interval
#: (commonly 400-500 ms), long after a local capture has answered the first one.
HUMAN_GAP = 0.25


def _browse(url: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with headless_chromium() as driver:
        driver.get(url)
        WebDriverWait(driver, 20).until(lambda d: d.execute_script("return !!window.Leadflow"))

        def submitted_at_least(n: int) -> Any:
            def check(d: Any) -> bool:
                body = d.find_element(By.TAG_NAME, "body")
                return int(body.get_attribute("data-submitted")) >= n

            return check

        def fill(email: str) -> Any:
            field = driver.find_element(By.NAME, "email")
            field.clear()
            field.send_keys(email)
            return driver.find_element(By.CSS_SELECTOR, "button")

        ActionChains(driver).double_click(fill("fast@example.com")).perform()
        WebDriverWait(driver, 20).until(submitted_at_least(1))
        button = fill("human@example.com")
        ActionChains(driver).click(button).pause(HUMAN_GAP).click(button).perform()
        WebDriverWait(driver, 20).until(submitted_at_least(2))
        fill("barrier@example.com").click()  # a later, separate submission
        WebDriverWait(driver, 20).until(submitted_at_least(3))


async def test_double_click_counts_once(kafka_bootstrap: str, sqlite_db_url: str) -> None:
    async with site_with_capture(kafka_bootstrap, sqlite_db_url, "/contact", PAGE) as (
        url,
        settings,
    ):
        await asyncio.to_thread(_browse, url)
        topic = f"{settings.leadflow_topic_prefix}interactions"
        # The barrier was submitted after both double clicks were answered: once it is on the
        # topic, any second event of theirs would be too (capture answered each 202 only
        # once the event was on Kafka).
        events = await wait_for_events(
            kafka_bootstrap, topic, lambda evs: any(e.key == "barrier@example.com" for e in evs)
        )
    counts = Counter(e.key for e in events)
    assert counts["fast@example.com"] == 1, counts
    assert counts["human@example.com"] == 1, counts
    assert counts["barrier@example.com"] == 1, counts
