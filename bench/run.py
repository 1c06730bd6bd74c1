"""Every performance figure of Leadflow, each beside its baseline, measured in one run.

    make bench                  # full sizes (about 10 minutes)
    BENCH_QUICK=1 make bench    # smaller sizes, under 4 minutes
    python -m bench.run --only capture,speed_to_lead

Prints a table and writes ``bench/results/latest.json`` (a list of
``{"name", "value", "unit", "baseline", "ratio"}``, sometimes with a ``note``) and
``bench/results/machine.json`` (where it ran). docs/benchmarks.md explains each figure;
``python -m bench.table`` renders the README's table from the file.

A module that cannot be imported or fails is recorded with ``value: null`` and the reason in
its note, and the run goes on.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench.common import cpu_model, say
from bench.table import GOALS, console_table

RESULTS = Path(__file__).resolve().parent / "results"

#: Module, and the figures it reports (recorded as missing when the module fails).
MODULES: list[tuple[str, tuple[str, ...]]] = [
    (
        "capture",
        (
            "capture_single_vs_echo",
            "capture_single_vs_naive_db_insert",
            "capture_batch_vs_raw_produce",
        ),
    ),
    ("scoring", ("scoring_vs_db_upsert_floor",)),
    ("speed_to_lead", ("speed_to_lead_p50_ms", "speed_to_lead_p99_ms")),
    (
        "sla_timers",
        ("sla_timer_lateness_p50_ms", "sla_timer_lateness_p99_ms", "sla_timer_double_fires"),
    ),
    ("rss", ("max_service_rss_mb",)),
]


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _missing(names: tuple[str, ...], why: str) -> list[dict[str, Any]]:
    return [
        {"name": n, "value": None, "unit": "", "baseline": None, "ratio": None, "note": why}
        for n in names
    ]


def run_module(
    module: str, names: tuple[str, ...], quick: bool, smoke: bool
) -> list[dict[str, Any]]:
    try:
        mod = importlib.import_module(f"bench.{module}")
    except ImportError as exc:
        return _missing(names, f"bench/{module}.py not importable: {exc}")
    runner = getattr(mod, "run", None)
    if runner is None:
        return _missing(names, f"bench/{module}.py has no run(quick)")
    began = time.monotonic()
    say(f"{module}: running")
    try:
        if "smoke" in inspect.signature(runner).parameters:
            rows = list(runner(quick, smoke=smoke))
        else:
            rows = list(runner(quick))
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        return _missing(names, f"failed: {type(exc).__name__}: {exc}"[:300])
    say(f"{module}: done in {time.monotonic() - began:.0f}s")
    got = {r.get("name") for r in rows}
    return rows + _missing(tuple(n for n in names if n not in got), f"bench/{module}.py omitted it")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", default=bool(os.environ.get("BENCH_QUICK")))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (the test suite's check)")
    parser.add_argument("--only", default="", help="comma-separated modules")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--merge",
        action="store_true",
        help="with --only: replace those modules' figures in the existing latest.json",
    )
    args = parser.parse_args(argv)
    only = {m.strip() for m in args.only.split(",") if m.strip()}
    unknown = only - {m for m, _ in MODULES}
    if unknown:
        parser.error(f"unknown module(s): {', '.join(sorted(unknown))}")
    load_before = list(os.getloadavg())
    rows: list[dict[str, Any]] = []
    for module, names in MODULES:
        if only and module not in only:
            continue
        rows.extend(run_module(module, names, args.quick or args.smoke, args.smoke))
    args.out.mkdir(parents=True, exist_ok=True)
    latest = args.out / "latest.json"
    if args.merge and latest.exists():
        fresh = {r["name"]: r for r in rows}
        old = json.loads(latest.read_text())
        merged = [fresh.pop(r["name"], r) for r in old]
        rows = merged + list(fresh.values())
    latest.write_text(json.dumps(rows, indent=2) + "\n")
    info = machine()
    info["mode"] = "smoke" if args.smoke else "quick" if args.quick else "full"
    info["load_average_before"] = load_before
    info["load_average_after"] = list(os.getloadavg())
    (args.out / "machine.json").write_text(json.dumps(info, indent=2) + "\n")
    print(console_table(rows, GOALS))
    print(
        f"\n{info['cpus']} CPUs ({info['cpu_model']}), Python {info['python']}, "
        f"{info['mode']} run; written to {args.out / 'latest.json'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
