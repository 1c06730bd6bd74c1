"""Capture's configuration: the ``forms`` and ``capture`` sections of the YAML file, and the
settings capture derives from the environment (tracking origins, trusted proxies)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.capture.ad_platforms import DEFAULT_LINKEDIN_API_VERSION, DEFAULT_META_GRAPH_VERSION
from services.capture.domain.interaction import FormSettings
from services.capture.domain.ratelimit import Network, parse_networks
from shared.config import load_config, load_schema, validate_section
from shared.settings import Settings, SettingsError, split_list


@dataclass(frozen=True, slots=True)
class AdFetchPolicy:
    """How the ad-lead fetcher retries a platform API."""

    max_attempts: int = 8
    first_retry_seconds: float = 2.0
    max_retry_seconds: float = 600.0
    #: How long a fetched LinkedIn lead's email/phone are kept for a ``DELETED`` notification.
    keep_identifiers_days: float = 30.0
    #: How long finished (done, dead, deleted) fetch rows are kept to ignore redeliveries.
    keep_finished_days: float = 30.0
    #: The ``LinkedIn-Version`` header (YYYYMM) of Lead Sync calls. LinkedIn retires a monthly
    #: version about a year after release; a retired one fails every fetch.
    linkedin_api_version: str = DEFAULT_LINKEDIN_API_VERSION
    #: The Graph API version (``v24.0``) of Meta lead fetches; it replaces the version segment
    #: of ``META_GRAPH_URL``. Meta retires a version about two years after its release.
    meta_graph_version: str = DEFAULT_META_GRAPH_VERSION


@dataclass(frozen=True, slots=True)
class CaptureConfig:
    """Everything capture reads from the config file, validated."""

    forms: Mapping[str, FormSettings]
    rate_per_second: float = 50.0
    rate_burst: int = 500
    max_body_bytes: int = 64 * 1024
    publish_timeout_seconds: float = 2.5
    idempotency_days: float = 7.0
    default_region: str | None = None
    allowed_origins: tuple[str, ...] = ()
    ad_fetch: AdFetchPolicy = field(default_factory=AdFetchPolicy)

    @property
    def public_origins(self) -> frozenset[str]:
        """Origins allowed on endpoints that are not tied to one form (downloads, webinars)."""
        out = set(self.allowed_origins)
        for form in self.forms.values():
            out.update(form.allowed_origins)
        return frozenset(out)


def load_capture_config(settings: Settings, raw: Mapping[str, Any] | None = None) -> CaptureConfig:
    """Capture's config from the file ``LEADFLOW_CONFIG`` names (or from ``raw``, already read)."""
    return parse_config(load_config(settings.leadflow_config) if raw is None else raw)


def tracking_origins(settings: Settings, public_origins: frozenset[str]) -> frozenset[str]:
    """Who may call the tracking API from a browser: ``LEADFLOW_TRACKING_ORIGINS``, else the
    forms' allowed origins, else (dev mode only) any origin."""
    if settings.leadflow_tracking_origins is not None:
        given = split_list(settings.leadflow_tracking_origins)
        return frozenset(o.rstrip("/").lower() for o in given)
    if public_origins:
        return frozenset(o.lower() for o in public_origins)
    return frozenset({"*"}) if settings.leadflow_dev else frozenset()


def trusted_proxies(settings: Settings) -> tuple[Network, ...]:
    """The proxies whose ``X-Forwarded-For`` is believed (``LEADFLOW_TRUSTED_PROXIES``)."""
    try:
        return parse_networks(settings.leadflow_trusted_proxies or "")
    except ValueError as exc:
        raise SettingsError(f"invalid setting LEADFLOW_TRUSTED_PROXIES: {exc}") from None


def parse_config(config: Mapping[str, Any]) -> CaptureConfig:
    """Validate the ``forms`` and ``capture`` sections and build a :class:`CaptureConfig`.

    Raises ``shared.config.ConfigError`` naming the bad key, so start-up stops clearly.
    """
    owned = {k: config[k] for k in ("forms", "capture") if k in config}
    validate_section(owned, load_schema("services.capture"))
    section = owned.get("capture") or {}
    default_region = section.get("default_region")
    forms = {
        form_id: FormSettings(
            form_id=form_id,
            intent=spec["intent"],
            allowed_origins=tuple(o.rstrip("/") for o in spec.get("allowed_origins") or ()),
            default_region=spec.get("default_region") or default_region,
            consent_text_version=spec.get("consent_text_version"),
        )
        for form_id, spec in (owned.get("forms") or {}).items()
    }
    rate = section.get("rate_limit") or {}
    fetch = section.get("ad_fetch") or {}
    return CaptureConfig(
        forms=forms,
        rate_per_second=float(rate.get("per_second", 50)),
        rate_burst=int(rate.get("burst", 500)),
        max_body_bytes=int(section.get("max_body_kb", 64)) * 1024,
        publish_timeout_seconds=float(section.get("publish_timeout_seconds", 2.5)),
        idempotency_days=float(section.get("idempotency_days", 7)),
        default_region=default_region,
        allowed_origins=tuple(o.rstrip("/") for o in section.get("allowed_origins") or ()),
        ad_fetch=AdFetchPolicy(
            max_attempts=int(fetch.get("max_attempts", 8)),
            first_retry_seconds=float(fetch.get("first_retry_seconds", 2)),
            max_retry_seconds=float(fetch.get("max_retry_seconds", 600)),
            keep_identifiers_days=float(fetch.get("keep_identifiers_days", 30)),
            keep_finished_days=float(fetch.get("keep_finished_days", 30)),
            linkedin_api_version=str(
                fetch.get("linkedin_api_version", DEFAULT_LINKEDIN_API_VERSION)
            ),
            meta_graph_version=str(fetch.get("meta_graph_version", DEFAULT_META_GRAPH_VERSION)),
        ),
    )
