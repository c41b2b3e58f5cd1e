"""Test helpers: a fake neuron harness, and real neuron and gateway processes on free ports.

`FakeHarness` (`cortex.testing.fake`) behaves like the engine harness without a model, for the
gateway's tests and users' own; `start_neuron_process` (`cortex.testing.processes`) runs a real
`cortex-neuron` (fake harness by default) on a free port of 127.0.0.1, `start_gateway_process` a
real `cortex-gateway` in front of such neurons; `FakeNodeClient` (`cortex.testing.nodes`) is a
node held in memory, for a `Fleet` of a hundred nodes in one process.
"""

from __future__ import annotations

from cortex.testing.fake import DEFAULT_FAKE_MODELS, FakeHarness, FakeRunner, fake_tokens
from cortex.testing.nodes import FakeNodeClient
from cortex.testing.processes import (
    GatewayProcess,
    NeuronProcess,
    free_port,
    start_gateway_process,
    start_neuron_process,
    toml_dumps,
)

__all__ = [
    "DEFAULT_FAKE_MODELS",
    "FakeHarness",
    "FakeNodeClient",
    "FakeRunner",
    "GatewayProcess",
    "NeuronProcess",
    "fake_tokens",
    "free_port",
    "start_gateway_process",
    "start_neuron_process",
    "toml_dumps",
]
