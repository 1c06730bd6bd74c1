"""The short drills, part of ``make test``: each fault under load ends with 0 lost, 0 twice.

``make chaos`` runs the same drills full size (``python -m tests.chaos``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.drills import DRILLS, SHORT, run_in_cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.mark.parametrize("drill", list(DRILLS))
async def test_drill(drill: str, tmp_path: Path) -> None:
    result = await run_in_cluster(tmp_path, drill, **SHORT[drill])
    assert result.ok, result.explain()
