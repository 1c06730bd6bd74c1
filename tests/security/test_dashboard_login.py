"""The dashboard's browser login: a signed HttpOnly SameSite cookie, logout, and the bearer header.

Scoring is built outside dev mode on a migrated database and served without its lifespan: the
dashboard only reads the database, so no broker is needed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.scoring.main import build_app
from shared.auth import SESSION_COOKIE, issue_session
from shared.broker import free_port
from shared.settings import Settings, load_settings
from tests.browser import BROWSER_TESTS, headless_chromium, serve

ADMIN = "admin-token-0123456789abcdef"
READER = "read-token-0123456789abcdef"


def prod_settings(db_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = dict(
        leadflow_dev=False,
        leadflow_api_token=ADMIN,
        leadflow_read_tokens=READER,
        database_url=db_url,
        kafka_bootstrap_servers="127.0.0.1:1",
    )
    return load_settings(**{**values, **overrides})


@asynccontextmanager
async def client(app: FastAPI, base: str = "http://t") -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url=base) as http:
            yield http
    finally:
        await app.state.runtime.engine.dispose()


async def test_login_cookie_flags_logout_and_bearer(sqlite_db_url: str) -> None:
    settings = prod_settings(sqlite_db_url)
    async with client(build_app(settings)) as http:
        first = await http.get("/dashboard")
        assert first.status_code == 303 and first.headers["location"] == "/login"
        form = await http.get("/login")
        assert form.status_code == 200 and 'name="token"' in form.text

        wrong = await http.post("/login", data={"token": "not-the-token-at-all-xyz"})
        assert wrong.status_code == 403 and "set-cookie" not in wrong.headers

        ok = await http.post("/login", data={"token": READER})
        assert ok.status_code == 303 and ok.headers["location"] == "/dashboard"
        cookie = ok.headers["set-cookie"]
        flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
        assert {"httponly", "max-age", "path"} <= flags
        assert "samesite=lax" in cookie.lower()
        assert "secure" not in flags  # plain http (a local browser); see the https case below
        assert READER not in cookie  # the cookie carries a signature, not the token

        page = await http.get("/dashboard")
        assert page.status_code == 200 and "Leads by stage" in page.text
        # The session opens the dashboard only, not the API.
        assert (await http.get("/v1/leads")).status_code == 401

        out = await http.post("/logout")
        assert out.status_code == 303 and out.headers["location"] == "/login"
        assert SESSION_COOKIE not in http.cookies
        assert (await http.get("/dashboard")).status_code == 303

        http.cookies.clear()
        bearer = await http.get("/dashboard", headers={"Authorization": f"Bearer {READER}"})
        assert bearer.status_code == 200
        bad = await http.get("/dashboard", headers={"Authorization": "Bearer wrong-token-xyz"})
        assert bad.status_code == 403


async def test_cookie_is_secure_over_https(sqlite_db_url: str) -> None:
    async with client(build_app(prod_settings(sqlite_db_url)), "https://t") as http:
        ok = await http.post("/login", data={"token": ADMIN})
        assert ok.status_code == 303
        assert "secure" in {p.strip().lower() for p in ok.headers["set-cookie"].split(";")}


async def test_forged_expired_and_revoked_sessions_are_refused(sqlite_db_url: str) -> None:
    settings = prod_settings(sqlite_db_url)
    good = issue_session(settings, READER)
    expired = issue_session(settings, READER, now=time.time() - 9 * 3600)
    assert good and expired
    payload, _, signature = good.partition(".")
    forged = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + signature
    async with client(build_app(settings)) as http:
        for value, status in ((good, 200), (expired, 303), (forged, 303), ("junk", 303)):
            http.cookies.set(SESSION_COOKIE, value)
            resp = await http.get("/dashboard")
            assert resp.status_code == status, value
    # The read token is rotated away: the sessions it opened end with it.
    rotated = prod_settings(sqlite_db_url, leadflow_read_tokens="the-next-read-token-0123456789")
    async with client(build_app(rotated)) as http:
        http.cookies.set(SESSION_COOKIE, good)
        assert (await http.get("/dashboard")).status_code == 303


# --- a real browser ---------------------------------------------------------------------------


@pytest.fixture
def driver() -> Iterator[Any]:
    with headless_chromium() as chrome:
        yield chrome


def _browse(driver: Any, base: str) -> list[str]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    seen = []
    wait = WebDriverWait(driver, 20)
    driver.get(f"{base}/dashboard")
    wait.until(lambda d: d.current_url.endswith("/login"))
    seen.append(driver.current_url)
    driver.find_element(By.NAME, "token").send_keys(READER)
    driver.find_element(By.ID, "login").click()
    wait.until(lambda d: d.current_url.endswith("/dashboard") and "Leads by stage" in d.page_source)
    seen.append(driver.current_url)
    # HttpOnly: the page's scripts cannot read the session.
    seen.append(str(driver.execute_script("return document.cookie")))
    driver.find_element(By.ID, "logout").click()
    wait.until(lambda d: d.current_url.endswith("/login"))
    seen.append(driver.current_url)
    driver.get(f"{base}/dashboard")
    wait.until(lambda d: d.current_url.endswith("/login"))
    seen.append(driver.current_url)
    return seen


@pytest.mark.slow
@BROWSER_TESTS[1]
async def test_browser_logs_in_sees_the_dashboard_and_logs_out(
    sqlite_db_url: str, driver: Any
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = build_app(prod_settings(sqlite_db_url))
    try:
        async with serve(app, port):
            seen = await asyncio.to_thread(_browse, driver, base)
    finally:
        await app.state.runtime.engine.dispose()
    assert seen == [f"{base}/login", f"{base}/dashboard", "", f"{base}/login", f"{base}/login"]
