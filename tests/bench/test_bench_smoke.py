"""bench-smoke: the benchmark harness still runs end to end (tiny sizes, no thresholds).

Speed targets live in bench/ as ratios (``make bench``); this only proves the harness works:
it starts capture and the baseline apps as processes, drives them with the load generator and
writes the results file the README's table is made from.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.run import MODULES, run_module
from bench.speed_to_lead import percentile
from bench.table import README_FIGURES, markdown, met

ROOT = Path(__file__).resolve().parents[2]
FIELDS = {"name", "value", "unit", "baseline", "ratio"}


@pytest.mark.slow
def test_bench_smoke_writes_results(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--only", "capture", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = json.loads((tmp_path / "latest.json").read_text())
    assert isinstance(rows, list)
    assert [r["name"] for r in rows] == list(dict(MODULES)["capture"])
    for row in rows:
        assert row.keys() >= FIELDS
        assert row["value"] is not None and row["value"] > 0, row
        assert row["baseline"] is not None and row["baseline"] > 0, row
    machine = json.loads((tmp_path / "machine.json").read_text())
    assert machine["cpus"] >= 1 and machine["python"]
    assert "capture_single_vs_echo" in out.stdout


def test_a_module_that_is_missing_is_recorded_without_a_value() -> None:
    rows = run_module("no_such_module", ("figure_a", "figure_b"), quick=True, smoke=True)
    assert [r["name"] for r in rows] == ["figure_a", "figure_b"]
    assert all(r["value"] is None and "not importable" in r["note"] for r in rows)


def test_markdown_table_says_whether_each_goal_is_met() -> None:
    rows: list[dict[str, Any]] = [
        {
            "name": "capture_single_vs_echo",
            "value": 800.0,
            "unit": "posts/s",
            "baseline": 1000.0,
            "ratio": 0.8,
        },
        {
            "name": "speed_to_lead_p99_ms",
            "value": 180.0,
            "unit": "ms",
            "baseline": 150.0,
            "ratio": 1.2,
        },
        {
            "name": "scoring_vs_db_upsert_floor",
            "value": None,
            "unit": "",
            "baseline": None,
            "ratio": None,
        },
    ]
    assert [met(r) for r in rows] == ["yes", "no", "no figure"]
    text = markdown(rows, {"cpus": 2, "cpu_model": "X", "python": "3.11.2", "mode": "quick"})
    assert "| `capture_single_vs_echo` | 800 posts/s | 1,000 | 0.80 | ratio >= 0.7: yes |" in text
    assert "2 CPUs (X)" in text


def test_percentile_picks_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 51.0
    assert percentile(values, 99) == 99.0
    assert percentile([5.0], 99) == 5.0


def test_readme_table_is_the_one_rendered_from_the_results_file() -> None:
    # Issue 11: "the README table matches the file". Regenerate it with
    # `python -m bench.table --readme` after `make bench`.
    results = ROOT / "bench" / "results"
    rows = json.loads((results / "latest.json").read_text())
    machine = json.loads((results / "machine.json").read_text())
    table = markdown([r for r in rows if r["name"] in README_FIGURES], machine)
    assert table in (ROOT / "README.md").read_text()
