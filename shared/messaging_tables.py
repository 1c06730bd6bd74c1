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
    # Serves the relay (a source's unsent rows in order) and retention (its rows sent before
    # a time) alike.
    Index("ix_outbox_pending", "source", "sent_at", "id"),
)

#: What could not be processed or published, kept so that it can be seen and replayed.
#: ``kind`` is "record" (not a CloudEvent), "event" (its handler failed for good) or "outbox"
#: (the broker refused the row on its own). Values and keys that are not NUL-free UTF-8 are
#: stored base64 (``*_encoding``), so writing a dead letter cannot fail on what it holds.
deadletters = Table(
    "deadletters",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    # The same record redelivered, or the same outbox row refused again, is one dead letter.
    Column("dedupe_key", String(200), nullable=False, unique=True),
    Column("kind", String(20), nullable=False),
    Column("source", String(100), nullable=False),
    Column("consumer", String(100), nullable=False),
    Column("topic", String(255), nullable=True),
    Column("kafka_partition", Integer, nullable=True),
    Column("kafka_offset", BigInteger, nullable=True),
    Column("event_id", String(200), nullable=True),
    Column("ce_type", String(200), nullable=True),
    Column("record_key", Text, nullable=True),
    Column("key_encoding", String(10), nullable=True),
    Column("headers", JSONType, nullable=False),
    Column("value", Text, nullable=True),
    Column("value_encoding", String(10), nullable=True),
    Column("reason", Text, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("replayed_at", UTCDateTime(), nullable=True),
    Column("replay_event_id", String(200), nullable=True),
    Index("ix_deadletters_created", "created_at"),
)
