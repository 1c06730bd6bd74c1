"""Each service's /openapi.json declares what its routes really answer.

Before: 0 of 37 operations documented the problem+json errors they send (FastAPI listed a JSON
``HTTPValidationError`` that is never sent), and many 2xx answers were untyped objects. The
runtime side (answers match these declarations) is checked by schemathesis in
tests/e2e/test_openapi_fuzz.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from services.capture.main import build_app as capture_app
from services.routing.main import build_app as routing_app
from services.scoring.main import build_app as scoring_app
from shared.problems import PROBLEM_MEDIA_TYPE
from shared.settings import Settings

#: 2xx answers that are not JSON objects by design.
NOT_JSON = {
    ("capture", "get", "/capture.js"),  # the snippet itself
    ("capture", "get", "/v1/webhooks/meta"),  # Meta's hub.challenge, echoed as text
    ("scoring", "delete", "/v1/leads/{lead_id}"),  # 204 No Content
}

FACTORIES: dict[str, Callable[[Settings], Any]] = {
    "capture": capture_app,
    "scoring": scoring_app,
    "routing": routing_app,
}


@pytest.fixture(scope="module")
def specs() -> dict[str, dict[str, Any]]:
    settings = Settings(
        leadflow_dev=True,
        kafka_bootstrap_servers="127.0.0.1:1",
        database_url="sqlite+aiosqlite:///:memory:",
    )
    return {name: factory(settings).openapi() for name, factory in FACTORIES.items()}


def _operations(specs: dict[str, dict[str, Any]]) -> Iterator[tuple[str, str, str, Any]]:
    for service, spec in specs.items():
        for path, ops in spec["paths"].items():
            for method, op in ops.items():
                yield service, method, path, op


def test_every_error_answer_is_documented_as_problem_json(specs: dict[str, Any]) -> None:
    wrong = []
    for service, method, path, op in _operations(specs):
        for code, response in op["responses"].items():
            if code[0] in "45":
                content = response.get("content", {})
                if list(content) != [PROBLEM_MEDIA_TYPE]:
                    wrong.append(f"{service} {method.upper()} {path} {code}: {list(content)}")
        if not any(code[0] == "5" for code in op["responses"]):
            wrong.append(f"{service} {method.upper()} {path}: no 5xx problem")
    assert wrong == []
    for spec in specs.values():
        assert "HTTPValidationError" not in spec["components"]["schemas"]


def test_every_json_answer_has_a_declared_shape(specs: dict[str, Any]) -> None:
    untyped = []
    for service, method, path, op in _operations(specs):
        if (service, method, path) in NOT_JSON:
            continue
        for code, response in op["responses"].items():
            if not code.startswith("2"):
                continue
            schema = response.get("content", {}).get("application/json", {}).get("schema")
            if not schema or not ({"$ref", "properties", "items", "anyOf"} & set(schema)):
                untyped.append(f"{service} {method.upper()} {path} {code}: {schema}")
    assert untyped == []


def test_secured_operations_declare_their_credential_and_its_errors(
    specs: dict[str, Any],
) -> None:
    wrong = []
    for service, method, path, op in _operations(specs):
        if path in ("/healthz", "/readyz", "/openapi.json"):
            continue
        if op.get("security"):
            if not {"401", "403"} <= set(op["responses"]) and "writeKey" not in str(op["security"]):
                wrong.append(f"{service} {method.upper()} {path}: 401/403 not documented")
            schemes = specs[service]["components"]["securitySchemes"]
            for requirement in op["security"]:
                wrong.extend(
                    f"{service} {path}: unknown scheme {name}"
                    for name in requirement
                    if name not in schemes
                )
    assert wrong == []
    assert {"readToken", "adminToken"} <= set(specs["scoring"]["components"]["securitySchemes"])
