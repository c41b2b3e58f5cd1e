"""One real gateway over one real fake neuron for the bad-input tests (keys on, a 1 MB body
limit), and helpers that check every refusal is well-formed in its dialect."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from cortex.testing import (
    GatewayProcess,
    NeuronProcess,
    start_gateway_process,
    start_neuron_process,
)
from tests.faults.servers import gateway_config

NODE_TOKEN = "node-secret"
MODELS = [
    {"id": "m1", "memory_mb": 400.0, "context_length": 4096},
    {"id": "tiny", "memory_mb": 100.0, "context_length": 64},
]


@dataclass
class Stack:
    """The gateway, its neuron (token `NODE_TOKEN` on its admin routes)."""

    gateway: GatewayProcess
    neuron: NeuronProcess


@pytest.fixture(scope="package")
def stack() -> Iterator[Stack]:
    neuron = start_neuron_process(
        {
            "name": "a",
            "memory_mb": 2000.0,
            "token": NODE_TOKEN,
            "preload": ["m1", "tiny"],
            "fake": {"tokens_per_s": 100000.0, "models": MODELS},
        }
    )
    config = gateway_config({"a": neuron}, max_body_mb=1.0)
    config["neurons"][0]["token"] = NODE_TOKEN
    try:
        gateway = start_gateway_process(
            config, [{"id": "m1", "aliases": ["default"]}, {"id": "tiny"}]
        )
    except BaseException:
        neuron.stop()
        raise
    yield Stack(gateway, neuron)
    gateway.stop()
    neuron.stop()
