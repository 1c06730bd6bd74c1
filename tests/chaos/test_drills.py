"""Short drills in ``make test``: each fault under load ends with 0 lost, 0 twice.

``make test`` runs the three that guard the headline promises (a killed process, a database
outage, poison records) to keep the suite within its time budget; ``make chaos`` runs every
drill full size (``python -m tests.chaos``), and ``python -m tests.chaos --short`` every drill
at these sizes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.drills import DRILLS, SHORT, run_in_cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


IN_MAKE_TEST = ("kills", "db_cut", "poison")
assert set(IN_MAKE_TEST) <= set(DRILLS)


@pytest.mark.parametrize("drill", IN_MAKE_TEST)
async def test_drill(drill: str, tmp_path: Path) -> None:
    result = await run_in_cluster(tmp_path, drill, **SHORT[drill])
    assert result.ok, result.explain()
