"""Tables every service has: processed events (the consumer inbox) and the transactional outbox."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, MetaData, String, Table, Text

from shared.db import JSONType, UTCDateTime

metadata = MetaData()

processed_events = Table(
    "processed_events",
    metadata,
    Column("consumer", String(100), primary_key=True),
    Column("event_id", String(200), primary_key=True),
    Column("processed_at", UTCDateTime(), nullable=False),
    Index("ix_processed_events_age", "consumer", "processed_at"),
)

outbox = Table(
    "outbox",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("source", String(100), nullable=False),
    Column("topic", String(200), nullable=False),
    Column("event_id", String(200), nullable=False, unique=True),
    Column("ce_type", String(200), nullable=False),
    Column("ce_source", String(200), nullable=False),
    Column("ce_subject", String(200), nullable=True),
    Column("ce_time", UTCDateTime(), nullable=False),
    Column("partition_key", Text, nullable=True),
    Column("extensions", JSONType, nullable=False),
    Column("data", JSONType, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("sent_at", UTCDateTime(), nullable=True),
    # A row the relay must not publish before this time (None: at once). A producer that is
    # itself trying to publish the event holds its row back this way; if it dies trying, the
    # hold simply runs out and the relay takes over.
    Column("available_at", UTCDateTime(), nullable=True),
    Index("ix_outbox_pending", "source", "sent_at", "id"),
    Index("ix_outbox_sent", "source", "sent_at"),
)
