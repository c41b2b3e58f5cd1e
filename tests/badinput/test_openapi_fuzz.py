"""Schemathesis against the OpenAPI documents of the gateway and of the neuron, both real
processes: for every generated request (valid and invalid), no 5xx, and every error body is
well-formed in its dialect (the documents describe each dialect's envelope, and responses are
checked against them). The budget is small and derandomized, so CI stays fast and repeatable."""

from __future__ import annotations

import copy
import os
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.config import SchemathesisConfig

from cortex.gateway.openapi import openapi_document as gateway_openapi
from cortex.neuron.openapi import openapi_document as neuron_openapi
from tests.faults.servers import ADMIN, ADMIN_KEY, KEY, is_anthropic_error, is_openai_error

from .conftest import NODE_TOKEN, Stack

pytestmark = pytest.mark.e2e

EXAMPLES = int(os.environ.get("CORTEX_SCHEMATHESIS_EXAMPLES", "20"))
BUDGET = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
_CONFIG = {
    "request-timeout": 30,
    "generation": {
        "deterministic": True,
        "max-examples": EXAMPLES,
        "with-security-parameters": False,  # keys are sent as configured (auth has its tests)
    },
    "phases": {"stateful": {"enabled": False}},
}


def _pin_models(document: dict[str, Any], ids: list[str]) -> dict[str, Any]:
    """The document with every request body's `model` drawn from the served ids, so that valid
    requests reach a model (unknown names are covered by the negative cases and by hand), and
    the node of `/admin/nodes/{node}/...` never the fleet's own (cordon and drain are tested in
    tests/gateway/test_admin_ops.py; here a drain would unload what the other cases use)."""
    out = copy.deepcopy(document)
    for operations in out["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "model":
                    parameter["schema"] = {"type": "string", "enum": ids}
                elif parameter["name"] == "node":  # never the fleet's node: a drain would empty it
                    parameter["schema"] = {"type": "string", "enum": ["no-such-node", "b"]}
    # Request bodies only: a reply names whatever model it came from (a negative case of
    # `POST /models/load` with a `source` may have made the fake node pull a model of its own).
    bodies = {
        ref.rsplit("/", 1)[-1]
        for operations in out["paths"].values()
        for operation in operations.values()
        for media in (operation.get("requestBody") or {}).get("content", {}).values()
        if isinstance(ref := media.get("schema", {}).get("$ref"), str)
    }
    for name, schema in out["components"]["schemas"].items():
        model = (schema.get("properties") or {}).get("model")
        if name not in bodies or not isinstance(model, dict):
            continue
        if model.get("type") == "string" or "anyOf" in model:
            schema["properties"]["model"] = {"type": "string", "enum": ids}
    return out


def _schema(document: dict[str, Any], ids: list[str]) -> Any:
    return schemathesis.openapi.from_dict(
        _pin_models(document, ids), config=SchemathesisConfig.from_dict(_CONFIG)
    )


GATEWAY = _schema(gateway_openapi(), ["m1", "tiny", "default"])
NEURON = _schema(neuron_openapi(), ["m1", "tiny"])
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]


def _operations(schema: Any) -> list[Any]:
    """Each operation in each mode (negative only where there is input to get wrong)."""
    out = []
    for result in schema.get_all_operations():
        op = result.ok()
        takes_input = bool(len(op.body) or len(op.query) or len(op.path_parameters))
        for mode in MODES if takes_input else [GenerationMode.POSITIVE]:
            out.append(pytest.param(op, mode, id=f"{op.label}-{mode.value}"))
    return out


def _reached(operation: Any, mode: GenerationMode, statuses: list[int]) -> None:
    """Valid requests to the inference routes get answers, not only refusals: the fuzzing
    reaches the models rather than stopping at validation."""
    # Not /v1/responses: its schema admits inputs without any message, refused by design. Not
    # /v1/embeddings: the fake node serves chat models only, which refuse embeddings with a 400
    # (embeddings are answered for real in tests/gateway/test_embeddings_e2e.py).
    inference = operation.method.upper() == "POST" and operation.path.startswith(("/v1/", "/tok"))
    inference = inference and operation.path not in ("/v1/responses", "/v1/embeddings")
    if mode == GenerationMode.POSITIVE and inference:
        assert 200 in statuses, statuses


def _well_formed(response: Any, anthropic: bool) -> None:
    if response.status_code < 400:
        return
    body = response.json()
    ok = is_anthropic_error(body) if anthropic else is_openai_error(body)
    assert ok, f"{response.status_code}: {body}"


@pytest.mark.parametrize(("operation", "mode"), _operations(GATEWAY))
def test_the_gateway_answers_every_generated_request_without_a_server_error(
    operation: Any, mode: GenerationMode, stack: Stack
) -> None:
    admin = operation.path.startswith("/admin")
    headers = ADMIN if admin else {"x-api-key": KEY}
    anthropic = operation.path.startswith("/v1/messages")

    statuses: list[int] = []

    @BUDGET
    @given(operation.as_strategy(mode))
    def check(case: Any) -> None:
        response = case.call(base_url=stack.gateway.url, headers=headers, timeout=30)
        statuses.append(response.status_code)
        case.validate_response(response, checks=CHECKS, headers=headers)
        _well_formed(response, anthropic)
        assert ADMIN_KEY not in response.text and KEY not in response.text

    check()
    _reached(operation, mode, statuses)


@pytest.mark.parametrize(("operation", "mode"), _operations(NEURON))
def test_the_neuron_answers_every_generated_request_without_a_server_error(
    operation: Any, mode: GenerationMode, stack: Stack
) -> None:
    headers = {"authorization": f"Bearer {NODE_TOKEN}"}
    unload = operation.path == "/models/unload"

    @BUDGET
    @given(operation.as_strategy(mode))
    def check(case: Any) -> None:
        if operation.path == "/models/unload" and isinstance(case.body, dict):
            case.body["drain_timeout_s"] = 0  # an unload must not wait on the other cases
        response = case.call(base_url=stack.neuron.url, headers=headers, timeout=30)
        case.validate_response(response, checks=CHECKS, headers=headers)
        statuses.append(response.status_code)
        _well_formed(response, anthropic=False)
        if unload and response.status_code == 200:  # keep it served for the next cases
            url = f"{stack.neuron.url}/models/load"
            httpx.post(url, json={"model": case.body["model"]}, headers=headers, timeout=30)

    statuses: list[int] = []
    check()
    _reached(operation, mode, statuses)
