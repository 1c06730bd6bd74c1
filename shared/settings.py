"""Process settings, read from the environment (the variables named in the public contract)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.topics import DEFAULT_PREFIX

DEV_API_TOKEN = "dev-token"
DEV_WRITE_KEY = "dev-write-key"
MIN_TOKEN_LENGTH = 16
"""Shortest bearer token accepted outside dev mode (a guessable token is no credential)."""


def split_list(value: str | None) -> tuple[str, ...]:
    """A comma-separated setting as its non-empty, stripped items, in order."""
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


class Settings(BaseSettings):
    """Every setting of every Leadflow process.

    Field names are the environment variable names (case-insensitive), so
    ``KAFKA_BOOTSTRAP_SERVERS`` sets ``kafka_bootstrap_servers``.
    """

    # An empty variable means "unset": Compose's ``${VAR:-}`` gives an empty string, which would
    # otherwise read as ``Path('.')`` for LEADFLOW_CONFIG (and as "" for every other setting).
    model_config = SettingsConfigDict(
        env_file=None, extra="ignore", case_sensitive=False, env_ignore_empty=True
    )

    leadflow_dev: bool = Field(
        default=False, description="Dev mode: dev credentials allowed, bundled broker, SQLite."
    )
    kafka_bootstrap_servers: str | None = None
    kafka_enable_idempotence: bool = Field(
        default=False, description="Idempotent producer; only for real Kafka (Tansu rejects it)."
    )
    kafka_session_timeout_ms: int = Field(default=10_000, ge=100)
    kafka_heartbeat_interval_ms: int = Field(default=3_000, ge=50)
    kafka_rebalance_timeout_ms: int = Field(default=10_000, ge=100)
    kafka_fetch_max_wait_ms: int = Field(
        default=20,
        ge=0,
        le=60_000,
        description="How long a consumer's fetch waits at the broker for data. Every hop of a "
        "lead (capture -> scoring -> routing) can wait this long: short keeps speed to lead low "
        "at the price of more idle fetches (aiokafka's 500 ms default added about 0.5 s a hop).",
    )
    kafka_linger_ms: int = Field(
        default=0,
        ge=0,
        le=1_000,
        description="How long a producer waits to fill a batch before sending it. 0: send at "
        "once; records still batch while a request is in flight (measured on the bundled broker "
        "with 32 concurrent senders: 0 ms gave 1.7x the throughput of 2 ms at half the latency).",
    )
    kafka_topic_partitions: int = Field(default=3, ge=1)
    kafka_replication_factor: int = Field(default=1, ge=1)
    # Managed Kafka (Confluent Cloud, MSK, Aiven, Redpanda Cloud): TLS and SASL, see
    # docs/configuration.md. The defaults are a plain local broker.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = Field(default=None, repr=False)
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    database_url: str | None = None
    leadflow_config: Path | None = None
    leadflow_topic_prefix: str = DEFAULT_PREFIX
    leadflow_api_token: str | None = Field(
        default=None,
        description="Admin bearer token(s), comma-separated so a new one can overlap the old.",
    )
    leadflow_read_tokens: str | None = Field(
        default=None, description="Read-only bearer token(s), comma-separated."
    )
    leadflow_session_secret: str | None = Field(
        default=None,
        description="Key that signs dashboard login cookies (default: derived from the admin "
        "tokens, so rotating them also ends every session).",
    )
    leadflow_max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Largest request body any service reads."
    )
    leadflow_write_keys: str | None = None
    leadflow_host: str = "127.0.0.1"
    leadflow_capture_port: int = 8001
    #: Processes serving capture's port (uvicorn workers): capture's work per request is
    #: CPU in one Python process, so a second core needs a second process.
    leadflow_capture_workers: int = Field(default=1, ge=1, le=64)
    leadflow_scoring_port: int = 8002
    leadflow_routing_port: int = 8003
    leadflow_var_dir: Path = Path("var")
    leadflow_log_level: str = "INFO"
    leadflow_consumer_batch: int = Field(default=500, ge=1, le=10_000)
    leadflow_outbox_poll_seconds: float = Field(default=1.0, gt=0)
    leadflow_outbox_retention_hours: float = Field(
        default=24.0, gt=0, description="How long published outbox rows are kept."
    )
    leadflow_inbox_retention_days: float = Field(
        default=14.0, gt=0, description="How long processed event ids are kept for dedupe."
    )
    leadflow_consumer_stall_seconds: float = Field(
        default=30.0,
        gt=0,
        description="/readyz fails when a consumer has not polled Kafka for this long.",
    )
    leadflow_webhook_delivery_retention_days: float = Field(
        default=30.0, gt=0, description="How long delivered and dead webhook deliveries are kept."
    )
    leadflow_timer_retention_days: float = Field(
        default=7.0, gt=0, description="How long fired and cancelled SLA timers are kept."
    )
    leadflow_anonymous_retention_days: float = Field(
        default=90.0, gt=0, description="Scoring deletes anonymous leads inactive this long."
    )
    leadflow_timeline_retention_days: float = Field(
        default=365.0, gt=0, description="Scoring prunes lead timeline entries older than this."
    )
    leadflow_scoring_lead_cache_mb: float = Field(
        default=32.0,
        ge=0,
        description="Memory for the leads the scoring consumer keeps between batches (0: none).",
    )

    meta_app_secret: str | None = None
    meta_verify_token: str | None = None
    meta_access_token: str | None = None
    meta_graph_url: str = "https://graph.facebook.com/v21.0"
    google_ads_webhook_key: str | None = None
    linkedin_client_secret: str | None = None
    linkedin_access_token: str | None = None
    linkedin_api_url: str = "https://api.linkedin.com"
    leadflow_trusted_proxies: str = Field(
        default="",
        description="Comma-separated proxy IPs/CIDRs whose X-Forwarded-For capture believes "
        "for rate limiting; empty: the TCP peer is the client.",
    )
    leadflow_tracking_origins: str | None = Field(
        default=None,
        description="Comma-separated origins allowed to call the tracking API from a browser; "
        "unset: the forms' allowed origins ('*' in dev mode when there are none).",
    )

    @field_validator("leadflow_topic_prefix")
    @classmethod
    def _prefix_is_topic_safe(cls, value: str) -> str:
        allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        if not set(value) <= allowed:
            raise ValueError("may only contain letters, digits, '.', '_' and '-'")
        return value

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.startswith("postgresql://") or value.startswith("postgres://"):
            return "postgresql+asyncpg://" + value.split("://", 1)[1]
        if not (
            value.startswith("postgresql+asyncpg://") or value.startswith("sqlite+aiosqlite://")
        ):
            raise ValueError("must be a postgresql+asyncpg:// or sqlite+aiosqlite:// URL")
        return value

    @model_validator(mode="after")
    def _kafka_security(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL_"):
            missing = [
                name
                for name, value in (
                    ("KAFKA_SASL_MECHANISM", self.kafka_sasl_mechanism),
                    ("KAFKA_SASL_USERNAME", self.kafka_sasl_username),
                    ("KAFKA_SASL_PASSWORD", self.kafka_sasl_password),
                )
                if not value
            ]
            if missing:
                raise ValueError(
                    f"KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                    + ", ".join(missing)
                )
        if bool(self.kafka_ssl_certfile) != bool(self.kafka_ssl_keyfile):
            raise ValueError("KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE go together (client TLS)")
        return self

    @model_validator(mode="after")
    def _secrets_outside_dev(self) -> Settings:
        # Each message names the variable: it is what the operator has to fix.
        if self.leadflow_dev:
            return self
        if not self.api_tokens:
            raise ValueError("LEADFLOW_API_TOKEN is required outside dev mode (LEADFLOW_DEV=1)")
        for var, tokens in (
            ("LEADFLOW_API_TOKEN", self.api_tokens),
            ("LEADFLOW_READ_TOKENS", self.read_tokens),
        ):
            for token in tokens:
                if token == DEV_API_TOKEN:
                    raise ValueError(f"{var} must not be the dev token outside dev mode")
                if len(token) < MIN_TOKEN_LENGTH:
                    raise ValueError(
                        f"{var} tokens must be at least {MIN_TOKEN_LENGTH} characters "
                        "outside dev mode"
                    )
        secret = self.leadflow_session_secret
        if secret is not None and len(secret) < 2 * MIN_TOKEN_LENGTH:
            raise ValueError(
                f"LEADFLOW_SESSION_SECRET must be at least {2 * MIN_TOKEN_LENGTH} characters "
                "outside dev mode"
            )
        if DEV_WRITE_KEY in split_list(self.leadflow_write_keys):
            raise ValueError(
                "LEADFLOW_WRITE_KEYS must not contain the dev write key outside dev mode"
            )
        if not self.database_url:
            raise ValueError(
                "DATABASE_URL is required outside dev mode (only dev mode falls back to SQLite)"
            )
        return self

    @property
    def api_token(self) -> str:
        """The first admin bearer token (kept for callers that need one to send)."""
        return self.api_tokens[0] if self.api_tokens else DEV_API_TOKEN

    @property
    def api_tokens(self) -> tuple[str, ...]:
        """Every admin bearer token accepted (several while one is being rotated)."""
        tokens = split_list(self.leadflow_api_token)
        if not tokens and self.leadflow_dev:
            return (DEV_API_TOKEN,)
        return tokens

    @property
    def read_tokens(self) -> tuple[str, ...]:
        """Read-only bearer tokens (admin tokens may read as well; see shared.auth)."""
        return split_list(self.leadflow_read_tokens)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every configured secret value, for redaction from logs."""
        values = [
            *self.api_tokens,
            *self.read_tokens,
            *self.write_keys,
            self.leadflow_session_secret,
            self.meta_app_secret,
            self.meta_verify_token,
            self.meta_access_token,
            self.google_ads_webhook_key,
            self.linkedin_client_secret,
            self.linkedin_access_token,
        ]
        if self.database_url and "@" in self.database_url:
            # The password of postgresql+asyncpg://user:password@host/db.
            userinfo = self.database_url.split("://", 1)[-1].rsplit("@", 1)[0]
            values.append(userinfo.partition(":")[2] or None)
        return tuple(v for v in values if v)

    @property
    def write_keys(self) -> frozenset[str]:
        """Write keys the tracking API accepts."""
        if self.leadflow_write_keys:
            return frozenset(split_list(self.leadflow_write_keys))
        return frozenset({DEV_WRITE_KEY}) if self.leadflow_dev else frozenset()

    @property
    def db_url(self) -> str:
        """The database URL; in dev mode a SQLite file under the var directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.leadflow_var_dir / 'leadflow.db'}"

    @property
    def bootstrap_servers(self) -> str:
        """The Kafka bootstrap list, which must be known by the time a service starts."""
        if not self.kafka_bootstrap_servers:
            raise RuntimeError("KAFKA_BOOTSTRAP_SERVERS is not set (leadflow dev sets it for you)")
        return self.kafka_bootstrap_servers


class SettingsError(SystemExit):
    """Raised at start-up with one clear message naming the bad variable."""


def load_settings(**overrides: object) -> Settings:
    """Read settings, turning a validation error into one readable start-up message."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]).upper() or "settings"
            lines.append(f"invalid setting {loc}: {err['msg']}")
        raise SettingsError("\n".join(lines)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings, read once."""
    return load_settings()
