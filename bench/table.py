"""The benchmark results as tables: ``python -m bench.table`` prints the markdown of every
figure in ``bench/results/latest.json`` (with ``machine.json``); ``--readme`` only the figures
the README shows.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

#: The goals of issue 11: (figure, "ratio"/"value", comparison, bound).
GOALS: dict[str, tuple[str, str, float]] = {
    "capture_single_vs_echo": ("ratio", ">=", 0.7),
    "capture_single_vs_naive_db_insert": ("ratio", ">=", 1.5),
    "capture_batch_vs_raw_produce": ("ratio", ">=", 0.6),
    "scoring_vs_db_upsert_floor": ("ratio", ">=", 0.2),
    "speed_to_lead_p99_ms": ("value", "<=", 150.0),
    "sla_timer_lateness_p99_ms": ("value", "<=", 250.0),
    "sla_timer_double_fires": ("value", "==", 0.0),
    "max_service_rss_mb": ("value", "<=", 200.0),
}


#: The figures issue 11 names: the README shows these (docs/benchmarks.md shows every figure).
README_FIGURES = (
    "capture_single_vs_echo",
    "capture_single_vs_naive_db_insert",
    "capture_batch_vs_raw_produce",
    "scoring_vs_db_upsert_floor",
    "speed_to_lead_p50_ms",
    "speed_to_lead_p99_ms",
    "sla_timer_lateness_p50_ms",
    "sla_timer_lateness_p99_ms",
    "sla_timer_double_fires",
    "max_service_rss_mb",
)


def goal_text(name: str, goals: dict[str, tuple[str, str, float]] = GOALS) -> str:
    if name not in goals:
        return ""
    what, op, bound = goals[name]
    return f"{what} {op} {bound:g}"


def met(row: dict[str, Any], goals: dict[str, tuple[str, str, float]] = GOALS) -> str:
    """ "yes", "no", or "" (no goal, or no figure)."""
    if row["name"] not in goals:
        return ""
    what, op, bound = goals[row["name"]]
    value = row.get(what)
    if value is None:
        return "no figure"
    ok = {">=": value >= bound, "<=": value <= bound, "==": value == bound}[op]
    return "yes" if ok else "no"


def _load(machine: dict[str, Any]) -> str:
    """The 1-minute load average around the run: other work on the machine skews every figure."""
    before, after = machine.get("load_average_before"), machine.get("load_average_after")
    if not before or not after:
        return ""
    return f", load average {before[0]:.1f} before and {after[0]:.1f} after"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and abs(value) < 10:
        return f"{value:.2f}"
    return f"{value:,.0f}"


def console_table(
    rows: list[dict[str, Any]], goals: dict[str, tuple[str, str, float]] = GOALS
) -> str:
    head = f"{'figure':<36}{'value':>12}{'baseline':>12}{'ratio':>8}  {'goal':<14}{'met':<5}unit"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['name']:<36}{_fmt(r['value']):>12}{_fmt(r['baseline']):>12}"
            f"{_fmt(r['ratio']):>8}  {goal_text(r['name'], goals):<14}{met(r, goals):<5}"
            f"{r['unit']}"
        )
    return "\n".join(lines)


def markdown(rows: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    """The README's table: compact, one line per figure, the goal and whether it is met."""
    lines = ["| figure | value | baseline | ratio | goal: met? |", "|---|--:|--:|--:|---|"]
    for r in rows:
        unit = f" {r['unit']}" if r["value"] is not None and r["unit"] else ""
        goal = goal_text(r["name"])
        verdict = f"{goal}: {met(r)}" if goal else ""
        lines.append(
            f"| `{r['name']}` | {_fmt(r['value'])}{unit} | {_fmt(r['baseline'])} | "
            f"{_fmt(r['ratio'])} | {verdict} |"
        )
    if machine:
        lines.append("")
        lines.append(
            f"{machine.get('mode', '?').capitalize()} run, {machine.get('when', '?')}: "
            f"{machine.get('cpus')} CPUs ({machine.get('cpu_model')}), "
            f"{machine.get('memory_gib')} GiB, Python {machine.get('python')}"
            + _load(machine)
            + "."
        )
        for rerun in machine.get("reruns", []):
            lines[-1] += (
                f" Re-run of {', '.join(rerun['modules'])} at {rerun['when']}" + _load(rerun) + "."
            )
    return "\n".join(lines)


def main(folder: Path = RESULTS, readme: bool = False) -> int:
    rows = json.loads((folder / "latest.json").read_text())
    if readme:
        rows = [r for r in rows if r["name"] in README_FIGURES]
    machine_file = folder / "machine.json"
    machine = json.loads(machine_file.read_text()) if machine_file.exists() else {}
    print(markdown(rows, machine))
    return 0


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--readme"]
    sys.exit(main(Path(args[0]) if args else RESULTS, readme="--readme" in sys.argv))
