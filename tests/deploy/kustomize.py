"""A small kustomize-compatible loader for ``deploy/k8s``: resources, configMapGenerator (without
the hash suffix), images, namespace, labels and strategic-merge patches (maps merge, lists of
named items merge by name, other lists are replaced). Enough to test what ``kubectl apply -k``
would apply, without kubectl."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]


def merge(base: Any, patch: Any) -> Any:
    """Strategic merge, as far as these manifests need it."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in [*base, *patch])
    ):
        out_list = [copy.deepcopy(i) for i in base]
        names = [i["name"] for i in out_list]
        for item in patch:
            if item["name"] in names:
                at = names.index(item["name"])
                out_list[at] = merge(out_list[at], item)
            else:
                out_list.append(copy.deepcopy(item))
        return out_list
    return copy.deepcopy(patch)


def _key(doc: Resource) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def build(directory: Path) -> list[Resource]:
    """The resources ``kubectl kustomize directory`` would print (names without hash suffix)."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    docs: list[Resource] = []
    for entry in spec.get("resources", []):
        path = directory / entry
        if path.is_dir():
            docs.extend(build(path))
        else:
            text = path.read_text(encoding="utf-8")
            docs.extend(d for d in yaml.safe_load_all(text) if d)
    for gen in spec.get("configMapGenerator", []):
        data = {}
        for item in gen.get("files", []):
            key, _, name = item.partition("=")
            file = directory / (name or key)
            data[key if name else file.name] = file.read_text(encoding="utf-8")
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": gen["name"]},
                "data": data,
            }
        )
    for patch in spec.get("patches", []):
        text = (directory / patch["path"]).read_text(encoding="utf-8")
        for p in (d for d in yaml.safe_load_all(text) if d):
            matches = [i for i, d in enumerate(docs) if _key(d) == _key(p)]
            assert len(matches) == 1, f"patch {patch['path']}: {_key(p)} matches {len(matches)}"
            docs[matches[0]] = merge(docs[matches[0]], p)
    for image in spec.get("images", []):
        new = f"{image.get('newName', image['name'])}:{image.get('newTag', 'latest')}"
        for doc in docs:
            for c in containers(doc):
                if c["image"].split(":")[0] in (image["name"], image.get("newName")):
                    c["image"] = new
    for label in spec.get("labels", []):
        for doc in docs:
            doc["metadata"].setdefault("labels", {}).update(label["pairs"])
    if "namespace" in spec:
        for doc in docs:
            doc["metadata"]["namespace"] = spec["namespace"]
    return docs


def pod_spec(doc: Resource) -> dict[str, Any] | None:
    """The pod template's spec of a Deployment or Job."""
    if doc["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
        spec: dict[str, Any] = doc["spec"]["template"]["spec"]
        return spec
    return None


def containers(doc: Resource) -> list[dict[str, Any]]:
    spec = pod_spec(doc)
    return [*spec.get("initContainers", []), *spec["containers"]] if spec else []
