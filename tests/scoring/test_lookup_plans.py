"""Scoring's lookups by a list of keys probe the primary key in any plan PostgreSQL keeps.

A service's first batches prepare these statements while the tables are young; a plan kept
from then must not read the whole table once it holds a million leads.
"""

from __future__ import annotations

import pytest

from services.scoring import repository
from services.scoring.tables import identities, leads
from shared.db import create_engine
from tests.support import generic_plan_scans

LOOKUPS = [
    ("lead states", repository._SELECT, ["text[]"], ["'{a,b}'"], leads.name),
    ("lead states, locked", repository._SELECT_LOCKED, ["text[]"], ["'{a,b}'"], leads.name),
    (
        "identities",
        repository._FIND_IDENTITIES,
        ["text[]", "text[]"],
        ["'{email,anon}'", "'{a@b.c,x}'"],
        identities.name,
    ),
]


@pytest.mark.parametrize(
    ("sql", "types", "args", "table"),
    [case[1:] for case in LOOKUPS],
    ids=[case[0] for case in LOOKUPS],
)
async def test_lookup_probes_the_index_in_a_plan_made_on_empty_tables(
    pg_db_url: str, sql: str, types: list[str], args: list[str], table: str
) -> None:
    engine = create_engine(pg_db_url)
    try:
        assert table not in await generic_plan_scans(engine, sql, types, args)
    finally:
        await engine.dispose()
