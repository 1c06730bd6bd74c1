"""Routing's tables (all prefixed ``routing_`` so the services can share one database).

The migration in ``migrations/versions`` creates them with explicit ``op.create_table``; these
definitions are what the repository queries against, and must stay in step with it.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
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
_ID = BigInteger().with_variant(Integer(), "sqlite")

assignments = Table(
    "routing_assignments",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("lead_id", String(200), nullable=False),
    Column("lead_key", Text, nullable=True),
    Column("owner_id", String(100), nullable=False),
    Column("owner", JSONType, nullable=False),
    Column("team", String(100), nullable=False),
    Column("state", String(20), nullable=False),
    Column("policy", String(50), nullable=False),
    Column("warn_at", UTCDateTime(), nullable=False),
    Column("due_at", UTCDateTime(), nullable=False),
    Column("met_at", UTCDateTime(), nullable=True),
    Column("breached", Boolean, nullable=False, default=False),
    Column("response_seconds", Float, nullable=True),
    Column("business_seconds", Float, nullable=True),
    Column("assigned_at", UTCDateTime(), nullable=False),
    Column("reason", String(200), nullable=False),
    Column("lead", JSONType, nullable=False),
    Column("escalation_level", Integer, nullable=False, default=0),
    Column("previous_assignment_id", String(64), nullable=True),
    Column("updated_at", UTCDateTime(), nullable=False),
)

timers = Table(
    "routing_timers",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("assignment_id", String(64), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("due_at", UTCDateTime(), nullable=False),
    Column("state", String(20), nullable=False),
    Column("lease_owner", String(100), nullable=True),
    Column("lease_until", UTCDateTime(), nullable=True),
    Column("fired_at", UTCDateTime(), nullable=True),
    UniqueConstraint("assignment_id", "kind", name="uq_routing_timers_assignment_kind"),
    Index("ix_routing_timers_pending", "state", "due_at"),
    Index("ix_routing_timers_lease", "state", "lease_until"),
)

rep_states = Table(
    "routing_rep_states",
    metadata,
    Column("rep_id", String(100), primary_key=True),
    Column("paused", Boolean, nullable=False, default=False),
    Column("out_of_office", JSONType, nullable=False),
    Column("max_open", Integer, nullable=True),
    Column("max_per_day", Integer, nullable=True),
    Column("credit", Float, nullable=False, default=0.0),
    Column("updated_at", UTCDateTime(), nullable=False),
    # Run-time overrides of the configured weight and working hours (routing_0002).
    Column("weight", Integer, nullable=True),
    Column("working_hours", JSONType, nullable=True),
    # Load counters (routing_0004): open (and breached) assignments as of the last fold of
    # rep_load_deltas, and assignments made since today_start (the rep's local midnight).
    Column("open_count", Integer, nullable=False, default=0),
    Column("today_count", Integer, nullable=False, default=0),
    Column("today_start", UTCDateTime(), nullable=True),
)

#: +1/-1 per assignment entering or leaving the active states, appended without locking the
#: rep's row; the routing choice folds them into ``rep_states.open_count`` (routing_0004).
rep_load_deltas = Table(
    "routing_rep_load_deltas",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("rep_id", String(100), nullable=False),
    Column("delta", Integer, nullable=False),
    Index("ix_routing_rep_load_deltas_rep", "rep_id"),
)

unassigned = Table(
    "routing_unassigned",
    metadata,
    Column("lead_id", String(200), primary_key=True),
    Column("lead_key", Text, nullable=True),
    Column("lead", JSONType, nullable=False),
    Column("reason", String(200), nullable=False),
    Column("queue", String(100), nullable=False),
    Column("escalation_level", Integer, nullable=False, default=0),
    Column("exclude", JSONType, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", UTCDateTime(), nullable=False),
)

deliveries = Table(
    "routing_webhook_deliveries",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("webhook", String(100), nullable=False),
    Column("url", Text, nullable=False),
    Column("event_id", String(200), nullable=False),
    Column("event_type", String(200), nullable=False),
    Column("body", Text, nullable=False),
    Column("state", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("last_status", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("delivered_at", UTCDateTime(), nullable=True),
    # routing_0003: whose delivery it is (erasure scrubs by it) and the worker's claim on it.
    Column("lead_id", String(200), nullable=True),
    Column("lease_token", String(64), nullable=True),
    UniqueConstraint("webhook", "event_id", name="uq_routing_deliveries_webhook_event"),
    Index("ix_routing_deliveries_due", "state", "next_attempt_at"),
    Index("ix_routing_deliveries_lead", "lead_id"),
    Index("ix_routing_deliveries_finished", "state", "created_at"),
)

#: Leads routing saw erased (never assigned again) or merged into another lead (routing_0003).
tombstones = Table(
    "routing_lead_tombstones",
    metadata,
    Column("lead_id", String(200), primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("into_id", String(200), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Index("ix_routing_lead_tombstones_into", "into_id"),
)
