"""``leadflow config check FILE``: the three services' start-up checks, run before deploying."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from services.cli import app
from shared.config import default_config_text

runner = CliRunner()


def _check(tmp_path: Path, config: dict[str, Any] | str) -> tuple[int, list[str]]:
    path = tmp_path / "leadflow.yaml"
    text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    result = runner.invoke(app, ["config", "check", str(path)])
    return result.exit_code, result.output.splitlines()


def _default() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(default_config_text())
    return config


def test_the_default_config_passes_with_a_summary_in_plain_words(tmp_path: Path) -> None:
    code, lines = _check(tmp_path, default_config_text())
    assert code == 0 and lines[-1] == "ok"
    assert lines[0] == "forms: 3 (contact-sales, demo-request, newsletter)"
    assert any(line.startswith("SLA policies: hot, warm, cold") for line in lines)
    assert "nurture tracks: 2 (warm-leads, stalled-mql)" in lines


def test_an_http_webhook_is_refused_as_in_production_unless_dev(tmp_path: Path) -> None:
    # Before: config check ran routing's check in dev mode only, so a production deploy with an
    # http:// webhook passed the check and then failed to start.
    config = _default()
    config["routing"]["webhooks"] = [
        {"name": "crm", "url": "http://crm.example/hook", "secret": "s" * 32, "events": []}
    ]
    code, lines = _check(tmp_path, config)
    assert code == 1
    assert any("routing.webhooks[0].url" in line for line in lines), lines
    path = tmp_path / "dev.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert runner.invoke(app, ["config", "check", "--dev", str(path)]).exit_code == 0


def test_a_misspelled_key_deep_in_a_section_is_named(tmp_path: Path) -> None:
    config = _default()
    rule = config["scoring"]["fit"][1]
    rule["pointz"] = rule.pop("points")
    code, lines = _check(tmp_path, config)
    assert code == 1
    assert "ok" not in lines
    assert any(
        line.startswith("invalid config at scoring.fit[1]:") and "'pointz'" in line
        for line in lines
    ), lines


def test_a_wrong_type_is_named_by_its_path_not_the_shallowest_failure(tmp_path: Path) -> None:
    # hours is a oneOf ("24x7" or a week): the shallowest error would be "not valid under any
    # of the given schemas" at ...hours; the line must name the very entry instead.
    config = _default()
    config["routing"]["calendars"]["emea-office"]["hours"]["mon"] = [9]
    code, lines = _check(tmp_path, config)
    assert code == 1
    assert lines == [
        "invalid config at routing.calendars.emea-office.hours.mon[0]: 9 is not of type 'string'"
    ]


def test_every_problem_of_every_section_gets_a_line(tmp_path: Path) -> None:
    config = _default()
    config["capture"]["max_body_kb"] = "big"
    config["scoring"]["fit"][0]["points"] = "many"
    config["routing"]["reps"][0]["weight"] = 0
    code, lines = _check(tmp_path, config)
    assert code == 1
    assert [line.split(":")[0] for line in lines] == [
        "invalid config at capture.max_body_kb",
        "invalid config at scoring.fit[0].points",
        "invalid config at routing.reps[0].weight",
    ]


def test_a_cross_reference_the_schema_cannot_see_is_refused(tmp_path: Path) -> None:
    config = _default()
    config["routing"]["teams"]["emea"]["calendar"] = "no-such-calendar"
    code, lines = _check(tmp_path, config)
    assert code == 1
    assert len(lines) == 1 and "no-such-calendar" in lines[0]


def test_an_unreadable_or_malformed_file_is_one_problem(tmp_path: Path) -> None:
    code, lines = _check(tmp_path, "forms: [unclosed")
    assert code == 1 and "not valid YAML" in lines[0]
    result = runner.invoke(app, ["config", "check", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 1 and "cannot read" in result.output


def test_a_misspelled_section_is_refused(tmp_path: Path) -> None:
    # A misspelled ``scoring:`` used to mean zero rules: no lead ever qualified, silently.
    config = _default()
    config["scorng"] = config.pop("scoring")
    code, lines = _check(tmp_path, config)
    assert code == 1
    assert lines[0].startswith("invalid config at scorng: unknown section")


def test_a_missing_scoring_section_is_refused(tmp_path: Path) -> None:
    config = _default()
    del config["scoring"]
    code, lines = _check(tmp_path, config)
    assert (code, lines) == (1, ["invalid config at (top level): 'scoring' is a required property"])


def test_an_unknown_optional_key_is_refused(tmp_path: Path) -> None:
    # ``max_open`` is optional, so only additionalProperties: false can catch its misspelling.
    config = _default()
    config["routing"]["reps"][0]["capacity"]["max_opne"] = 5
    config["capture"]["ratelimit"] = {"per_second": 5}
    code, lines = _check(tmp_path, config)
    assert code == 1
    assert [line.split(":")[0] for line in lines] == [
        "invalid config at capture",
        "invalid config at routing.reps[0].capacity",
    ]
    assert "'ratelimit' was unexpected" in lines[0] and "'max_opne' was unexpected" in lines[1]


def test_a_misspelled_webhook_event_type_is_refused(tmp_path: Path) -> None:
    config = _default()
    config["routing"]["webhooks"] = [
        {"url": "https://crm.example/hook", "events": ["io.leadflow.routing.asigned"]}
    ]
    code, lines = _check(tmp_path, config)
    assert code == 1
    assert lines[0].startswith("invalid config at routing.webhooks[0].events[0]:")
