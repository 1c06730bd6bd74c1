"""``deploy/k8s``: the base and the production overlay, rendered by a kustomize-compatible loader
(no cluster, no kubectl) and checked against the code: every variable is a setting, commands
and ports are the CLI's, probes hit real endpoints, secrets come by reference only."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import typer.main
import yaml

from services.cli import SERVICES
from services.cli import app as cli
from shared.http import create_app
from shared.settings import Settings
from tests.deploy.compose import ROOT
from tests.deploy.kustomize import Resource, build, containers, pod_spec

K8S = ROOT / "deploy" / "k8s"
TREES = {"base": K8S / "base", "production": K8S / "overlays" / "production"}
SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "KEY", "DATABASE_URL", "USERNAME")


@pytest.fixture(params=sorted(TREES), scope="module")
def rendered(request: pytest.FixtureRequest) -> list[Resource]:
    return build(TREES[request.param])


def by_kind(docs: list[Resource], kind: str) -> dict[str, Resource]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def config_env(docs: list[Resource], container: dict[str, Any]) -> dict[str, str]:
    """What a container's environment holds: envFrom ConfigMaps, then env (secrets as '<ref>')."""
    maps = by_kind(docs, "ConfigMap")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(maps[source["configMapRef"]["name"]]["data"])
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", "<ref>")
    return env


def test_the_expected_workloads(rendered: list[Resource]) -> None:
    deployments = by_kind(rendered, "Deployment")
    assert set(deployments) == {f"leadflow-{s}" for s in SERVICES}
    assert deployments["leadflow-scoring"]["spec"]["replicas"] == 2
    assert deployments["leadflow-routing"]["spec"]["replicas"] == 2
    hpa = by_kind(rendered, "HorizontalPodAutoscaler")
    assert [h["spec"]["scaleTargetRef"]["name"] for h in hpa.values()] == ["leadflow-capture"]
    assert all(h["spec"]["minReplicas"] >= 2 for h in hpa.values())
    pdbs = by_kind(rendered, "PodDisruptionBudget")
    for name, dep in deployments.items():
        labels = dep["spec"]["template"]["metadata"]["labels"]
        selector = pdbs[name]["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items(), name
        assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    jobs = by_kind(rendered, "Job")
    assert [c["args"] for j in jobs.values() for c in containers(j)] == [["init"]]
    assert by_kind(rendered, "NetworkPolicy")


def test_every_variable_is_a_setting_and_the_settings_are_valid(rendered: list[Resource]) -> None:
    fields = set(Settings.model_fields)
    for doc in rendered:
        for container in containers(doc):
            env = config_env(rendered, container)
            unknown = [k for k in env if k.lower() not in fields]
            assert not unknown, f"{doc['metadata']['name']}: not settings: {unknown}"
            # with a value in every referenced secret, the settings load as in the pod
            values = {k.lower(): ("x" * 40 if v == "<ref>" else v) for k, v in env.items()}
            values["database_url"] = "postgresql+asyncpg://u:p@db/leadflow"
            Settings(**values)


def test_secrets_only_by_reference(rendered: list[Resource]) -> None:
    assert not by_kind(rendered, "Secret"), "secrets are created by the operator, not committed"
    for cm in by_kind(rendered, "ConfigMap").values():
        if cm["metadata"]["name"].startswith("leadflow-env"):
            leaked = [k for k in cm["data"] if any(w in k for w in SECRET_WORDS)]
            assert not leaked, leaked
    for doc in rendered:
        for container in containers(doc):
            for item in container.get("env", []):
                if any(w in item["name"] for w in SECRET_WORDS):
                    assert "secretKeyRef" in item.get("valueFrom", {}), item
            refs = [i for i in container.get("env", []) if "valueFrom" in i]
            required = {
                i["name"] for i in refs if not i["valueFrom"]["secretKeyRef"].get("optional")
            }
            assert required == {"DATABASE_URL", "LEADFLOW_API_TOKEN"}, required


def test_commands_ports_and_probes_match_the_cli_and_the_http_shell(
    rendered: list[Resource],
) -> None:
    commands = set(typer.main.get_command(cli).commands)  # type: ignore[attr-defined]
    app = create_app(SimpleNamespace(settings=Settings(leadflow_dev=True)), "probe", [])  # type: ignore[arg-type]
    paths = {getattr(r, "path", None) for r in app.routes}
    services = {s["metadata"]["name"]: s for s in by_kind(rendered, "Service").values()}
    for name, dep in by_kind(rendered, "Deployment").items():
        (container,) = containers(dep)
        service = name.removeprefix("leadflow-")
        assert container["args"] == [service] and service in commands
        env = config_env(rendered, container)
        port_var = f"LEADFLOW_{service.upper()}_PORT"
        expected = int(env.get(port_var, Settings.model_fields[port_var.lower()].default))
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"http": expected}, (name, ports)
        probes = {k: container[k]["httpGet"] for k in ("readinessProbe", "livenessProbe")}
        assert probes["readinessProbe"]["path"] == "/readyz"
        assert probes["livenessProbe"]["path"] == "/healthz"
        for probe in probes.values():
            assert probe["path"] in paths
            assert probe["port"] in (ports.keys() | set(ports.values()))
        svc_port = services[name]["spec"]["ports"][0]
        assert svc_port["targetPort"] in (ports.keys() | set(ports.values()))
        assert container["resources"]["requests"] and container["resources"]["limits"]
        spec = pod_spec(dep)
        assert spec is not None and spec["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_the_config_file_is_mounted_where_leadflow_config_points_and_passes_the_checks(
    rendered: list[Resource],
) -> None:
    from services.cli import _config_checks

    maps = by_kind(rendered, "ConfigMap")
    texts = set()
    for doc in rendered:
        for container in containers(doc):
            where = Path(config_env(rendered, container)["LEADFLOW_CONFIG"])
            mount = next(
                m for m in container["volumeMounts"] if m["mountPath"] == str(where.parent)
            )
            volume = next(v for v in pod_spec(doc)["volumes"] if v["name"] == mount["name"])  # type: ignore[index]
            texts.add(maps[volume["configMap"]["name"]]["data"][where.name])
    assert len(texts) == 1
    for _service, check in _config_checks():
        check(yaml.safe_load(next(iter(texts))))


def test_the_production_overlay_uses_replicated_secured_kafka() -> None:
    docs = build(TREES["production"])
    env = by_kind(docs, "ConfigMap")["leadflow-env"]["data"]
    assert int(env["KAFKA_REPLICATION_FACTOR"]) >= 3
    assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert all(d["metadata"]["namespace"] == "leadflow" for d in docs)
    images = {c["image"] for d in docs for c in containers(d)}
    assert len(images) == 1 and not images.pop().endswith(":latest")
