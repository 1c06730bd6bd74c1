"""Nurture's tables (``routing_nurture_*``), on routing's MetaData; created by routing_0010.

* ``routing_nurture_enrolments``: a lead's time in a track (at most one active per lead), the
  lead as last seen, why it entered and why it left.
* ``routing_nurture_steps``: one durable timer per step; the next step's row is written when the
  previous one fires. Fired once (pending -> fired), claimed with a lease on PostgreSQL.
* ``routing_nurture_leads``: the leads a stall rule may concern (not SQL, not disqualified, not
  erased), with their last activity, for the periodic stall scan.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from services.routing.tables import metadata
from shared.db import JSONType, UTCDateTime

_ID = BigInteger().with_variant(Integer(), "sqlite")
_ACTIVE = text("state = 'active'")

enrolments = Table(
    "routing_nurture_enrolments",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("lead_id", String(200), nullable=False),
    Column("lead_key", Text, nullable=True),
    Column("track", String(100), nullable=False),
    Column("state", String(20), nullable=False),
    Column("reason", JSONType, nullable=False),
    Column("lead", JSONType, nullable=False),
    Column("step_index", Integer, nullable=False, default=0),
    # the lead's stage when it entered, and as last seen (at its exit, once it left)
    Column("entry_stage", String(10), nullable=False),
    Column("last_stage", String(10), nullable=False),
    Column("enrolled_at", UTCDateTime(), nullable=False),
    Column("exited_at", UTCDateTime(), nullable=True),
    Column("exit_reason", String(40), nullable=True),
    Column("updated_at", UTCDateTime(), nullable=False),
    Index("ix_routing_nurture_enrolments_lead", "lead_id"),
    Index(
        "uq_routing_nurture_enrolments_active",
        "lead_id",
        unique=True,
        postgresql_where=_ACTIVE,
        sqlite_where=_ACTIVE,
    ),
    Index("ix_routing_nurture_enrolments_track", "track", "state"),
)

steps = Table(
    "routing_nurture_steps",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("enrolment_id", String(64), nullable=False),
    Column("lead_id", String(200), nullable=False),
    Column("step_index", Integer, nullable=False),
    Column("step_id", String(100), nullable=False),
    Column("due_at", UTCDateTime(), nullable=False),
    Column("state", String(20), nullable=False),
    Column("outcome", String(40), nullable=True),
    Column("lease_owner", String(100), nullable=True),
    Column("lease_until", UTCDateTime(), nullable=True),
    Column("fired_at", UTCDateTime(), nullable=True),
    UniqueConstraint("enrolment_id", "step_index", name="uq_routing_nurture_steps_enrolment"),
    Index("ix_routing_nurture_steps_pending", "state", "due_at"),
    Index("ix_routing_nurture_steps_lead", "lead_id"),
)

leads = Table(
    "routing_nurture_leads",
    metadata,
    Column("lead_id", String(200), primary_key=True),
    Column("stage", String(10), nullable=False),
    Column("last_activity_at", UTCDateTime(), nullable=False),
    Column("lead", JSONType, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Index("ix_routing_nurture_leads_stall", "stage", "last_activity_at"),
)
