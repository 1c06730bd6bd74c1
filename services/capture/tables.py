"""Capture's own tables (created by the migrations in migrations/versions/)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from shared.db import JSONType, UTCDateTime

metadata = MetaData()

#: One row per idempotent request (Idempotency-Key, Segment messageId, ad lead id): a repeat
#: answers from here. The primary key is the derived event id, so the key's size is bounded.
idempotency = Table(
    "capture_idempotency",
    metadata,
    Column("event_id", String(200), primary_key=True),
    Column("scope", String(300), nullable=False),
    Column("lead_key", Text, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    #: SHA-256 of an Idempotency-Key request's fields: the same key with other fields is a 422
    Column("fingerprint", String(64), nullable=True),
)

#: Ad-platform leads whose details must still be fetched (Meta Graph API, LinkedIn Lead Sync).
#: Once fetched, a row keeps only what dedupe needs (platform, lead id, event id) plus, for
#: LinkedIn, the normalised email/phone an erasure request (``leadAction: DELETED``) needs,
#: until ``identifiers_until``. Status: pending | done | dead | deleted.
ad_fetches = Table(
    "capture_ad_fetches",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("platform", String(20), nullable=False),
    Column("lead_id", String(300), nullable=False),
    Column("notification", JSONType, nullable=False),
    Column("status", String(10), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("last_error", Text, nullable=True),
    Column("event_id", String(200), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("email", Text, nullable=True),
    Column("phone", String(40), nullable=True),
    Column("identifiers_until", UTCDateTime(), nullable=True),
    UniqueConstraint("platform", "lead_id", name="uq_capture_ad_fetches_lead"),
    Index("ix_capture_ad_fetches_due", "status", "next_attempt_at"),
)
