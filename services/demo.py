"""``leadflow demo``: a realistic day of traffic through the public endpoints, so a new user sees
a living funnel on the dashboard within a minute of ``make run``.

Everything goes through the services' HTTP APIs, as real traffic would: anonymous page views
and Segment batches (write key), newsletter, contact and demo forms, content downloads, webinar
registrations and attendance, Meta, Google Ads and LinkedIn lead callbacks signed with the dev
secrets (Meta and LinkedIn leads are then fetched by capture from a stand-in of their APIs that
the demo serves while it runs), ad spend, and the sales side: first touches, opportunities and
wins through routing's API. Some hot leads are left untouched: their SLA breaches shortly after.

This module imports no service: it is a client, like a website or a CRM would be.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import random
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import httpx

DEV_TOKEN = "dev-token"
DEV_WRITE_KEY = "dev-write-key"
#: Port of the stand-in Meta Graph and LinkedIn APIs the demo serves while it runs.
PLATFORM_PORT = 8009
#: The ad platforms' dev secrets: ``leadflow dev`` gives them to capture (unless set), and the
#: demo signs its callbacks with them.
DEV_AD_ENV = {
    "META_APP_SECRET": "dev-meta-app-secret",
    "META_VERIFY_TOKEN": "dev-meta-verify-token",
    "META_ACCESS_TOKEN": "dev-meta-access-token",
    "META_GRAPH_URL": f"http://127.0.0.1:{PLATFORM_PORT}/meta",
    "GOOGLE_ADS_WEBHOOK_KEY": "dev-google-ads-key",
    "LINKEDIN_CLIENT_SECRET": "dev-linkedin-client-secret",
    "LINKEDIN_ACCESS_TOKEN": "dev-linkedin-access-token",
    "LINKEDIN_API_URL": f"http://127.0.0.1:{PLATFORM_PORT}/linkedin",
}

FIRST = ["Anna", "Ben", "Chloé", "David", "Emma", "Felix", "Grace", "Hugo", "Ines", "Jonas",
         "Kara", "Liam", "Maya", "Noah", "Olga", "Paul", "Rosa", "Sami", "Tara"]  # fmt: skip
LAST = ["Martin", "Schmidt", "Rossi", "Dubois", "Novak", "Garcia", "Jensen", "Smith", "Kowalski",
        "Moreau", "Costa", "Weber", "Silva", "Meyer", "Laurent"]  # fmt: skip
COMPANIES = [("Acme", "software", 500, "DE"), ("Globex", "manufacturing", 2000, "FR"),
             ("Initech", "software", 120, "US"), ("Umbrella", "healthcare", 5000, "GB"),
             ("Hooli", "software", 800, "US"), ("Stark", "manufacturing", 10000, "IT"),
             ("Wayne", "finance", 3000, "US"), ("Tyrell", "software", 60, "NL"),
             ("Cyberdyne", "software", 250, "ES"), ("Soylent", "retail", 40, "BE")]  # fmt: skip
TITLES = ["VP of Sales", "Head of Marketing", "CTO", "Marketing Manager", "Sales Director",
          "Engineer", "Student", "CEO", "Operations Manager", "Analyst"]  # fmt: skip
#: (utm_source, utm_medium, utm_campaign, currency, daily spend per 100 people)
CHANNELS = [("google", "cpc", "search-q4", "EUR", 180.0), ("linkedin", "paid", "abm-q4", "EUR",
            240.0), ("meta", "paid", "retargeting", "USD", 90.0), ("newsletter", "email",
            "nov-digest", "EUR", 0.0), ("", "", "", "EUR", 0.0)]  # fmt: skip
PAGES = ["Home", "Pricing", "Product", "Blog: lead scoring 101", "Customers", "Careers"]


@dataclass
class Person:
    """One simulated visitor and what they will do."""

    n: int
    anonymous_id: str
    channel: tuple[str, str, str, str, float]
    journey: str
    first_name: str
    last_name: str
    company: tuple[str, str, int, str]
    job_title: str
    pages: list[str] = field(default_factory=list)

    @property
    def email(self) -> str:
        domain = self.company[0].lower()
        return f"{self.first_name.lower()}.{self.last_name.lower()}{self.n}@{domain}.example"

    def contact(self) -> dict[str, Any]:
        name, industry, size, country = self.company
        return {
            "email": self.email,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "company": name,
            "job_title": self.job_title,
            "industry": industry,
            "company_size": size,
            "country": country,
        }

    def utm(self) -> dict[str, str]:
        source, medium, campaign = self.channel[:3]
        if not source:
            return {}
        return {"utm_source": source, "utm_medium": medium, "utm_campaign": campaign}


#: journey → weight; ad journeys only for people arriving from that platform's ads
JOURNEYS = {
    "visitor": 46,
    "newsletter": 14,
    "download": 12,
    "webinar": 9,
    "demo": 9,
    "contact": 4,
    "segment": 6,
}


def people(size: int, seed: int = 7) -> list[Person]:
    """``size`` visitors with their journeys (the same for the same seed)."""
    rng = random.Random(seed)
    out = []
    for n in range(size):
        channel = rng.choices(CHANNELS, weights=[30, 20, 15, 10, 25])[0]
        journey = rng.choices(list(JOURNEYS), weights=list(JOURNEYS.values()))[0]
        if channel[0] in ("google", "linkedin", "meta") and rng.random() < 0.18:
            journey = f"ad-{channel[0]}"
        company = rng.choice(COMPANIES)
        title = rng.choice(TITLES[:5] if journey in ("demo", "contact") else TITLES)
        pages = rng.sample(PAGES, k=rng.randint(1, 4))
        out.append(
            Person(
                n,
                f"demo-{uuid.UUID(int=rng.getrandbits(128))}",
                channel,
                journey,
                rng.choice(FIRST),
                rng.choice(LAST),
                company,
                title,
                pages,
            )
        )
    return out


class Progress:
    """A one-line progress bar on a terminal (plain lines otherwise)."""

    def __init__(self, total: int, out: TextIO = sys.stderr, width: int = 30) -> None:
        self.total, self.done, self.out, self.width = max(total, 1), 0, out, width
        self.step = ""
        self.tty = out.isatty()
        self.last_line = -1

    def advance(self, n: int = 1, step: str | None = None) -> None:
        self.done = min(self.total, self.done + n)
        self.step = step or self.step
        filled = int(self.width * self.done / self.total)
        pct = int(100 * self.done / self.total)
        bar = "#" * filled + "." * (self.width - filled)
        if self.tty:
            self.out.write(f"\r[{bar}] {pct:3d}% {self.step:<40}")
            self.out.flush()
        elif pct // 10 != self.last_line:
            self.last_line = pct // 10
            self.out.write(f"[{bar}] {pct:3d}% {self.step}\n")

    def close(self) -> None:
        if self.tty:
            self.out.write("\n")


@dataclass
class Urls:
    """Where the three services answer."""

    capture: str = "http://127.0.0.1:8001"
    scoring: str = "http://127.0.0.1:8002"
    routing: str = "http://127.0.0.1:8003"


@dataclass
class Secrets:
    """The credentials the demo uses (the dev ones by default)."""

    token: str = DEV_TOKEN
    write_key: str = DEV_WRITE_KEY
    meta_app_secret: str = DEV_AD_ENV["META_APP_SECRET"]
    google_key: str = DEV_AD_ENV["GOOGLE_ADS_WEBHOOK_KEY"]
    linkedin_secret: str = DEV_AD_ENV["LINKEDIN_CLIENT_SECRET"]


@dataclass
class Outcome:
    """What the demo did, for its summary."""

    requests: int = 0
    refused: list[str] = field(default_factory=list)
    leads: int = 0
    page_views: int = 0
    ad_leads: int = 0
    assignments: int = 0
    touched: int = 0
    opportunities: int = 0
    won: int = 0
    untouched_hot: int = 0
    #: Meta/LinkedIn leads scoring did not know yet when the demo ended
    ad_leads_missing: int = 0
    #: seconds each phase took
    phases: dict[str, float] = field(default_factory=dict)


class Platforms:
    """The stand-in Meta Graph and LinkedIn Lead Sync APIs capture fetches leads from."""

    def __init__(self) -> None:
        self.meta: dict[str, dict[str, Any]] = {}
        self.linkedin: dict[str, dict[str, Any]] = {}

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """A bare ASGI app (no framework needed for three GETs)."""
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path: str = scope["path"]
        body: Any = None
        if path.startswith("/meta/"):
            body = self.meta.get(path.rsplit("/", 1)[-1])
        elif path.startswith("/linkedin/rest/leadFormResponses/"):
            body = self.linkedin.get(path.rsplit("/", 1)[-1])
        elif path.startswith("/linkedin/rest/leadForms/"):
            body = {"content": {"questions": LINKEDIN_QUESTIONS}}
        status = 200 if body is not None else 404
        data = json.dumps(body if body is not None else {"error": "not found"}).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})


LINKEDIN_QUESTIONS = [
    {"questionId": 1, "predefinedField": "EMAIL"},
    {"questionId": 2, "predefinedField": "FIRST_NAME"},
    {"questionId": 3, "predefinedField": "LAST_NAME"},
    {"questionId": 4, "predefinedField": "COMPANY_NAME"},
    {"questionId": 5, "predefinedField": "JOB_TITLE"},
    {"questionId": 6, "predefinedField": "COUNTRY"},
]


class Demo:
    """One run: the traffic of ``size`` visitors against the services at ``urls``."""

    def __init__(
        self,
        urls: Urls,
        size: int = 300,
        *,
        secrets: Secrets | None = None,
        seed: int = 7,
        concurrency: int = 12,
        platform_port: int = PLATFORM_PORT,
        out: TextIO = sys.stderr,
        touch_wait: float = 20.0,
    ) -> None:
        self.urls, self.size, self.secrets = urls, size, secrets or Secrets()
        self.people = people(size, seed)
        self.rng = random.Random(seed + 1)
        self.limit = asyncio.Semaphore(concurrency)
        self.platforms = Platforms()
        self.platform_port = platform_port
        self.out = out
        self.touch_wait = touch_wait
        self.outcome = Outcome()
        self.client: httpx.AsyncClient | None = None

    # --- HTTP with retries on 429/503 -----------------------------------------------------------

    async def send(
        self, method: str, url: str, *, expect: tuple[int, ...] = (200, 202), **kwargs: Any
    ) -> httpx.Response | None:
        assert self.client is not None
        async with self.limit:
            for attempt in range(8):
                self.outcome.requests += 1
                try:
                    resp = await self.client.request(method, url, **kwargs)
                except httpx.HTTPError as exc:
                    if attempt == 7:
                        self.outcome.refused.append(f"{method} {url}: {exc}")
                        return None
                    await asyncio.sleep(0.2 * (attempt + 1))
                    continue
                if resp.status_code in (429, 503):
                    wait = float(resp.headers.get("retry-after", "0.5") or 0.5)
                    await asyncio.sleep(min(wait, 2.0))
                    continue
                if resp.status_code not in expect:
                    self.outcome.refused.append(f"{method} {url}: {resp.status_code}")
                    return None
                return resp
        self.outcome.refused.append(f"{method} {url}: gave up after retries")
        return None

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secrets.token}"}

    # --- the visitors' side -----------------------------------------------------------------------

    async def page_views(self, batch: list[Person]) -> None:
        """Anonymous page views of a few visitors, as one Segment batch."""
        calls = []
        now = datetime.now(UTC)
        for p in batch:
            source, medium, campaign = p.channel[:3]
            context: dict[str, Any] = {"page": {"url": "https://www.example.com/"}}
            if source:
                context["campaign"] = {"source": source, "medium": medium, "name": campaign}
            for i, page in enumerate(p.pages):
                at = now - timedelta(minutes=5 * (len(p.pages) - i))
                calls.append(
                    {
                        "type": "page",
                        "anonymousId": p.anonymous_id,
                        "name": page,
                        "messageId": f"{p.anonymous_id}-page-{i}",
                        "timestamp": at.isoformat(),
                        "context": context,
                    }
                )
        key = base64.b64encode(f"{self.secrets.write_key}:".encode()).decode()
        await self.send(
            "POST",
            f"{self.urls.capture}/v1/batch",
            json={"batch": calls},
            headers={"Authorization": f"Basic {key}"},
        )
        self.outcome.page_views += len(calls)

    async def journey(self, p: Person) -> None:
        """What one visitor does after browsing."""
        fields = {**p.contact(), **p.utm(), "anonymous_id": p.anonymous_id}
        capture = self.urls.capture
        if p.journey == "visitor":
            return
        self.outcome.leads += 1
        if p.journey == "newsletter":
            await self.send(
                "POST",
                f"{capture}/v1/forms/newsletter/submissions",
                json={**fields, "consent_marketing": True},
            )
        elif p.journey == "download":
            asset = {"asset_id": "lead-scoring-guide", "asset_type": "ebook", "gated": True}
            await self.send("POST", f"{capture}/v1/downloads", json={**fields, **asset})
        elif p.journey == "webinar":
            await self.send(
                "POST", f"{capture}/v1/webinars/scoring-live/registrations", json=fields
            )
            if self.rng.random() < 0.6:
                minutes = self.rng.choice([12, 35, 55])
                await self.send(
                    "POST",
                    f"{capture}/v1/webinars/scoring-live/attendance",
                    json={"email": p.email, "attended_minutes": minutes},
                    headers=self.admin(),
                )
        elif p.journey in ("demo", "contact"):
            form = "demo-request" if p.journey == "demo" else "contact-sales"
            message = {"message": "We'd like to see Leadflow with our CRM."}
            await self.send(
                "POST", f"{capture}/v1/forms/{form}/submissions", json={**fields, **message}
            )
        elif p.journey == "segment":
            traits = {k: v for k, v in p.contact().items() if k != "company_size"}
            key = base64.b64encode(f"{self.secrets.write_key}:".encode()).decode()
            await self.send(
                "POST",
                f"{capture}/v1/batch",
                headers={"Authorization": f"Basic {key}"},
                json={
                    "batch": [
                        {
                            "type": "identify",
                            "anonymousId": p.anonymous_id,
                            "userId": f"user-{p.n}",
                            "traits": traits,
                            "messageId": f"{p.anonymous_id}-identify",
                        },
                        {
                            "type": "track",
                            "anonymousId": p.anonymous_id,
                            "userId": f"user-{p.n}",
                            "event": "Trial Started",
                            "messageId": f"{p.anonymous_id}-trial",
                        },
                    ]
                },
            )
        elif p.journey.startswith("ad-"):
            self.outcome.ad_leads += 1
            await getattr(self, f"ad_{p.journey[3:]}")(p)

    async def ad_meta(self, p: Person) -> None:
        lead_id = f"{900000000 + p.n}"
        contact = p.contact()
        self.platforms.meta[lead_id] = {
            "id": lead_id,
            "created_time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S+0000"),
            "form_id": "meta-form-1",
            "campaign_id": "retargeting",
            "field_data": [
                {"name": n, "values": [str(contact[k])]}
                for n, k in (
                    ("email", "email"),
                    ("first_name", "first_name"),
                    ("last_name", "last_name"),
                    ("company_name", "company"),
                    ("job_title", "job_title"),
                    ("country", "country"),
                )
            ],
        }
        value = {"leadgen_id": lead_id, "page_id": "page-1", "form_id": "meta-form-1"}
        body = {
            "object": "page",
            "entry": [{"id": "page-1", "changes": [{"field": "leadgen", "value": value}]}],
        }
        raw = json.dumps(body).encode()
        sig = hmac.new(self.secrets.meta_app_secret.encode(), raw, hashlib.sha256).hexdigest()
        await self.send(
            "POST",
            f"{self.urls.capture}/v1/webhooks/meta",
            content=raw,
            headers={"X-Hub-Signature-256": f"sha256={sig}", "Content-Type": "application/json"},
        )

    async def ad_google(self, p: Person) -> None:
        c = p.contact()
        columns = [
            ("EMAIL", c["email"]),
            ("FIRST_NAME", c["first_name"]),
            ("LAST_NAME", c["last_name"]),
            ("COMPANY_NAME", c["company"]),
            ("JOB_TITLE", c["job_title"]),
            ("COUNTRY", c["country"]),
        ]
        body = {
            "google_key": self.secrets.google_key,
            "lead_id": f"g-{p.n}",
            "form_id": "google-form-1",
            "campaign_id": "search-q4",
            "user_column_data": [{"column_id": k, "string_value": v} for k, v in columns],
            "is_test": False,
        }
        await self.send("POST", f"{self.urls.capture}/v1/webhooks/google-ads", json=body)

    async def ad_linkedin(self, p: Person) -> None:
        c = p.contact()
        lead_id = f"li-{p.n}"
        answers = [
            (1, c["email"]),
            (2, c["first_name"]),
            (3, c["last_name"]),
            (4, c["company"]),
            (5, c["job_title"]),
            (6, c["country"]),
        ]
        self.platforms.linkedin[lead_id] = {
            "leadGenForm": "urn:li:leadGenForm:42",
            "formResponse": {
                "answers": [
                    {"questionId": q, "answerDetails": {"textQuestionAnswer": {"answer": a}}}
                    for q, a in answers
                ]
            },
        }
        body = {
            "type": "LEAD_ACTION",
            "leadAction": "CREATED",
            "leadGenFormResponse": f"urn:li:leadGenFormResponse:{lead_id}",
            "leadGenForm": "urn:li:leadGenForm:42",
            "occurredAt": int(time.time() * 1000),
        }
        raw = json.dumps(body).encode()
        secret = self.secrets.linkedin_secret.encode()
        sig = hmac.new(secret, b"hmacsha256=" + raw, hashlib.sha256).hexdigest()
        await self.send(
            "POST",
            f"{self.urls.capture}/v1/webhooks/linkedin",
            content=raw,
            headers={"X-LI-Signature": sig, "Content-Type": "application/json"},
        )

    async def ad_spend(self) -> None:
        """Today's spend per source and campaign (the currencies stay apart)."""
        today = datetime.now(UTC).date().isoformat()
        scale = max(self.size, 20) / 100
        items = [
            {
                "day": today,
                "source": source,
                "campaign": campaign,
                "amount": round(amount * scale, 2),
                "currency": currency,
            }
            for source, _, campaign, currency, amount in CHANNELS
            if amount
        ]
        await self.send(
            "POST",
            f"{self.urls.scoring}/v1/ad-spend",
            json={"items": items},
            headers=self.admin(),
        )

    # --- the sales side ---------------------------------------------------------------------------

    async def open_assignments(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        for _ in range(20):
            params: dict[str, Any] = {"state": "open", "limit": 200}
            if cursor:
                params["cursor"] = cursor
            resp = await self.send(
                "GET", f"{self.urls.routing}/v1/assignments", params=params, headers=self.admin()
            )
            if resp is None:
                break
            page = resp.json()
            items += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                break
        return items

    async def sales(self, expected: int, tick: Callable[[int], None]) -> None:
        """Wait for routing to assign the sales-ready leads, then work most of them: a first
        touch, then opportunities and wins; a few hot ones stay untouched and will breach."""
        deadline = time.monotonic() + self.touch_wait
        seen: dict[str, dict[str, Any]] = {}
        grew = time.monotonic()
        while time.monotonic() < deadline:
            before = len(seen)
            for a in await self.open_assignments():
                seen.setdefault(a["id"], a)
            if len(seen) > before:
                grew = time.monotonic()
            # enough, or nothing new for a while (routing has assigned what it will)
            if len(seen) >= expected or (seen and time.monotonic() - grew > 3.0):
                break
            await asyncio.sleep(0.5)
        self.outcome.assignments = len(seen)
        jobs: list[Awaitable[None]] = []
        for a in seen.values():
            if self.rng.random() < 0.2:
                self.outcome.untouched_hot += a["sla"]["policy"] == "hot"
                continue
            jobs.append(self.work(a))
        for done in asyncio.as_completed(jobs):
            await done
            tick(1)

    async def work(self, a: dict[str, Any]) -> None:
        routing, lead_id = self.urls.routing, a["lead_id"]
        # a first touch now or within the next few minutes (routing accepts up to 5 ahead)
        at = datetime.now(UTC) + timedelta(seconds=self.rng.choice([5, 40, 90, 150, 240]))
        resp = await self.send(
            "POST",
            f"{routing}/v1/assignments/{a['id']}/first-touch",
            json={"occurred_at": at.isoformat(), "note": "called, left a voicemail"},
            headers=self.admin(),
            expect=(200, 409),
        )
        if resp is None or resp.status_code != 200:
            return
        self.outcome.touched += 1
        steps = ["contacted"]
        if self.rng.random() < 0.5:
            steps.append("opportunity_created")
            if self.rng.random() < 0.35:
                steps.append("won")
        for kind in steps:
            body = {"type": kind, "lead_id": lead_id, "assignment_id": a["id"]}
            ok = await self.send(
                "POST",
                f"{routing}/v1/sales/activities",
                json=body,
                headers={**self.admin(), "Idempotency-Key": f"demo-{a['id']}-{kind}"},
            )
            if ok is not None:
                self.outcome.opportunities += kind == "opportunity_created"
                self.outcome.won += kind == "won"

    async def fetched_ad_leads(self, timeout: float = 20.0) -> None:
        """Wait (a while) until scoring knows the Meta and LinkedIn leads, which capture fetches
        from the stand-in APIs that stop with the demo."""
        pending = {p.email for p in self.people if p.journey in ("ad-meta", "ad-linkedin")}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for email in sorted(pending):
                resp = await self.send(
                    "GET",
                    f"{self.urls.scoring}/v1/leads",
                    params={"email": email, "limit": 1},
                    headers=self.admin(),
                )
                if resp is not None and resp.json()["items"]:
                    pending.discard(email)
            if pending:
                await asyncio.sleep(0.5)
        self.outcome.ad_leads_missing = len(pending)

    # --- the run ----------------------------------------------------------------------------------

    async def check_services(self) -> None:
        assert self.client is not None
        for name, base in (
            ("capture", self.urls.capture),
            ("scoring", self.urls.scoring),
            ("routing", self.urls.routing),
        ):
            try:
                resp = await self.client.get(f"{base}/healthz", timeout=3.0)
            except httpx.HTTPError:
                resp = None
            if resp is None or resp.status_code != 200:
                raise DemoError(f"{name} does not answer at {base}: start it with `make run`")

    async def run(self) -> Outcome:
        import uvicorn

        config = uvicorn.Config(
            self.platforms.app,
            host="127.0.0.1",
            port=self.platform_port,
            log_config=None,
            log_level="warning",
            lifespan="off",
            interface="asgi3",
        )
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        try:
            async with httpx.AsyncClient(timeout=10.0) as self.client:
                await self.check_services()
                await self._traffic()
        finally:
            server.should_exit = True
            await serving
        return self.outcome

    async def _traffic(self) -> None:
        sales_ready = sum(
            p.journey in ("demo", "contact") or p.journey.startswith("ad-") for p in self.people
        )
        total = len(self.people) + 1 + sales_ready
        bar = Progress(total, self.out)
        started = time.monotonic()
        bar.advance(0, "ad spend")
        await self.ad_spend()
        bar.advance(1, "visitors browse, sign up, download, register")
        chunk = 25
        for i in range(0, len(self.people), chunk):
            batch = self.people[i : i + chunk]
            await self.page_views(batch)
            await asyncio.gather(*(self.journey(p) for p in batch))
            bar.advance(len(batch))
        self.outcome.phases["visitors"] = round(time.monotonic() - started, 1)
        bar.advance(0, "sales reps touch their new leads")
        # leads scored SQL are assigned by routing; touch most of them
        await self.sales(max(1, sales_ready // 2), lambda n: bar.advance(n))
        self.outcome.phases["sales"] = round(time.monotonic() - started, 1)
        bar.advance(0, "capture fetches the Meta and LinkedIn leads")
        await self.fetched_ad_leads()
        bar.advance(total, "done")
        bar.close()


class DemoError(RuntimeError):
    """The demo cannot run (a service does not answer)."""


def summary(o: Outcome, scoring_url: str) -> str:
    """What the demo did, for the terminal."""
    lines = [
        f"sent {o.requests} requests: {o.page_views} page views, {o.leads} people left their "
        f"details ({o.ad_leads} through Meta, Google and LinkedIn lead forms)",
        f"routing assigned {o.assignments} sales-ready leads; reps touched {o.touched}, "
        f"opened {o.opportunities} opportunities and won {o.won}",
        f"{o.untouched_hot} hot leads are left untouched: their SLA breaches in a few minutes",
        f"open {scoring_url}/dashboard (token: {DEV_TOKEN}) and pick 'Today'",
    ]
    if o.refused:
        lines.append(f"{len(o.refused)} requests were refused, e.g. {o.refused[0]}")
    return "\n".join(lines)


def main(size: int, urls: Urls, secrets: Secrets | None = None, seed: int = 7) -> int:
    """Run the demo from the command line; the exit status."""
    demo = Demo(urls, size, secrets=secrets, seed=seed)
    started = time.monotonic()
    try:
        outcome = asyncio.run(demo.run())
    except DemoError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(summary(outcome, urls.scoring))
    print(f"took {time.monotonic() - started:.1f} s")
    return 0
