"""The scoring tables (SQLAlchemy Core). The migration creates the same tables explicitly."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Date,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
)

from shared.db import UTCDateTime

metadata = MetaData()

#: One row per lead: queryable columns plus the whole domain state as JSON.
leads = Table(
    "scoring_leads",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("key", Text, nullable=False),
    Column("email", String(320), nullable=True),
    Column("phone", String(32), nullable=True),
    Column("status", String(20), nullable=False),
    Column("stage", String(8), nullable=False),
    Column("temperature", String(8), nullable=False),
    Column("score_total", Integer, nullable=False),
    Column("fit", Integer, nullable=False),
    Column("engagement", Integer, nullable=False),
    Column("owner_id", String(200), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("last_activity_at", UTCDateTime(), nullable=True),
    Column("updated_at", UTCDateTime(), nullable=False),
    # json, not jsonb (scoring_0006): stored and handed back whole, never queried inside
    Column("state", JSON(), nullable=False),
    # scoring_0002: what the KPIs group and count by
    Column("first_source", String(200), nullable=True),
    Column("first_campaign", String(200), nullable=True),
    Column("first_form_id", String(200), nullable=True),
    Column("mql_at", UTCDateTime(), nullable=True),
    Column("qualified_at", UTCDateTime(), nullable=True),
    Index("ix_scoring_leads_created", "created_at", "id"),
    Index("ix_scoring_leads_stage", "stage"),
    Index("ix_scoring_leads_temperature", "temperature"),
    Index("ix_scoring_leads_status", "status"),
    Index("ix_scoring_leads_owner", "owner_id"),
)

#: Every identifier of every lead. The primary key makes two consumers creating the same
#: person at once collide (IntegrityError), and the runner's retry then finds the winner.
identities = Table(
    "scoring_identities",
    metadata,
    Column("kind", String(16), primary_key=True),
    Column("value", String(320), primary_key=True),
    Column("lead_id", String(64), nullable=False),
    Index("ix_scoring_identities_lead", "lead_id"),
)

#: What happened to a lead: interactions (with their data, for rescoring) and lead changes.
timeline = Table(
    "scoring_timeline",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("lead_id", String(64), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("type", String(200), nullable=False),
    Column("event_id", String(200), nullable=True),
    Column("data", JSON(), nullable=False),  # json, not jsonb (scoring_0006), as the state
    Index("ix_scoring_timeline_lead", "lead_id", "id"),
    # scoring_0003: retention prunes by age
    Index("ix_scoring_timeline_at", "at"),
)

#: Hashes of erased emails: such a person is not re-created without a new consent.
erased_emails = Table(
    "scoring_erased_emails",
    metadata,
    Column("email_hash", String(64), primary_key=True),
    Column("erased_at", UTCDateTime(), nullable=False),
)

#: Ad spend per day, source and campaign (cost per lead and per SQL in the KPIs).
ad_spend = Table(
    "scoring_ad_spend",
    metadata,
    Column("day", Date, primary_key=True),
    Column("source", String(200), primary_key=True),
    Column("campaign", String(200), primary_key=True),
    Column("amount", Numeric(14, 2), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)
