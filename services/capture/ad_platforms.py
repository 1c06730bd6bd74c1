"""Fetching ad-lead details from the platforms' APIs (Meta Graph API, LinkedIn Lead Sync).

Platform answers are cleaned like webhook bodies (no NUL, no lone surrogates, no ``Decimal``).
Platform ids go into URLs percent-escaped, so an id can never steer a call to another API path.
The Meta token travels in the ``Authorization`` header with its ``appsecret_proof``, never in a
logged URL. Any failure raises; the fetcher (``services.capture.workers.AdFetcher``) retries.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

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
from shared.contract import Interaction
from shared.events import parse_time, utcnow
from shared.settings import Settings

META_FIELDS = "field_data,created_time,ad_id,form_id,campaign_id,platform,is_organic"
#: The ``LinkedIn-Version`` sent when ``capture.ad_fetch.linkedin_api_version`` is not set.
DEFAULT_LINKEDIN_API_VERSION = "202405"
#: The Graph API version when ``capture.ad_fetch.meta_graph_version`` is not set. Meta keeps a
#: version for about two years after its release (v24.0: October 2025).
DEFAULT_META_GRAPH_VERSION = "v24.0"
_GRAPH_VERSION = re.compile(r"/v[0-9]+\.[0-9]+/?$")


def graph_root(url: str, version: str) -> str:
    """The Graph API root to call: ``META_GRAPH_URL`` with its version segment (``/v21.0``)
    replaced by ``version``; a URL without one (a proxy, a test stand-in) is used as it is."""
    if _GRAPH_VERSION.search(url):
        return _GRAPH_VERSION.sub(f"/{version}", url)
    return url.rstrip("/")


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


class AdPlatforms:
    """The platforms' lead APIs, called with one HTTP client and the configured credentials."""

    def __init__(
        self,
        settings: Settings,
        client: httpx.AsyncClient,
        linkedin_api_version: str = DEFAULT_LINKEDIN_API_VERSION,
        meta_graph_version: str = DEFAULT_META_GRAPH_VERSION,
    ) -> None:
        self.settings = settings
        self.client = client
        self.linkedin_api_version = linkedin_api_version
        self.meta_graph_root = graph_root(settings.meta_graph_url, meta_graph_version)

    async def fetch(self, platform: str, lead_id: str, notification: dict[str, Any]) -> Interaction:
        """The ``ad_lead_received`` interaction of one platform lead."""
        if platform == "meta":
            return await self._meta(lead_id, notification)
        if platform == "linkedin":
            return await self._linkedin(lead_id, notification)
        raise FetchFailed(f"no fetcher for platform {platform}")

    async def _get(self, url: str, **kwargs: Any) -> Any:
        resp = await self.client.get(url, **kwargs)
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

    async def _meta(self, lead_id: str, notification: dict[str, Any]) -> Interaction:
        headers, params = self._meta_auth()
        lead = await self._get(
            f"{self.meta_graph_root}/{_seg(lead_id)}",
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
        return ad_interaction(
            "meta", lead_id, meta_fields(lead), ad, _platform_time(lead.get("created_time"))
        )

    async def _linkedin(self, lead_id: str, notification: dict[str, Any]) -> Interaction:
        base = self.settings.linkedin_api_url.rstrip("/")
        headers = {
            "Authorization": f"Bearer {self.settings.linkedin_access_token or ''}",
            "X-Restli-Protocol-Version": "2.0.0",
            "LinkedIn-Version": self.linkedin_api_version,
        }
        response = await self._get(
            f"{base}/rest/leadFormResponses/{_seg(lead_id)}", headers=headers
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
            form = await self._get(f"{base}/rest/leadForms/{_seg(match.group(1))}", headers=headers)
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
