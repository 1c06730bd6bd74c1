"""``make chaos``: every drill full size, a table of figures, saved to tests/chaos/results.md.

``python -m tests.chaos [drill ...] [--short]``; exits 1 if any drill lost or doubled anything.
Logs of every process go to a temporary directory, or to ``$CHAOS_WORKDIR`` (kept) if set.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from tests.chaos.drills import DRILLS, FULL, SHORT, Result, run_in_cluster

RESULTS = Path(__file__).with_name("results.md")
HEADER = "| drill | events | lost | twice | recovery s | notes |\n|---|---:|---:|---:|---:|---|"

LEGEND = (
    "events: interactions capture accepted (2xx); lost / twice: discrepancies found by the exact"
    " reconciliation (events not applied or applied twice, SQLs without or with two live"
    " assignments, SLA events missing or doubled); recovery s: from the end of the fault (and of"
    " the load) until the reconciliation held. `make chaos` (python -m tests.chaos) writes this"
    " file; one fresh PostgreSQL database, bundled broker and 1 capture (2 worker processes)"
    " + 2 scoring + 2 routing processes per drill."
)


async def main(names: list[str], sizes: dict[str, dict[str, object]]) -> list[Result]:
    results = []
    keep = os.environ.get("CHAOS_WORKDIR")
    with tempfile.TemporaryDirectory(prefix="leadflow-chaos-") as tmp:
        if keep:
            tmp = keep
        for name in names:
            started = time.monotonic()
            print(f"== {name} {sizes[name]}", flush=True)
            result = await run_in_cluster(Path(tmp), name, **sizes[name])
            print(
                f"   {'ok' if result.ok else 'FAILED'} in {time.monotonic() - started:.0f} s:"
                f" {result.explain()}",
                flush=True,
            )
            results.append(result)
    return results


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    sizes = SHORT if "--short" in sys.argv else FULL
    results = asyncio.run(main(args or list(DRILLS), sizes))
    table = "\n".join([HEADER, *(r.row() for r in results)])
    print("\n" + table)
    if "--short" not in sys.argv:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        RESULTS.write_text(f"# Chaos drills ({when})\n\n{table}\n\n{LEGEND}\n")
    sys.exit(0 if all(r.ok for r in results) else 1)
