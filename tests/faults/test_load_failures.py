"""Loads that time out or fail for memory move on to the next candidate; when none is left the
client gets 503 (OpenAI) or 529 overloaded_error (Anthropic), with Retry-After."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from cortex.testing import GatewayProcess, start_gateway_process

from ..helpers import chat, message
from .servers import (
    ANTHROPIC,
    API,
    fake_neuron,
    gateway_config,
    is_anthropic_error,
    is_openai_error,
    start_neurons,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fleet() -> Iterator[GatewayProcess]:
    """`slow` loads for 4 s (the gateway waits 1 s), `small` has 500 MB, `roomy` 2000 MB."""
    models = ["m1", "m2", "m3", "big"]
    nodes = start_neurons(
        {
            "slow": fake_neuron("slow", models, load_s=4.0),
            "small": {
                **fake_neuron("small", models),
                "memory_mb": 500.0,
                "fake": {"models": [{"id": "big", "memory_mb": 800.0}]},
            },
            "roomy": fake_neuron("roomy", [*models], fail_load=["m3"]),
        }
    )
    profiles = [
        {"id": "m1", "nodes": ["slow", "roomy"]},
        # The operator's estimate is wrong: the node refuses the load (507), the next one takes it.
        {"id": "big", "nodes": ["small", "roomy"], "memory_mb": 100.0},
        {"id": "m2", "nodes": ["slow"]},
        {"id": "m3", "nodes": ["slow", "roomy"]},
    ]
    gateway = start_gateway_process(gateway_config(nodes, load_timeout_s=1.0), profiles)
    yield gateway
    gateway.stop()
    for node in nodes.values():
        node.stop()


def _content(reply: httpx.Response) -> str:
    assert reply.status_code == 200, reply.text
    text: str = reply.json()["choices"][0]["message"]["content"]
    return text


def test_a_load_that_times_out_moves_to_the_next_candidate(fleet: GatewayProcess) -> None:
    reply = httpx.post(f"{fleet.url}/v1/chat/completions", json=chat("m1"), headers=API, timeout=30)
    assert _content(reply).startswith("This is m1 on roomy.")


def test_a_load_refused_for_memory_moves_to_the_next_candidate(fleet: GatewayProcess) -> None:
    reply = httpx.post(
        f"{fleet.url}/v1/chat/completions", json=chat("big"), headers=API, timeout=30
    )
    assert _content(reply).startswith("This is big on roomy.")


@pytest.mark.parametrize("model", ["m2", "m3"])  # m2: only a slow node; m3: slow, then a failure
def test_when_no_candidate_is_left_the_client_is_told_to_retry(
    fleet: GatewayProcess, model: str
) -> None:
    refused = httpx.post(
        f"{fleet.url}/v1/chat/completions", json=chat(model), headers=API, timeout=30
    )
    assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
    assert is_openai_error(refused.json()) and "tried:" in refused.json()["error"]["message"]
    overloaded = httpx.post(
        f"{fleet.url}/v1/messages", json=message(model, stream=True), headers=ANTHROPIC, timeout=30
    )
    assert overloaded.status_code == 529 and int(overloaded.headers["retry-after"]) >= 1
    body = overloaded.json()
    assert is_anthropic_error(body) and body["error"]["type"] == "overloaded_error"
