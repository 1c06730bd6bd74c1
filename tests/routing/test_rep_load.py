"""Rep load counters (routing_0004): open and assigned-today counts kept with the rep rows.

Routing used to count every active and every assigned-today row of the assignments table at
each pick, under a lock on every rep; the counters must give the same figures that count did.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select, text

from services.routing import repository as repo
from services.routing.config import load_routing_config
from services.routing.domain.assignment import ACTIVE, Assignment, Owner, State
from services.routing.domain.business_time import local_day_start
from services.routing.tables import assignments
from shared.db import create_engine
from shared.events import utcnow
from tests.routing.helpers import config
from tests.routing.test_migrations import _alembic


def _assignment(i: int, owner: str, at: object) -> Assignment:
    return Assignment(
        id=f"a-{i}",
        lead_id=f"lead-{i}",
        lead_key=None,
        owner=Owner(owner, owner, f"{owner}@example.com", "emea"),
        team="emea",
        state=State.OPEN,
        policy="warm",
        warn_at=at,  # type: ignore[arg-type]
        due_at=at,  # type: ignore[arg-type]
        assigned_at=at,  # type: ignore[arg-type]
        reason="rule:emea",
        lead={"id": f"lead-{i}"},
        updated_at=at,  # type: ignore[arg-type]
    )


async def _scanned(conn: object, owner: str) -> int:
    q = select(func.count()).where(
        assignments.c.owner_id == owner, assignments.c.state.in_(list(ACTIVE))
    )
    return int((await conn.execute(q)).scalar_one())  # type: ignore[attr-defined]


async def test_counters_follow_every_state_change(db_url: str) -> None:
    cfg = load_routing_config(config())
    now = utcnow()
    engine = create_engine(db_url)
    try:
        async with engine.begin() as conn:
            await repo.ensure_rep_states(conn, cfg.reps, now)
            for i in range(6):
                await repo.insert_assignment(conn, _assignment(i, "anna" if i < 4 else "ben", now))
            # Leaving the active states (met, closed, reassigned) and moving within them.
            assert await repo.transition(conn, "a-0", from_={State.OPEN}, to=State.MET)
            assert await repo.transition(conn, "a-1", from_={State.OPEN}, to=State.BREACHED)
            assert await repo.transition(conn, "a-1", from_=ACTIVE, to=State.REASSIGNED)
            assert await repo.transition(conn, "a-1", from_={State.REASSIGNED}, to=State.OPEN)
            assert await repo.transition(conn, "a-4", from_=ACTIVE, to=State.CLOSED)
            # A lost race changes nothing, nor does a change without a state.
            assert not await repo.transition(conn, "a-4", from_=ACTIVE, to=State.CLOSED)
            assert await repo.transition(conn, "a-2", from_=ACTIVE, escalation_level=1)
            # Either state of a mixed set.
            assert await repo.transition(
                conn, "a-3", from_={State.OPEN, State.REASSIGNED}, to=State.CLOSED
            )
        async with engine.connect() as conn:
            unlocked = await repo.load_rep_states(conn, cfg, now, lock=False)
        async with engine.begin() as conn:
            locked = await repo.load_rep_states(conn, cfg, now, lock=True)
            folded = await repo.load_rep_states(conn, cfg, now, lock=True)
            scans = {r: await _scanned(conn, r) for r in ("anna", "ben", "carla")}
        assert scans == {"anna": 2, "ben": 1, "carla": 0}
        for states in (unlocked, locked, folded):
            assert {r: states[r].open_count for r in scans} == scans
            # Assigned today (all six, whatever became of them), counted once from the table.
            assert (states["anna"].today_count, states["ben"].today_count) == (4, 2)
    finally:
        await engine.dispose()


async def test_today_counter_counts_the_rep_day(db_url: str) -> None:
    cfg = load_routing_config(config())
    now = utcnow()
    start = local_day_start(now, cfg.reps["anna"].calendar.tz)
    engine = create_engine(db_url)
    try:
        async with engine.begin() as conn:
            await repo.ensure_rep_states(conn, cfg.reps, now)
            await repo.insert_assignment(conn, _assignment(1, "anna", start - timedelta(hours=1)))
            await repo.insert_assignment(conn, _assignment(2, "anna", now))
            assert (await repo.load_rep_states(conn, cfg, now))["anna"].today_count == 1
            await repo.record_pick(conn, {"anna": -1.0, "ben": 1.0}, "anna", start, 2, now)
            states = await repo.load_rep_states(conn, cfg, now)
            assert (states["anna"].today_count, states["anna"].credit) == (2, -1.0)
            # The next local day starts from zero without counting anything.
            tomorrow = now + timedelta(days=1)
            assert (await repo.load_rep_states(conn, cfg, tomorrow))["anna"].today_count == 0
    finally:
        await engine.dispose()


async def test_0004_backfills_open_counts(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_alembic, "downgrade", "routing_0003")
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO routing_rep_states (rep_id, paused, out_of_office, credit,"
                    " updated_at) VALUES ('anna', false, '[]', 0, CURRENT_TIMESTAMP)"
                )
            )
            for i, (owner, state) in enumerate(
                [("anna", "open"), ("anna", "breached"), ("anna", "met"), ("ben", "open")]
            ):
                await conn.execute(
                    text(
                        "INSERT INTO routing_assignments (id, lead_id, owner_id, owner, team,"
                        " state, policy, warn_at, due_at, breached, assigned_at, reason, lead,"
                        " escalation_level, updated_at) VALUES (:id, :id, :owner, '{}', 'emea',"
                        " :state, 'warm', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, false,"
                        " CURRENT_TIMESTAMP, 'r', '{}', 0, CURRENT_TIMESTAMP)"
                    ),
                    {"id": f"a-{i}", "owner": owner, "state": state},
                )
        async with engine.begin() as conn:
            await conn.run_sync(_alembic, "upgrade", "head")
        cfg = load_routing_config(config())
        async with engine.begin() as conn:
            states = await repo.load_rep_states(conn, cfg, utcnow())
        assert (states["anna"].open_count, states["ben"].open_count) == (2, 1)
    finally:
        await engine.dispose()
