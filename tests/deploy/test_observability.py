"""``deploy/prometheus`` and ``deploy/grafana``: every metric an alert or a panel queries exists
in the code (a renamed metric would silently turn an alert off), with the labels it selects on."""

from __future__ import annotations

import ast
import json
import re
from functools import cache

import yaml

from tests.deploy.compose import ROOT

KINDS = {"Counter": ("_total",), "Gauge": ("",), "Histogram": ("_bucket", "_sum", "_count", "")}
KINDS["Summary"] = ("_sum", "_count", "")
#: What Prometheus and prometheus_client's default collectors provide.
BUILTIN = {"up", "process_cpu_seconds_total", "process_resident_memory_bytes"}
SELECTOR = re.compile(r"\b((?:leadflow|process|python)_[a-z0-9_]+|up)\b\s*(\{[^}]*\})?")
MATCHER = re.compile(r'([a-z_]+)\s*(=~|!~|!=|=)\s*"([^"]*)"')


@cache
def _trees() -> tuple[ast.AST, ...]:
    """Every module of shared/ and services/, parsed once."""
    paths = [p for d in ("shared", "services") for p in (ROOT / d).rglob("*.py")]
    return tuple(ast.parse(p.read_text(encoding="utf-8")) for p in paths)


def defined_metrics() -> dict[str, set[str]]:
    """Every metric series name the code defines, with its label names."""
    out: dict[str, set[str]] = {}
    for tree in _trees():
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            if node.func.id not in KINDS or not node.args:
                continue
            first = node.args[0]
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                continue
            labels_node = node.args[2] if len(node.args) > 2 else None
            for kw in node.keywords:
                if kw.arg == "labelnames":
                    labels_node = kw.value
            labels = set()
            if isinstance(labels_node, (ast.List, ast.Tuple)):
                labels = {e.value for e in labels_node.elts if isinstance(e, ast.Constant)}
            base = first.value.removesuffix("_total")
            for suffix in KINDS[node.func.id]:
                out[base + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return out


def string_literals() -> set[str]:
    found: set[str] = set()
    for tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.add(node.value)
    return found


def queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every alert rule and dashboard panel target."""
    out = []
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yaml").read_text(encoding="utf-8"))
    for group in rules["groups"]:
        for rule in group["rules"]:
            out.append((f"alert {rule['alert']}", rule["expr"]))
    dash = json.loads((ROOT / "deploy/grafana/leadflow.json").read_text(encoding="utf-8"))
    for panel in dash["panels"]:
        for target in panel["targets"]:
            out.append((f"panel {panel['title']!r}", target["expr"]))
    return out


def test_every_queried_metric_and_label_exists_in_the_code() -> None:
    metrics = defined_metrics()
    literals = string_literals()
    assert "leadflow_events_consumed_total" in metrics  # the scan finds what is there
    problems = []
    used = set()
    for where, expr in queries():
        for name, selector in SELECTOR.findall(expr):
            used.add(name)
            if name not in metrics and name not in BUILTIN:
                problems.append(f"{where}: no metric {name}")
                continue
            for label, op, value in MATCHER.findall(selector or ""):
                if label in ("job", "instance"):
                    continue  # set by Prometheus
                if label not in metrics.get(name, set()):
                    problems.append(f"{where}: {name} has no label {label}")
                elif op in ("=", "!=") and value not in literals:
                    problems.append(f"{where}: {name}{{{label}}} is never {value!r} in the code")
    assert not problems, "\n".join(problems)
    assert {"leadflow_capture_events_total", "leadflow_events_consumed_total"} <= used


def test_alert_rules_are_complete() -> None:
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yaml").read_text(encoding="utf-8"))
    names = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            names.append(rule["alert"])
            assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule
            assert rule["annotations"]["summary"], rule
    assert len(names) == len(set(names))


def test_dashboard_panels_are_well_formed() -> None:
    dash = json.loads((ROOT / "deploy/grafana/leadflow.json").read_text(encoding="utf-8"))
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) and dash["uid"]
    for panel in dash["panels"]:
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"])
