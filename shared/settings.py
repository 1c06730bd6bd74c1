"""Process settings, read from the environment (the variables named in the public contract)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_API_TOKEN = "dev-token"
DEV_WRITE_KEY = "dev-write-key"


class Settings(BaseSettings):
    """Every setting of every Leadflow process.

    Field names are the environment variable names (case-insensitive), so
    ``KAFKA_BOOTSTRAP_SERVERS`` sets ``kafka_bootstrap_servers``.
    """

    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

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
    kafka_topic_partitions: int = Field(default=3, ge=1)
    kafka_replication_factor: int = Field(default=1, ge=1)
    database_url: str | None = None
    leadflow_config: Path | None = None
    leadflow_topic_prefix: str = "leadflow."
    leadflow_api_token: str | None = None
    leadflow_write_keys: str | None = None
    leadflow_host: str = "127.0.0.1"
    leadflow_capture_port: int = 8001
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

    meta_app_secret: str | None = None
    meta_verify_token: str | None = None
    meta_access_token: str | None = None
    meta_graph_url: str = "https://graph.facebook.com/v21.0"
    google_ads_webhook_key: str | None = None
    linkedin_client_secret: str | None = None
    linkedin_access_token: str | None = None
    linkedin_api_url: str = "https://api.linkedin.com"

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
    def _secrets_outside_dev(self) -> Settings:
        if not self.leadflow_dev and not self.leadflow_api_token:
            raise ValueError("LEADFLOW_API_TOKEN is required outside dev mode (LEADFLOW_DEV=1)")
        return self

    @property
    def api_token(self) -> str:
        """The bearer token for server-to-server and admin endpoints."""
        return self.leadflow_api_token or DEV_API_TOKEN

    @property
    def write_keys(self) -> frozenset[str]:
        """Write keys the tracking API accepts."""
        if self.leadflow_write_keys:
            return frozenset(k.strip() for k in self.leadflow_write_keys.split(",") if k.strip())
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
    from pydantic import ValidationError

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
