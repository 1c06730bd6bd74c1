"""The worker that fetches ad-lead details (Meta Graph API, LinkedIn Lead Sync) durably.

Webhooks only store the platform's lead id in ``capture_ad_fetches``. This worker claims due
rows, fetches the details with retries and exponential backoff, and on success spools the
``ad_lead_received`` event (id derived from platform and lead id) in the same transaction that
marks the row done. After ``max_attempts`` failures the row is dead-lettered. A finished row
keeps no fetched answers: only, for LinkedIn, the normalised email/phone that a later
``DELETED`` notification needs, for ``keep_identifiers_days``.

Platform answers are cleaned like webhook bodies (no NUL, no lone surrogates, no ``Decimal``),
and a failure to store the result costs an attempt like a failed call, so one bad answer is
retried with backoff and dead-lettered instead of blocking the rows behind it. Platform ids go
into URLs percent-escaped, so an id can never steer a call to another API path. The Meta token
travels in the ``Authorization`` header with its ``appsecret_proof``, never in a logged URL.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx

from services.capture import repository
from services.capture.config import AdFetchPolicy
from services.capture.domain.ads import (
    InvalidPayload,
    ad_interaction,
    hmac_hex,
    id_str,
    linkedin_fields,
    loads_exact,
    meta_fields,
)
from services.capture.domain.jsonsafe import clean
from services.capture.events import (
    SOURCE,
    ad_event_id,
    fetch_deadletter_event,
    interaction_event,
)
from shared.contract import Interaction
from shared.events import CloudEvent, InteractionType, parse_time, utcnow
from shared.loops import DueWorkLoop
from shared.outbox import enqueue
from shared.runtime import Runtime
from shared.settings import Settings
from shared.topics import Topics

log = logging.getLogger(__name__)

#: Platforms that tell capture when a lead is deleted (LinkedIn ``leadAction: DELETED``).
ERASABLE = frozenset({"linkedin"})
META_FIELDS = "field_data,created_time,ad_id,form_id,campaign_id,platform,is_organic"
_LI_FORM = re.compile(r"urn:li:leadGenForm:([^,)]+)")


class FetchFailed(Exception):
    """A platform API call failed; it is retried later."""


def _seg(value: str) -> str:
    """One URL path segment: ``/``, ``..``, ``?`` and ``#`` in an id stay inside the segment."""
    return quote(value, safe="")


def _platform_time(value: Any) -> datetime:
    if isinstance(value, str):
        for fmt in ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z"):
            try:
                return datetime.strptime(value.replace("Z", "+0000"), fmt)
            except ValueError:
                continue
    return utcnow()


def _notified_time(notification: dict[str, Any]) -> datetime:
    """The ``occurred_at`` the webhook stored from LinkedIn's ``occurredAt``, else now."""
    value = notification.get("occurred_at")
    if isinstance(value, str) and value:
        try:
            return parse_time(value)
        except (ValueError, OverflowError):
            pass  # not one the webhook wrote: the fetch time stands in
    return utcnow()


class AdFetcher(DueWorkLoop):
    """Fetches pending ad leads until stopped (one of the runtime's workers)."""

    def __init__(
        self,
        runtime: Runtime,
        settings: Settings,
        policy: AdFetchPolicy,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.runtime = runtime
        self.settings = settings
        self.policy = policy
        self.transport = transport
        self.topics = Topics(settings.leadflow_topic_prefix)
        self._client: httpx.AsyncClient | None = None
        #: Completed passes over the due rows (tests wait on it to know the fetcher is idle).
        self.passes = 0
        # A webhook wakes the loop when it stores a fetch; otherwise it sleeps until the next
        # retry is due. The floor keeps a row leased by another replica from spinning us.
        super().__init__(max_sleep=30.0, min_sleep=0.05, error_pause=2.0)

    async def run(self) -> None:
        """Fetch due leads until stopped, with one HTTP client for the whole run."""
        async with httpx.AsyncClient(transport=self.transport, timeout=10.0) as client:
            self._client = client
            await super().run()

    async def step(self) -> datetime | None:
        """Attempt what is due; return when the next fetch is due."""
        assert self._client is not None
        attempted = await self.fetch_due(self._client)
        self.passes += 1
        if attempted:
            return utcnow()
        async with self.runtime.engine.connect() as conn:
            due: datetime | None = await repository.next_fetch_due(conn)
        return due

    async def fetch_due(self, client: httpx.AsyncClient) -> int:
        """Attempt every due fetch once; return how many were attempted."""
        async with self.runtime.engine.begin() as conn:
            rows = await repository.claim_due_fetches(conn, 20, timedelta(seconds=60))
        for row in rows:
            if self._stopping:
                break
            await self._attempt(client, row)
        return len(rows)

    async def _attempt(self, client: httpx.AsyncClient, row: Any) -> None:
        try:
            event = await self._fetch_event(client, row.platform, row.lead_id, row.notification)
        except Exception as exc:  # any failure, even an odd answer shape, costs one attempt
            await self._failed(row, f"{type(exc).__name__}: {exc}")
            return
        contact = event.data.get("contact") or {}
        keep = row.platform in ERASABLE  # only these platforms send erasure requests later
        try:
            async with self.runtime.engine.begin() as conn:
                finished = await repository.finish_fetch(
                    conn,
                    row.id,
                    event.id,
                    email=contact.get("email") if keep else None,
                    phone=contact.get("phone") if keep else None,
                    keep_until=utcnow() + timedelta(days=self.policy.keep_identifiers_days),
                )
                if finished:  # else the lead was deleted while we fetched it: publish nothing
                    await enqueue(conn, SOURCE, self.topics.interactions, [event])
        except Exception as exc:
            # The answer could not be stored (a value the database refuses, or the database
            # away): one failed attempt, so the row backs off and is dead-lettered in the end,
            # and the rows claimed behind it are still fetched in this pass.
            await self._failed(row, f"storing the fetched lead failed: {type(exc).__name__}")
            return
        if finished:
            self.runtime.relay.wake()

    async def _failed(self, row: Any, error: str) -> None:
        attempts = row.attempts + 1
        p = self.policy
        retry_at = None
        if attempts < p.max_attempts:
            delay = min(p.max_retry_seconds, p.first_retry_seconds * 2 ** (attempts - 1))
            retry_at = utcnow() + timedelta(seconds=delay)
        log.warning(
            "ad fetch %s %s failed (attempt %d): %s", row.platform, row.lead_id, attempts, error
        )
        async with self.runtime.engine.begin() as conn:
            pending = await repository.fail_fetch(conn, row.id, attempts, error, retry_at)
            if retry_at is None and pending:
                dead = fetch_deadletter_event(
                    row.platform, row.lead_id, attempts, error, row.notification
                )
                await enqueue(conn, SOURCE, self.topics.deadletter, [dead])
        if retry_at is None:
            self.runtime.relay.wake()

    async def _get(self, client: httpx.AsyncClient, url: str, **kwargs: Any) -> Any:
        resp = await client.get(url, **kwargs)
        if resp.status_code != 200:
            raise FetchFailed(f"GET {url.split('?')[0]} answered {resp.status_code}")
        # Exact ids first, then the webhook cleaning: NUL, lone surrogates and Decimals would
        # be refused by PostgreSQL or by the relay's serialiser later.
        return clean(loads_exact(resp.content))

    def _meta_auth(self) -> tuple[dict[str, str], dict[str, str]]:
        """Headers and query for a Graph API call: the token as a bearer header (URLs are
        logged) plus ``appsecret_proof`` when the app secret is known."""
        token = self.settings.meta_access_token or ""
        params = {"fields": META_FIELDS}
        if self.settings.meta_app_secret:
            params["appsecret_proof"] = hmac_hex(self.settings.meta_app_secret, token.encode())
        return {"Authorization": f"Bearer {token}"}, params

    async def _fetch_event(
        self, client: httpx.AsyncClient, platform: str, lead_id: str, notification: dict[str, Any]
    ) -> CloudEvent:
        if platform == "meta":
            headers, params = self._meta_auth()
            lead = await self._get(
                client,
                f"{self.settings.meta_graph_url.rstrip('/')}/{_seg(lead_id)}",
                headers=headers,
                params=params,
            )
            if not isinstance(lead, dict):
                raise InvalidPayload("the Graph API answer is not an object")
            ad = {
                "form_id": id_str(lead.get("form_id")) or notification.get("form_id"),
                "campaign_id": id_str(lead.get("campaign_id")),
                "ad_id": id_str(lead.get("ad_id")) or notification.get("ad_id"),
                "adgroup_id": notification.get("adgroup_id"),
                "page_id": notification.get("page_id"),
                "is_organic": bool(lead.get("is_organic", False)),
                "is_test": False,
            }
            interaction = ad_interaction(
                "meta", lead_id, meta_fields(lead), ad, _platform_time(lead.get("created_time"))
            )
        elif platform == "linkedin":
            interaction = await self._linkedin(client, lead_id, notification)
        else:
            raise FetchFailed(f"no fetcher for platform {platform}")
        return interaction_event(
            InteractionType.AD_LEAD_RECEIVED, interaction, id=ad_event_id(platform, lead_id)
        )

    async def _linkedin(
        self, client: httpx.AsyncClient, lead_id: str, notification: dict[str, Any]
    ) -> Interaction:
        base = self.settings.linkedin_api_url.rstrip("/")
        headers = {
            "Authorization": f"Bearer {self.settings.linkedin_access_token or ''}",
            "X-Restli-Protocol-Version": "2.0.0",
            "LinkedIn-Version": "202405",
        }
        response = await self._get(
            client, f"{base}/rest/leadFormResponses/{_seg(lead_id)}", headers=headers
        )
        if not isinstance(response, dict):
            raise InvalidPayload("the Lead Sync answer is not an object")
        form_urn = str(
            notification.get("leadGenForm")
            or response.get("leadGenForm")
            or response.get("versionedLeadGenFormUrn")
            or ""
        )
        match = _LI_FORM.search(form_urn)
        form: Any = {}
        if match:
            form = await self._get(
                client, f"{base}/rest/leadForms/{_seg(match.group(1))}", headers=headers
            )
        creative = (notification.get("associatedEntity") or {}).get("sponsoredCreative")
        ad = {
            "form_id": match.group(1) if match else None,
            "campaign_id": None,
            "ad_id": str(creative).rsplit(":", 1)[-1] if creative else None,
            "is_test": bool(response.get("testLead", False)),
            "lead_type": notification.get("leadType"),
        }
        return ad_interaction(
            "linkedin",
            lead_id,
            linkedin_fields(response, form if isinstance(form, dict) else {}),
            ad,
            _notified_time(notification),
        )
