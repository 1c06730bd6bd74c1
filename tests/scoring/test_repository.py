"""Repository contract: the same behaviour on PostgreSQL and SQLite (``db_url`` runs both)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.exc import IntegrityError

from services.scoring import queries, repository
from services.scoring.domain.model import Hit, Lead
from services.scoring.domain.privacy import scrub_interaction
from services.scoring.repository import LeadRepository
from shared.db import create_engine
from tests.scoring.helpers import T0


def _lead(n: int) -> Lead:
    lead = Lead(
        id=f"lead-{n:03d}",
        key=f"p{n}@x.io",
        created_at=T0 + timedelta(minutes=n),
        email=f"p{n}@x.io",
        emails=[f"p{n}@x.io"],
        stage="SQL" if n % 2 else "IQL",
    )
    lead.hits.append(Hit("r", "g", n, T0, f"e{n}"))
    lead.engagement = n
    return lead


async def test_bulk_write_load_list_and_paginate(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        async with engine.begin() as conn:
            repo = LeadRepository(conn)
            for n in range(1, 8):
                lead = _lead(n)
                repo.add(lead)
                repo.add_identity("email", lead.email or "", lead.id)
                repo.add_timeline(
                    lead.id,
                    T0,
                    "interaction",
                    "t",
                    f"e{n}",
                    {"contact": {"email": lead.email}, "intent": "contact"},
                )
            await repo.flush(T0)
        async with engine.begin() as conn:
            repo = LeadRepository(conn)
            found = await repo.find_identities([("email", "p3@x.io"), ("email", "nobody@x.io")])
            assert found == {("email", "p3@x.io"): "lead-003"}
            loaded = await repo.load(["lead-003", "missing"])
            assert list(loaded) == ["lead-003"]
            assert loaded["lead-003"].hits == [Hit("r", "g", 3, T0, "e3")]
            loaded["lead-003"].stage = "MQL"
            repo.touch(loaded["lead-003"])
            await repo.flush(T0)
        async with engine.connect() as conn:
            seen, cursor = [], None
            while True:
                page, cursor = await queries.list_leads(conn, limit=3, cursor=cursor)
                seen += [lead.id for lead in page]
                if cursor is None:
                    break
            assert seen == [f"lead-{n:03d}" for n in range(7, 0, -1)]
            sql, _ = await queries.list_leads(conn, stage="SQL")
            assert [lead.id for lead in sql] == ["lead-007", "lead-005", "lead-001"]
            by_email, _ = await queries.list_leads(conn, email="p3@x.io")
            assert [(lead.id, lead.stage) for lead in by_email] == [("lead-003", "MQL")]
            with pytest.raises(queries.BadCursor):
                await queries.list_leads(conn, cursor="bm90LWpzb24")
            items, nxt = await queries.lead_timeline(conn, "lead-003")
            assert [i["event_id"] for i in items] == ["e3"] and nxt is None
    finally:
        await engine.dispose()


async def test_same_identity_twice_is_an_integrity_error(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        async with engine.begin() as conn:
            repo = LeadRepository(conn)
            repo.add(_lead(1))
            repo.add_identity("email", "p1@x.io", "lead-001")
            await repo.flush(T0)
        with pytest.raises(IntegrityError):
            async with engine.begin() as conn:
                repo = LeadRepository(conn)
                repo.add(_lead(2))
                repo.add_identity("email", "p1@x.io", "lead-002")
                await repo.flush(T0)
    finally:
        await engine.dispose()


async def test_merge_repoints_and_erase_scrubs(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        async with engine.begin() as conn:
            repo = LeadRepository(conn)
            for n in (1, 2):
                repo.add(_lead(n))
                repo.add_identity("email", f"p{n}@x.io", f"lead-00{n}")
                repo.add_timeline(
                    f"lead-00{n}",
                    T0,
                    "interaction",
                    "t",
                    f"e{n}",
                    {"contact": {"email": f"p{n}@x.io"}, "intent": "contact"},
                )
            await repo.flush(T0)
        async with engine.begin() as conn:
            repo = LeadRepository(conn)
            await repo.load(["lead-001", "lead-002"])
            repo.remove("lead-002")
            repo.add_identity("merged", "lead-002", "lead-001")
            await repo.flush(T0, merges=[("lead-002", "lead-001")])
        async with engine.begin() as conn:
            assert (await queries.get_lead(conn, "lead-002")).id == "lead-001"  # type: ignore[union-attr]
            found = await LeadRepository(conn).find_identities([("email", "p2@x.io")])
            assert found == {("email", "p2@x.io"): "lead-001"}
            await repository.erase(conn, "lead-001", ["h1"], T0, scrub_interaction)
        async with engine.connect() as conn:
            items, _ = await queries.lead_timeline(conn, "lead-001")
            assert len(items) == 2 and "@x.io" not in str(items)
            assert all(i["data"]["intent"] == "contact" for i in items)
            assert await repository.erased_among(conn, ["h1", "h2"]) == {"h1"}
            assert await LeadRepository(conn).find_identities([("email", "p1@x.io")]) == {}
    finally:
        await engine.dispose()
