"""Exact reconciliation of what capture accepted against what scoring and routing did.

At-least-once delivery allows the same event id twice on a topic; what must hold is the effects:
every accepted event applied to its person's lead exactly once, one lead per person, every SQL
assigned exactly once with one live assignment, each SLA event once per assignment (at most
once, and exactly once when its moment is well past). At the end the interactions topic is read
once too, to tell an event capture never published from one a consumer never applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.events import CloudEvent, InvalidEvent, RoutingType, from_kafka
from tests.chaos.cluster import Cluster
from tests.chaos.traffic import Ledger

LIVE = ("open", "met", "breached")
#: Seconds past an SLA moment by which its timer must have fired.
TIMER_GRACE = 10
SLA_TYPES = (RoutingType.SLA_WARNING, RoutingType.SLA_BREACHED, RoutingType.SLA_MET)


@dataclass
class Report:
    """The outcome: ``lost`` and ``twice`` name each discrepancy (empty when all is well)."""

    accepted: int
    lost: list[str] = field(default_factory=list)
    twice: list[str] = field(default_factory=list)
    #: A person's effects in the wrong shape (split over two leads, not an SQL...); these
    #: usually echo a lost or doubled event, so they are kept apart from the two counts.
    wrong: list[str] = field(default_factory=list)
    #: What was actually checked (so a pass is not vacuous): applied events, SQLs, SLA events...
    seen: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.lost and not self.twice and not self.wrong

    def summary(self, limit: int = 8) -> str:
        return (
            f"accepted {self.accepted}, lost {len(self.lost)}, twice {len(self.twice)}, "
            f"wrong {len(self.wrong)}, seen {dict(self.seen)}; "
            f"lost: {self.lost[:limit]}; twice: {self.twice[:limit]}; wrong: {self.wrong[:limit]}"
        )


async def read_all(bootstrap: str, topic: str, timeout: float = 60.0) -> list[CloudEvent]:
    """Every decodable event on ``topic`` now (poison records are skipped, not fatal)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[CloudEvent] = []
        deadline = time.monotonic() + timeout
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: not read to its end within {timeout}s")
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    with contextlib.suppress(InvalidEvent):  # poison: not ours to count
                        out.append(from_kafka(r.key, r.value, r.headers))
        return out
    finally:
        await consumer.stop()


async def reconcile(cluster: Cluster, ledger: Ledger) -> Report:
    """Compare the ledger with the database and the routing topic, once."""
    report = Report(ledger.accepted)
    conn = await asyncpg.connect(cluster.pg_url)
    try:
        await _events(conn, ledger, report)
        await _people(conn, ledger, report)
        await _assignments(conn, ledger, report)
        due = await _due(conn)
    finally:
        await conn.close()
    _routing_events(await read_all(cluster.bootstrap, cluster.topics.routing), due, report)
    return report


async def _events(conn: asyncpg.Connection, ledger: Ledger, report: Report) -> None:
    """Every accepted event: processed by scoring once, and one interaction on the timeline."""
    ids = [i for ids in ledger.events.values() for i in ids]
    rows = await conn.fetch(
        "SELECT event_id, count(*) AS n FROM scoring_timeline"
        " WHERE kind = 'interaction' AND event_id = ANY($1::text[]) GROUP BY event_id",
        ids,
    )
    applied = {r["event_id"]: r["n"] for r in rows}
    processed = {
        r["event_id"]
        for r in await conn.fetch(
            "SELECT event_id FROM processed_events"
            " WHERE consumer = 'leadflow-scoring' AND event_id = ANY($1::text[])",
            ids,
        )
    }
    report.seen["applied"] = len(applied)
    for event_id in ids:
        n = applied.get(event_id, 0)
        if n == 0:
            where = "marked processed" if event_id in processed else "not processed"
            report.lost.append(f"event {event_id} not applied ({where})")
        elif n > 1:
            report.twice.append(f"event {event_id} applied {n} times")


async def _people(conn: asyncpg.Connection, ledger: Ledger, report: Report) -> None:
    """One lead per email, holding exactly the interactions that person sent."""
    emails = list(ledger.events)
    leads = await conn.fetch(
        "SELECT email, count(*) AS n FROM scoring_leads WHERE email = ANY($1::text[])"
        " GROUP BY email",
        emails,
    )
    per_email = {r["email"]: r["n"] for r in leads}
    # The timeline counted per lead once, then joined: as a join per identity, the planner
    # (young tables, no statistics yet) scanned the whole timeline for each of thousands of
    # emails, 13 s of a core a pass on a 2-core machine, every second of the settling: the
    # check starved the services it was waiting for.
    counts = await conn.fetch(
        "SELECT i.value AS email, coalesce(t.n, 0) AS n FROM scoring_identities i"
        " LEFT JOIN (SELECT lead_id, count(*) AS n FROM scoring_timeline"
        "   WHERE kind = 'interaction' GROUP BY lead_id) t ON t.lead_id = i.lead_id"
        " WHERE i.kind = 'email' AND i.value = ANY($1::text[])",
        emails,
    )
    interactions = {r["email"]: r["n"] for r in counts}
    report.seen["people"] = len(interactions)
    for email, sent in ledger.events.items():
        if per_email.get(email, 0) > 1:
            report.wrong.append(f"{email}: {per_email[email]} leads")
        got = interactions.get(email)
        if got is None:
            report.wrong.append(f"{email}: no lead")
        elif got < len(sent):
            report.wrong.append(f"{email}: {got} of {len(sent)} interactions on its lead")
        elif got > len(sent):
            report.wrong.append(f"{email}: {got} interactions on its lead, {len(sent)} sent")


async def _assignments(conn: asyncpg.Connection, ledger: Ledger, report: Report) -> None:
    """Every SQL (sent as one, or found in the database) has exactly one live assignment.

    A person's assignments are counted over every lead id they ever had (merged-away ones too).
    """
    rows = await conn.fetch(
        "SELECT l.id, l.email, l.stage, array_agg(DISTINCT m.value)"
        "   FILTER (WHERE m.value IS NOT NULL) AS merged"
        " FROM scoring_leads l LEFT JOIN scoring_identities m"
        "   ON m.lead_id = l.id AND m.kind = 'merged'"
        " WHERE l.stage = 'SQL' OR l.email = ANY($1::text[]) GROUP BY l.id",
        list(ledger.sql),
    )
    live = Counter(
        r["lead_id"]
        for r in await conn.fetch(
            "SELECT lead_id FROM routing_assignments WHERE state = ANY($1::text[])", list(LIVE)
        )
    )
    for r in rows:
        if r["stage"] != "SQL":
            report.wrong.append(f"{r['email']}: stage {r['stage']}, sent as an SQL")
            continue
        n = sum(live[i] for i in [r["id"], *(r["merged"] or [])])
        report.seen["sql"] += 1
        if n == 0:
            report.lost.append(f"SQL {r['email']}: no live assignment")
        elif n > 1:
            report.twice.append(f"SQL {r['email']}: {n} live assignments")
    found = {r["email"] for r in rows}
    report.wrong += [f"{email}: no lead (sent as an SQL)" for email in ledger.sql - found]


async def _due(conn: asyncpg.Connection) -> set[tuple[str, str]]:
    """(assignment id, SLA event type) that must have fired by now: the moment passed a while
    ago, untouched (the drills' SLA clocks count plain seconds, see ``chaos_config``)."""
    rows = await conn.fetch(
        "SELECT id, warn_at < now() - make_interval(secs => $1) AS warn,"
        " due_at < now() - make_interval(secs => $1) AS due"
        " FROM routing_assignments WHERE met_at IS NULL",
        float(TIMER_GRACE),
    )
    return {(r["id"], RoutingType.SLA_WARNING) for r in rows if r["warn"]} | {
        (r["id"], RoutingType.SLA_BREACHED) for r in rows if r["due"]
    }


def _routing_events(events: list[CloudEvent], due: set[tuple[str, str]], report: Report) -> None:
    """Distinct event ids: one ``assigned`` per lead, each SLA event once per assignment (and
    exactly once when its moment is well past)."""
    unique = {e.id: e for e in events}.values()
    assigned: dict[Any, set[str]] = defaultdict(set)
    sla: dict[tuple[Any, str], set[str]] = defaultdict(set)
    for e in unique:
        if e.type == RoutingType.ASSIGNED:
            assigned[e.data.get("lead_id")].add(e.id)
        elif e.type in SLA_TYPES:
            sla[(e.data.get("assignment_id"), e.type)].add(e.id)
    report.seen["assigned"] = len(assigned)
    report.seen["sla"] = len(sla)
    report.lost += [f"assignment {a}: no {t.rsplit('.', 1)[1]}" for a, t in due - set(sla)]
    report.twice += [
        f"lead {k}: assigned {len(v)} times" for k, v in assigned.items() if len(v) > 1
    ]
    report.twice += [
        f"assignment {k[0]}: {k[1].rsplit('.', 1)[1]} {len(v)} times"
        for k, v in sla.items()
        if len(v) > 1
    ]


async def settle(
    cluster: Cluster, ledger: Ledger, *, timeout: float = 60.0
) -> tuple[Report, float]:
    """Reconcile until nothing is missing (or ``timeout``); return the report and the seconds."""
    started = time.monotonic()
    while True:
        report = await reconcile(cluster, ledger)
        waited = time.monotonic() - started
        if not (report.lost or report.wrong) or waited > timeout:
            await _on_topic(cluster, ledger, report)
            return report, waited
        await asyncio.sleep(1.0)


async def _on_topic(cluster: Cluster, ledger: Ledger, report: Report) -> None:
    """Where the accepted events are on the interactions topic (copies are allowed)."""
    copies = Counter(e.id for e in await read_all(cluster.bootstrap, cluster.topics.interactions))
    accepted = {i for ids in ledger.events.values() for i in ids}
    report.seen["on_topic"] = len(accepted & copies.keys())
    report.seen["topic_copies"] = sum(copies[i] - 1 for i in accepted if copies[i] > 1)
    report.lost = [
        f"{x} (not on the topic)" if x.startswith("event ") and x.split()[1] not in copies else x
        for x in report.lost
    ]
