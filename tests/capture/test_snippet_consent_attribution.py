"""capture.js in headless Chromium: consent gating and Global Privacy Control, click ids, true
first touch and last touch, SPA page views, and the native submit when the network fails.

One browser session walks a small site (so the file stays fast); capture runs for real and the
assertions read what reached the interactions topic."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from shared.events import CloudEvent, InteractionType
from shared.settings import Settings
from tests.browser import BROWSER_TESTS, headless_chromium
from tests.support import make_settings, wait_for_events

pytestmark = BROWSER_TESTS

#: Before capture.js: record every tracking call the page makes (beacon or fetch).
SPY = """<script>window.__sent = [];
var beacon = navigator.sendBeacon.bind(navigator), realFetch = window.fetch;
navigator.sendBeacon = function (u, d) { __sent.push(String(u)); return beacon(u, d); };
window.fetch = function (u, o) { if (!/forms/.test(u)) __sent.push(String(u));
  return realFetch(u, o); };</script>"""
GPC = """<script>Object.defineProperty(navigator, "globalPrivacyControl", {value: true});
</script>"""
OFFLINE = """<script>window.fetch = function () {
  return Promise.reject(new TypeError("Failed to fetch")); };</script>"""

PAGE = """<!doctype html><html><head><title>{title}</title>{head}
<script src="{{capture}}/capture.js" data-write-key="dev-write-key" {attrs} defer></script></head>
<body><form data-leadflow-form="test-form" {form_attrs}>
<input name="email"><button type="submit">Send</button></form>
<script>document.addEventListener("leadflow:submitted", function (e) {{
  document.body.setAttribute("data-result", JSON.stringify(e.detail.response)); }});</script>
</body></html>"""

PAGES = {
    "/consent": PAGE.format(
        title="Consent", head=SPY, attrs='data-consent="required" data-spa="history"', form_attrs=""
    ),
    "/gpc": PAGE.format(title="GPC", head=SPY + GPC, attrs="", form_attrs=""),
    "/offline": PAGE.format(
        title="Offline", head=OFFLINE, attrs="", form_attrs='data-leadflow-redirect="/thanks"'
    ),
    "/thanks": "<!doctype html><title>Thanks</title><p>Thanks</p>",
}

STORED = "return Object.keys(localStorage).filter(k => k.startsWith('lf_')).concat(document.cookie ? [document.cookie] : [])"  # noqa: E501


@asynccontextmanager
async def site(kafka_bootstrap: str, db_url: str) -> AsyncIterator[tuple[str, Settings]]:
    """A running capture and a website serving :data:`PAGES`; yields (site origin, settings)."""
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse

    from services.capture.main import build_app
    from shared.broker import free_port
    from tests.browser import serve
    from tests.capture.conftest import make_config

    site_port, capture_port = free_port(), free_port()
    origin = f"http://127.0.0.1:{site_port}"
    config = make_config()
    config["forms"]["test-form"]["allowed_origins"] = [origin]
    settings = make_settings(kafka_bootstrap, db_url)
    capture_app = build_app(settings, config)
    web = FastAPI()
    for path, page in PAGES.items():
        html = page.replace("{capture}", f"http://127.0.0.1:{capture_port}")
        web.add_api_route(path, lambda html=html: HTMLResponse(html), methods=["GET"])
    async with capture_app.router.lifespan_context(capture_app):
        await capture_app.state.runtime.wait_ready()
        async with serve(capture_app, capture_port), serve(web, site_port):
            yield origin, settings


def _walk(origin: str) -> dict[str, Any]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    seen: dict[str, Any] = {}
    with headless_chromium() as driver:
        wait = WebDriverWait(driver, 20)
        js = driver.execute_script

        def load(url: str) -> None:
            driver.get(url)
            wait.until(lambda d: js("return document.readyState") == "complete")
            wait.until(lambda d: js("return !!window.Leadflow"))

        def sent() -> list[str]:
            return list(js("return window.__sent"))

        def submit(email: str) -> None:
            driver.find_element(By.NAME, "email").send_keys(email)
            driver.find_element(By.CSS_SELECTOR, "button").click()

        # 1. Consent required: nothing stored, nothing sent, until Leadflow.consent(true).
        load(f"{origin}/consent?utm_source=google&utm_medium=cpc&utm_campaign=spring&gclid=G1")
        seen["before_consent"] = (js(STORED), sent(), js("return Leadflow.anonymousId()"))
        js("Leadflow.consent(true)")
        wait.until(lambda d: len(sent()) >= 1)  # the page view waiting for consent
        seen["after_consent"] = js(STORED)
        seen["aid"] = js("return Leadflow.anonymousId()")

        # 2. A later visit from a newsletter (Facebook click): consent asked again on this page.
        load(f"{origin}/consent?utm_source=newsletter&utm_campaign=fall&fbclid=F1")
        seen["second_visit_before_consent"] = sent()
        js("Leadflow.consent(true)")
        js("history.pushState({}, '', '/consent/step-2')")  # an SPA route change
        wait.until(lambda d: len(sent()) >= 2)
        submit("consented@example.com")
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-result"))

        # 3. Consent withdrawn: the visitor is forgotten.
        js("Leadflow.consent(false)")
        seen["after_withdrawal"] = js(STORED)

        # 4. Global Privacy Control: a refusal; the form is still sent, without tracking data.
        load(f"{origin}/gpc?utm_source=ads&gclid=G2")
        js("Leadflow.page(); Leadflow.track('Clicked')")
        seen["gpc"] = (js(STORED), sent())
        submit("gpc@example.com")
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-result"))
        seen["gpc_after_submit"] = (js(STORED), sent())

        # 5. The network fails: the form is posted natively and capture redirects to /thanks.
        load(f"{origin}/offline?utm_source=partner&li_fat_id=L1")
        submit("offline@example.com")
        wait.until(lambda d: d.current_url.startswith(f"{origin}/thanks"))
    return seen


def _by_key(events: list[CloudEvent], key: str) -> CloudEvent:
    [event] = [e for e in events if e.type == InteractionType.FORM_SUBMITTED and e.key == key]
    return event


async def test_consent_click_ids_touches_spa_and_native_fallback(
    kafka_bootstrap: str, sqlite_db_url: str
) -> None:
    async with site(kafka_bootstrap, sqlite_db_url) as (origin, settings):
        seen = await asyncio.to_thread(_walk, origin)
        topic = f"{settings.leadflow_topic_prefix}interactions"
        forms = {"consented@example.com", "gpc@example.com", "offline@example.com"}
        events = await wait_for_events(
            kafka_bootstrap, topic, lambda evs: forms <= {e.key for e in evs}
        )

    assert seen["before_consent"] == ([], [], None)
    assert sorted(seen["after_consent"]) == ["lf_aid", "lf_ft", "lf_lt"]
    assert seen["second_visit_before_consent"] == []
    assert seen["after_withdrawal"] == []
    assert seen["gpc"] == ([], []) and seen["gpc_after_submit"] == ([], [])
    aid = seen["aid"]

    views = [e for e in events if e.type == InteractionType.TRACKED and e.key == aid]
    pages = sorted(e.data["attribution"]["page_url"].removeprefix(origin) for e in views)
    assert pages == [
        "/consent/step-2",
        "/consent?utm_source=google&utm_medium=cpc&utm_campaign=spring&gclid=G1",
        "/consent?utm_source=newsletter&utm_campaign=fall&fbclid=F1",
    ]
    campaigns = {e.data["attribution"]["utm_source"] for e in views}
    assert campaigns == {"google", "newsletter"}  # each view carries the touch in effect

    form = _by_key(events, "consented@example.com")
    assert form.data["anonymous_id"] == aid
    attribution = form.data["attribution"]
    # True first touch (the first visit), not the latest landing ...
    assert attribution["utm_source"] == "google" and attribution["utm_campaign"] == "spring"
    assert attribution["utm_medium"] == "cpc"
    assert attribution["page_url"] == f"{origin}/consent/step-2"
    # ... and the last touch beside it, with the click ids of both visits (attribution, where
    # scoring and offline-conversion exports read them, not the free-form custom part).
    assert attribution["last_utm_source"] == "newsletter"
    assert attribution["last_utm_campaign"] == "fall"
    assert attribution["gclid"] == "G1" and attribution["fbclid"] == "F1"
    assert attribution["landing_url"].endswith("gclid=G1")
    assert attribution["first_touch_at"] < attribution["last_touch_at"]
    assert not form.data.get("custom")

    gpc = _by_key(events, "gpc@example.com")
    assert gpc.data["anonymous_id"] is None
    assert gpc.data["attribution"] == {
        **{k: None for k in gpc.data["attribution"]},
        "page_url": f"{origin}/gpc?utm_source=ads&gclid=G2",
    }
    assert not gpc.data.get("custom")
    assert not [
        e
        for e in events
        if e.type == InteractionType.TRACKED
        and e.key != aid
        and "/gpc" in (e.data["attribution"] or {}).get("page_url", "")
    ]

    offline = _by_key(events, "offline@example.com")
    assert offline.data["attribution"]["utm_source"] == "partner"
    assert offline.data["attribution"]["li_fat_id"] == "L1"
    assert offline.data["anonymous_id"]
