"""Routing's database access: SQLAlchemy Core on an AsyncConnection (PostgreSQL and SQLite).

Every function runs inside the caller's transaction. State changes that race (a timer firing
while a rep touches the lead, two replicas firing one timer) are conditional UPDATEs whose row
count says who won, so each transition happens exactly once.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, delete, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.routing.domain.assignment import ACTIVE, Assignment, Owner, State
from services.routing.domain.business_time import Calendar, local_day_start, make_calendar
from services.routing.domain.model import RepState, RoutingConfig
from services.routing.tables import (
    assignments,
    rep_load_deltas,
    rep_states,
    tombstones,
    unassigned,
)
from shared.db import insert_for, is_sqlite
from shared.events import parse_time

#: A database row as a plain dict (queue rows, rep states, report rows, timers, deliveries).
Row = dict[str, Any]
log = logging.getLogger(__name__)


def rows_of(result: Any) -> list[Row]:
    """The rows of a query result as plain dicts."""
    return [dict(r._mapping) for r in result]


# ---- reps -------------------------------------------------------------------------------------


async def ensure_rep_states(conn: AsyncConnection, rep_ids: Iterable[str], now: datetime) -> None:
    """Create the run-time state row of every configured rep that has none yet."""
    rows: list[Row] = [
        {
            "rep_id": r,
            "paused": False,
            "out_of_office": [],
            "max_open": None,
            "max_per_day": None,
            "credit": 0.0,
            "updated_at": now,
            "open_count": 0,
            "today_count": 0,
            "today_start": None,
        }
        for r in rep_ids
    ]
    if rows:
        await conn.execute(
            insert_for(conn)(rep_states).on_conflict_do_nothing(index_elements=["rep_id"]), rows
        )


async def rep_state_rows(
    conn: AsyncConnection, rep_ids: Sequence[str] | None = None, *, lock: bool = False
) -> dict[str, Row]:
    """Raw rep state rows by id (locked FOR UPDATE on PostgreSQL when ``lock``)."""
    q = select(rep_states).order_by(rep_states.c.rep_id)
    if rep_ids is not None:
        q = q.where(rep_states.c.rep_id.in_(list(rep_ids)))
    if lock and not is_sqlite(conn):
        q = q.with_for_update()
    return {r["rep_id"]: r for r in rows_of(await conn.execute(q))}


def working_hours_calendar(spec: Any) -> Calendar | None:
    """The calendar of a stored working-hours override (None: none, or unreadable)."""
    if not isinstance(spec, Mapping):
        return None
    try:
        return make_calendar(
            spec["timezone"],
            spec["hours"],
            spec.get("holidays") or (),
            holidays_country=spec.get("holidays_country"),
            holidays_subdivision=spec.get("holidays_subdivision"),
        )
    except (KeyError, TypeError, ValueError):
        log.warning("ignoring unreadable working hours override %r", spec)
        return None


def _ooo(raw: Any) -> list[tuple[datetime, datetime]]:
    return [(parse_time(x["from"]), parse_time(x["to"])) for x in raw or []]


async def _fold_load_deltas(conn: AsyncConnection, rep_ids: Sequence[str]) -> dict[str, int]:
    """Move the reps' pending +1/-1 deltas into their ``open_count`` (caller holds their rows);
    the change per rep."""
    res = await conn.execute(
        delete(rep_load_deltas)
        .where(rep_load_deltas.c.rep_id.in_(list(rep_ids)))
        .returning(rep_load_deltas.c.rep_id, rep_load_deltas.c.delta)
    )
    folded: dict[str, int] = {}
    for rid, delta in res.all():
        folded[rid] = folded.get(rid, 0) + int(delta)
    changed = [{"rid": rid, "d": d} for rid, d in folded.items() if d]
    if changed:
        await conn.execute(
            update(rep_states)
            .where(rep_states.c.rep_id == bindparam("rid"))
            .values(open_count=rep_states.c.open_count + bindparam("d")),
            changed,
        )
    return folded


async def _pending_load_deltas(conn: AsyncConnection, rep_ids: Sequence[str]) -> dict[str, int]:
    q = (
        select(rep_load_deltas.c.rep_id, func.sum(rep_load_deltas.c.delta))
        .where(rep_load_deltas.c.rep_id.in_(list(rep_ids)))
        .group_by(rep_load_deltas.c.rep_id)
    )
    return {k: int(v or 0) for k, v in (await conn.execute(q)).all()}


async def _count_today(conn: AsyncConnection, starts: Mapping[str, datetime]) -> dict[str, int]:
    """Assignments made since each rep's day start, counted from the table (once per rep, when
    its counter is not known yet): one grouped count per distinct day start."""
    by_start: dict[datetime, list[str]] = {}
    for rid, start in starts.items():
        by_start.setdefault(start, []).append(rid)
    today: dict[str, int] = {}
    for start, rids in by_start.items():
        q = (
            select(assignments.c.owner_id, func.count())
            .where(assignments.c.assigned_at >= start, assignments.c.owner_id.in_(rids))
            .group_by(assignments.c.owner_id)
        )
        today.update({k: int(v) for k, v in (await conn.execute(q)).all()})
    return today


async def load_rep_states(
    conn: AsyncConnection,
    config: RoutingConfig,
    now: datetime,
    *,
    lock: bool = True,
    only: Collection[str] | None = None,
) -> dict[str, RepState]:
    """Every configured rep's state (``only`` those reps, if given) with current load (open
    and assigned-today counts).

    The load comes from the counters kept on the rep rows, not from counting assignments: with
    ``lock`` the rows are locked (in rep id order, so lockers never deadlock) and the pending
    open-count deltas folded in; without, the deltas are only added up. A routing choice needs
    only the reps of the lead's candidate teams (``rules.candidate_reps``): locking just those
    lets choices for other teams go ahead meanwhile.
    """
    ids = [rid for rid in config.reps if only is None or rid in only]
    raw = await rep_state_rows(conn, ids, lock=lock)
    if lock and len(raw) < len(ids):  # a rep new to the config: its row first, then lock
        await ensure_rep_states(conn, [rid for rid in ids if rid not in raw], now)
        raw = await rep_state_rows(conn, ids, lock=lock)
    present = [rid for rid in ids if rid in raw]
    if lock:
        deltas = await _fold_load_deltas(conn, present)
    else:
        deltas = await _pending_load_deltas(conn, present)
    starts = {rid: local_day_start(now, config.reps[rid].calendar.tz) for rid in ids}
    # A counter of another day counts 0 today; one never set (or ahead of the clock) is counted.
    unknown = {
        rid: starts[rid]
        for rid, row in raw.items()
        if rid in starts and (row.get("today_start") is None or row["today_start"] > starts[rid])
    }
    counted = await _count_today(conn, unknown) if unknown else {}
    if lock and unknown:
        await conn.execute(
            update(rep_states)
            .where(rep_states.c.rep_id == bindparam("rid"))
            .values(today_count=bindparam("n"), today_start=bindparam("start")),
            [{"rid": rid, "n": counted.get(rid, 0), "start": unknown[rid]} for rid in unknown],
        )
    out = {}
    for rid in ids:
        row = raw.get(rid) or {}
        if rid in unknown:
            today = counted.get(rid, 0)
        elif row.get("today_start") == starts[rid]:
            today = int(row.get("today_count") or 0)
        else:
            today = 0
        out[rid] = RepState(
            rep_id=rid,
            paused=bool(row.get("paused", False)),
            out_of_office=_ooo(row.get("out_of_office")),
            max_open=row.get("max_open"),
            max_per_day=row.get("max_per_day"),
            credit=float(row.get("credit") or 0.0),
            weight=row.get("weight"),
            calendar=working_hours_calendar(row.get("working_hours")),
            working_hours=row.get("working_hours"),
            open_count=int(row.get("open_count") or 0) + deltas.get(rid, 0),
            today_count=today,
        )
    return out


async def record_pick(
    conn: AsyncConnection,
    credits: Mapping[str, float],
    rep_id: str,
    today_start: datetime,
    today_count: int,
    now: datetime,
) -> None:
    """Persist a pick (caller holds the rep rows): the round-robin credits, and the chosen
    rep's assigned-today counter (``today_count`` since ``today_start``, this one included)."""
    picked = {"rid": rep_id, "c": credits.get(rep_id), "n": today_count, "s": today_start}
    others = [{"rid": rid, "c": c} for rid, c in credits.items() if rid != rep_id]
    values: dict[str, Any] = {"today_count": bindparam("n"), "today_start": bindparam("s")}
    if picked["c"] is not None:
        values["credit"] = bindparam("c")
    await conn.execute(
        update(rep_states)
        .where(rep_states.c.rep_id == bindparam("rid"))
        .values(updated_at=now, **values),
        [picked],
    )
    if others:
        await conn.execute(
            update(rep_states)
            .where(rep_states.c.rep_id == bindparam("rid"))
            .values(credit=bindparam("c"), updated_at=now),
            others,
        )


async def store_rep_loads(
    conn: AsyncConnection,
    states: Mapping[str, RepState],
    config: RoutingConfig,
    now: datetime,
) -> None:
    """Write reps' round-robin credits and load counters as a batch of picks left them in
    memory, in one statement (caller holds their rows since :func:`load_rep_states` folded
    their deltas, so ``open_count`` is exact; deltas others appended meanwhile stay pending).
    ``today_count`` counts since the rep's local midnight, as :func:`load_rep_states` did."""
    rows = [
        {
            "rid": rid,
            "c": st.credit,
            "o": st.open_count,
            "n": st.today_count,
            "s": local_day_start(now, config.reps[rid].calendar.tz),
        }
        for rid, st in sorted(states.items())
        if rid in config.reps
    ]
    if rows:
        await conn.execute(
            update(rep_states)
            .where(rep_states.c.rep_id == bindparam("rid"))
            .values(
                credit=bindparam("c"),
                open_count=bindparam("o"),
                today_count=bindparam("n"),
                today_start=bindparam("s"),
                updated_at=now,
            ),
            rows,
        )


async def add_load(conn: AsyncConnection, rep_id: str, delta: int) -> None:
    """An assignment of ``rep_id`` entered (+1) or left (-1) the active states."""
    await conn.execute(rep_load_deltas.insert().values(rep_id=rep_id, delta=delta))


async def add_loads(conn: AsyncConnection, deltas: Sequence[tuple[str, int]]) -> None:
    """Several assignments entered (+1) or left (-1) the active states: ``(rep_id, delta)``."""
    if deltas:
        await conn.execute(
            rep_load_deltas.insert(), [{"rep_id": rid, "delta": d} for rid, d in deltas]
        )


async def update_rep_state(conn: AsyncConnection, rep_id: str, values: Mapping[str, Any]) -> None:
    """Change a rep's pause, out-of-office ranges, capacity, weight or working hours."""
    await conn.execute(update(rep_states).where(rep_states.c.rep_id == rep_id).values(**values))


# ---- assignments ------------------------------------------------------------------------------


def _assignment(row: Mapping[str, Any]) -> Assignment:
    return Assignment(
        id=row["id"],
        lead_id=row["lead_id"],
        lead_key=row["lead_key"],
        owner=Owner.from_data(row["owner"]),
        team=row["team"],
        state=State(row["state"]),
        policy=row["policy"],
        warn_at=row["warn_at"],
        due_at=row["due_at"],
        assigned_at=row["assigned_at"],
        reason=row["reason"],
        lead=row["lead"] or {},
        met_at=row["met_at"],
        breached=bool(row["breached"]),
        response_seconds=row["response_seconds"],
        business_seconds=row["business_seconds"],
        escalation_level=int(row["escalation_level"] or 0),
        previous_assignment_id=row["previous_assignment_id"],
        updated_at=row["updated_at"],
    )


async def _assignments(conn: AsyncConnection, query: Any) -> list[Assignment]:
    return [_assignment(r) for r in rows_of(await conn.execute(query))]


async def insert_assignment(conn: AsyncConnection, a: Assignment) -> None:
    """Store a new assignment."""
    await conn.execute(
        assignments.insert().values(
            id=a.id,
            lead_id=a.lead_id,
            lead_key=a.lead_key,
            owner_id=a.owner.id,
            owner=a.owner.to_data(),
            team=a.team,
            state=a.state,
            policy=a.policy,
            warn_at=a.warn_at,
            due_at=a.due_at,
            met_at=a.met_at,
            breached=a.breached,
            response_seconds=a.response_seconds,
            business_seconds=a.business_seconds,
            assigned_at=a.assigned_at,
            reason=a.reason,
            lead=dict(a.lead),
            escalation_level=a.escalation_level,
            previous_assignment_id=a.previous_assignment_id,
            updated_at=a.updated_at or a.assigned_at,
        )
    )
    if a.state in ACTIVE:
        await add_load(conn, a.owner.id, +1)


async def insert_assignments(
    conn: AsyncConnection, made: Sequence[Assignment], *, count_load: bool = True
) -> None:
    """Store new assignments (one statement for all); without ``count_load`` the caller
    writes their owners' open counts itself (:func:`store_rep_loads`)."""
    if not made:
        return
    await conn.execute(
        assignments.insert(),
        [
            {
                "id": a.id,
                "lead_id": a.lead_id,
                "lead_key": a.lead_key,
                "owner_id": a.owner.id,
                "owner": a.owner.to_data(),
                "team": a.team,
                "state": a.state,
                "policy": a.policy,
                "warn_at": a.warn_at,
                "due_at": a.due_at,
                "met_at": a.met_at,
                "breached": a.breached,
                "response_seconds": a.response_seconds,
                "business_seconds": a.business_seconds,
                "assigned_at": a.assigned_at,
                "reason": a.reason,
                "lead": dict(a.lead),
                "escalation_level": a.escalation_level,
                "previous_assignment_id": a.previous_assignment_id,
                "updated_at": a.updated_at or a.assigned_at,
            }
            for a in made
        ],
    )
    if count_load:
        await add_loads(conn, [(a.owner.id, +1) for a in made if a.state in ACTIVE])


async def get_assignments(
    conn: AsyncConnection, assignment_ids: Collection[str], *, lock: bool = False
) -> dict[str, Assignment]:
    """Assignments by id (locked FOR UPDATE in id order on PostgreSQL when ``lock``, so two
    lockers of overlapping sets never deadlock)."""
    if not assignment_ids:
        return {}
    q = (
        select(assignments)
        .where(assignments.c.id.in_(sorted(assignment_ids)))
        .order_by(assignments.c.id)
    )
    if lock and not is_sqlite(conn):
        q = q.with_for_update()
    return {a.id: a for a in await _assignments(conn, q)}


async def get_assignment(
    conn: AsyncConnection, assignment_id: str, *, lock: bool = False
) -> Assignment | None:
    """One assignment by id."""
    q = select(assignments).where(assignments.c.id == assignment_id)
    if lock and not is_sqlite(conn):
        q = q.with_for_update()
    found = await _assignments(conn, q)
    return found[0] if found else None


async def active_assignment(conn: AsyncConnection, lead_id: str) -> Assignment | None:
    """The lead's open or breached assignment, if any."""
    found = await _assignments(
        conn,
        select(assignments).where(
            assignments.c.lead_id == lead_id, assignments.c.state.in_(list(ACTIVE))
        ),
    )
    return found[0] if found else None


async def lead_known(conn: AsyncConnection, lead_id: str) -> bool:
    """Whether the lead was ever assigned or queued (a repeated qualified then does nothing)."""
    a = await conn.execute(
        select(assignments.c.id).where(assignments.c.lead_id == lead_id).limit(1)
    )
    if a.first() is not None:
        return True
    u = await conn.execute(select(unassigned.c.lead_id).where(unassigned.c.lead_id == lead_id))
    return u.first() is not None


async def scrub_lead(conn: AsyncConnection, lead_id: str) -> None:
    """Erasure: keep only the lead id in every stored snapshot of the lead."""
    await conn.execute(
        update(assignments)
        .where(assignments.c.lead_id == lead_id)
        .values(lead={"id": lead_id}, lead_key=None)
    )


async def repoint_assignment(
    conn: AsyncConnection, assignment_id: str, lead_id: str, lead: Mapping[str, Any], now: datetime
) -> None:
    """A merge: the assignment now belongs to the surviving lead (same owner, same clock)."""
    await conn.execute(
        update(assignments)
        .where(assignments.c.id == assignment_id)
        .values(lead_id=lead_id, lead_key=lead.get("key"), lead=dict(lead), updated_at=now)
    )


# ---- tombstones: erased and merged-away leads -------------------------------------------------

#: How long a chain of merges is followed (a cycle would be a bug upstream; stop anyway).
_MAX_HOPS = 20


async def add_tombstone(
    conn: AsyncConnection, lead_id: str, kind: str, now: datetime, into: str | None = None
) -> None:
    """Remember that ``lead_id`` was erased or merged ``into`` another lead.

    An erasure wins over an earlier merge record; a merge never overwrites an erasure.
    """
    ins = insert_for(conn)(tombstones).values(
        lead_id=lead_id, kind=kind, into_id=into, created_at=now
    )
    if kind == "erased":
        stmt = ins.on_conflict_do_update(
            index_elements=["lead_id"], set_={"kind": "erased", "into_id": None}
        )
    else:
        stmt = ins.on_conflict_do_nothing(index_elements=["lead_id"])
    await conn.execute(stmt)


#: Namespace of routing's per-person advisory locks (the two-key form, apart from other locks).
_PERSON_LOCKS = 0x4C46


async def lock_person(conn: AsyncConnection, lead_id: str) -> None:
    """Serialise, until commit, everything that decides whether this lead has a live assignment.

    ``lead.qualified`` of a merged-away lead and the ``lead.merged`` that retires it travel on
    different partitions, so two replicas can handle them at the same moment: each would see
    neither the other's tombstone nor its assignment, and one person would end up with two
    live assignments. Handlers lock a merged-away id before its survivor, in that order
    everywhere, so the locks follow merges and never form a cycle. SQLite already serialises
    every write transaction.
    """
    if not is_sqlite(conn):
        await conn.execute(
            select(func.pg_advisory_xact_lock(_PERSON_LOCKS, func.hashtext(lead_id)))
        )


async def resolve_lead(conn: AsyncConnection, lead_id: str) -> tuple[str, bool]:
    """The lead ``lead_id`` lives on as (following merges), and whether that lead was erased."""
    seen: set[str] = set()
    current = lead_id
    while current not in seen and len(seen) < _MAX_HOPS:
        seen.add(current)
        row = (
            await conn.execute(
                select(tombstones.c.kind, tombstones.c.into_id).where(
                    tombstones.c.lead_id == current
                )
            )
        ).first()
        if row is None:
            return current, False
        if row.kind == "erased":
            return current, True
        if not row.into_id:
            return current, False
        current = row.into_id
    return current, False


async def resolve_known(conn: AsyncConnection, lead_id: str) -> tuple[str, bool, bool | None]:
    """:func:`resolve_lead`, and :func:`lead_known` of ``lead_id`` when it lives on as itself
    (None when it lives on as another lead, which the caller locks before asking): one read
    for a lead without a tombstone, the common case."""
    known = or_(
        exists().where(assignments.c.lead_id == lead_id),
        exists().where(unassigned.c.lead_id == lead_id),
    )
    tomb = tombstones.c.lead_id == lead_id
    kind, into, is_known = (
        await conn.execute(
            select(
                select(tombstones.c.kind).where(tomb).scalar_subquery(),
                select(tombstones.c.into_id).where(tomb).scalar_subquery(),
                known,
            )
        )
    ).one()
    if kind == "erased":
        return lead_id, True, bool(is_known)
    if kind is None or not into:
        return lead_id, False, bool(is_known)
    survivor, erased = await resolve_lead(conn, lead_id)
    return survivor, erased, None


async def merged_into(conn: AsyncConnection, lead_id: str) -> list[str]:
    """Every lead id merged, directly or through others, into ``lead_id``."""
    out: list[str] = []
    frontier = [lead_id]
    while frontier and len(out) < 10_000:
        rows = await conn.execute(
            select(tombstones.c.lead_id).where(
                tombstones.c.kind == "merged", tombstones.c.into_id.in_(frontier)
            )
        )
        frontier = [r[0] for r in rows if r[0] not in out and r[0] != lead_id]
        out.extend(frontier)
    return out


async def previous_owners(conn: AsyncConnection, lead_id: str) -> list[str]:
    """Every rep the lead was assigned to so far."""
    rows = await conn.execute(
        select(assignments.c.owner_id).where(assignments.c.lead_id == lead_id)
    )
    return [r[0] for r in rows]


async def previous_owners_of(
    conn: AsyncConnection, lead_ids: Collection[str]
) -> dict[str, list[str]]:
    """Every rep each lead was assigned to so far (one query for all)."""
    out: dict[str, list[str]] = {lid: [] for lid in lead_ids}
    if lead_ids:
        rows = await conn.execute(
            select(assignments.c.lead_id, assignments.c.owner_id).where(
                assignments.c.lead_id.in_(sorted(lead_ids))
            )
        )
        for lid, owner in rows:
            out.setdefault(lid, []).append(owner)
    return out


async def transition_many(
    conn: AsyncConnection,
    assignment_ids: Collection[str],
    *,
    from_: State,
    to: State,
    **values: Any,
) -> set[str]:
    """:func:`transition` for many assignments at once (all from one state to another, the
    same ``values`` written): the ids changed. Entering or leaving the active states moves
    their owners' open counts."""
    if not assignment_ids:
        return set()
    res = await conn.execute(
        update(assignments)
        .where(assignments.c.id.in_(sorted(assignment_ids)), assignments.c.state == from_)
        .values(state=to, **values)
        .returning(assignments.c.id, assignments.c.owner_id)
    )
    changed = res.all()
    delta = int(to in ACTIVE) - int(from_ in ACTIVE)
    if delta:
        await add_loads(conn, [(owner, delta) for _, owner in changed])
    return {aid for aid, _ in changed}


async def transition(
    conn: AsyncConnection,
    assignment_id: str,
    *,
    from_: Collection[State],
    to: State | None = None,
    **values: Any,
) -> bool:
    """Change an assignment only if it is still in one of ``from_`` (moving it ``to`` another
    state, if given, and writing ``values``); True if it was, so of two racing writers only
    one wins. Entering or leaving the active states moves the owner's open count."""
    if to is not None:
        values["state"] = to
    stmt = (
        update(assignments)
        .where(assignments.c.id == assignment_id, assignments.c.state.in_(list(from_)))
        .values(**values)
    )
    new_state = values.get("state")
    if new_state is None:
        res = await conn.execute(stmt)
        return bool(res.rowcount)
    was_active = {State(s) in ACTIVE for s in from_}
    if not was_active:
        return False
    if len(was_active) > 1:  # mixed: which one it is in decides the delta
        for state in from_:
            if await transition(conn, assignment_id, from_={state}, **values):
                return True
        return False
    delta = int(State(new_state) in ACTIVE) - int(was_active.pop())
    if not delta:
        res = await conn.execute(stmt)
        return bool(res.rowcount)
    owner = (await conn.execute(stmt.returning(assignments.c.owner_id))).scalar_one_or_none()
    if owner is None:
        return False
    await add_load(conn, owner, delta)
    return True


async def list_assignments(
    conn: AsyncConnection,
    *,
    owner: str | None,
    state: State | None,
    lead_id: str | None,
    limit: int,
    after: tuple[datetime, str] | None,
) -> list[Assignment]:
    """Assignments, newest first, keyset-paginated on (assigned_at, id)."""
    q = select(assignments).order_by(assignments.c.assigned_at.desc(), assignments.c.id.desc())
    if owner:
        q = q.where(assignments.c.owner_id == owner)
    if state:
        q = q.where(assignments.c.state == state)
    if lead_id:
        q = q.where(assignments.c.lead_id == lead_id)
    if after:
        at, aid = after
        q = q.where(
            or_(
                assignments.c.assigned_at < at,
                and_(assignments.c.assigned_at == at, assignments.c.id < aid),
            )
        )
    return await _assignments(conn, q.limit(limit))


async def report_rows(conn: AsyncConnection, start: datetime, end: datetime) -> list[Row]:
    """Assignments made in [start, end) for the SLA report."""
    return rows_of(
        await conn.execute(
            select(
                assignments.c.team,
                assignments.c.owner_id,
                assignments.c.state,
                assignments.c.breached,
                assignments.c.response_seconds,
                assignments.c.business_seconds,
            ).where(assignments.c.assigned_at >= start, assignments.c.assigned_at < end)
        )
    )


# ---- unassigned and queues --------------------------------------------------------------------


async def queue_lead(conn: AsyncConnection, row: Row) -> bool:
    """Put a lead in a queue (unassigned or escalation); False if it is queued already."""
    res = await conn.execute(
        insert_for(conn)(unassigned)
        .on_conflict_do_nothing(index_elements=["lead_id"])
        .values(**row)
    )
    return bool(res.rowcount)


async def queued(conn: AsyncConnection, queue: str | None = None, limit: int = 100) -> list[Row]:
    """Queued leads, oldest first."""
    q = select(unassigned).order_by(unassigned.c.created_at, unassigned.c.lead_id).limit(limit)
    if queue:
        q = q.where(unassigned.c.queue == queue)
    return rows_of(await conn.execute(q))


async def queued_lead(conn: AsyncConnection, lead_id: str) -> Row | None:
    """The lead's queue row, if it is queued."""
    rows = rows_of(await conn.execute(select(unassigned).where(unassigned.c.lead_id == lead_id)))
    return rows[0] if rows else None


async def take_from_queue_row(conn: AsyncConnection, lead_id: str) -> Row | None:
    """Remove a lead from its queue and return its row (None if it was not queued)."""
    row = await queued_lead(conn, lead_id)
    if row is not None and not await take_from_queue(conn, lead_id):
        return None  # someone else took it meanwhile
    return row


async def take_from_queue(conn: AsyncConnection, lead_id: str) -> bool:
    """Remove a lead from its queue; True if this caller removed it."""
    res = await conn.execute(delete(unassigned).where(unassigned.c.lead_id == lead_id))
    return bool(res.rowcount)
