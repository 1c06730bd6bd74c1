"""Operator commands of the CLI: --version, config show-default, empty sections, healthcheck."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli import app
from shared.config import ConfigError, default_config_text, load_config

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"leadflow {version('leadflow')}"


def test_show_default_prints_a_config_that_passes_the_check(tmp_path: Path) -> None:
    shown = runner.invoke(app, ["config", "show-default"])
    assert shown.exit_code == 0
    assert shown.output == default_config_text()
    path = tmp_path / "mine.yaml"
    path.write_text(shown.output, encoding="utf-8")
    checked = runner.invoke(app, ["config", "check", str(path)])
    assert (checked.exit_code, checked.output.splitlines()[-1]) == (0, "ok")


@pytest.mark.parametrize("text", ["scoring: {}\n", "scoring:\n", "routing: {}\n"])
def test_an_empty_scoring_or_routing_section_is_refused_saying_what_it_would_mean(
    tmp_path: Path, text: str
) -> None:
    path = tmp_path / "leadflow.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    section = text.split(":")[0]
    assert f"invalid config at {section}: the section is empty" in str(err.value)
    assert "no lead would ever" in str(err.value)
    result = runner.invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 1 and "the section is empty" in result.output


def test_healthcheck_fails_when_nothing_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.broker import free_port
    from shared.settings import get_settings

    monkeypatch.setenv("LEADFLOW_DEV", "1")
    monkeypatch.setenv("LEADFLOW_SCORING_PORT", str(free_port()))
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["healthcheck", "scoring"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1
    assert runner.invoke(app, ["healthcheck", "nope"]).exit_code == 2


async def test_rescore_reports_progress_per_page(sqlite_db_url: str) -> None:
    from services.scoring.handlers import ScoringHandler
    from services.scoring.rescore import rescore_all
    from shared.db import create_engine
    from shared.topics import Topics
    from tests.scoring.helpers import T0, default_rules, interaction
    from tests.support import make_settings

    engine = create_engine(sqlite_db_url)
    try:
        handler = ScoringHandler(default_rules(), Topics("p."), clock=lambda: T0)
        async with engine.begin() as conn:
            await handler(
                conn,
                [interaction(intent="newsletter", email=f"n{i}@x.io", at=T0) for i in range(5)],
            )
    finally:
        await engine.dispose()
    seen: list[tuple[int, int]] = []
    settings = make_settings("127.0.0.1:1", sqlite_db_url)
    await rescore_all(settings, page_size=2, progress=lambda n, c: seen.append((n, c)))
    assert [n for n, _ in seen] == [2, 4, 5]
