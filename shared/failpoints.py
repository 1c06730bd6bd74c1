"""Named crash points for kill-and-restart tests.

``LEADFLOW_FAILPOINTS=scoring.after_db_commit`` makes the process die (``os._exit``, no cleanup,
as a SIGKILL would) when it reaches that point. Unset, a failpoint costs one set lookup.
"""

from __future__ import annotations

import os
import sys

_ACTIVE = frozenset(
    p.strip() for p in os.environ.get("LEADFLOW_FAILPOINTS", "").split(",") if p.strip()
)


def failpoint(name: str) -> None:
    """Die here if this failpoint is armed."""
    if name in _ACTIVE:
        sys.stderr.write(f"failpoint {name}: exiting\n")
        sys.stderr.flush()
        os._exit(137)
