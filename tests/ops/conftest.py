"""An operator's fleet for the ops tests: a real `cortex-gateway` (with keys) over two real
fake-harness neurons `a` and `b`, shared by the package's tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from cortex.testing import GatewayProcess, NeuronProcess, start_gateway_process

from ..faults.servers import ADMIN_KEY, fake_neuron, gateway_config, start_neurons

LONG_ID = "example-org/a-model-id-far-longer-than-any-terminal-table-column-would-allow-v1"
MODELS = ["m1", "m2", LONG_ID]


@dataclass
class Ops:
    """The gateway and its neurons."""

    gateway: GatewayProcess
    neurons: dict[str, NeuronProcess]

    @property
    def env(self) -> dict[str, str]:
        """What `cortex` reads instead of flags."""
        return {"CORTEX_URL": self.gateway.url, "CORTEX_ADMIN_KEY": ADMIN_KEY}


@pytest.fixture(scope="package")
def ops() -> Iterator[Ops]:
    neurons = start_neurons(
        {n: fake_neuron(n, MODELS, memory_mb=1000.0, tokens_per_s=500.0) for n in "ab"}
    )
    try:
        gateway = start_gateway_process(
            gateway_config(neurons, poll_interval_s=0.5),
            [{"id": "m1", "nodes": ["a", "b"]}, {"id": "m2"}, {"id": LONG_ID}],
        )
    except BaseException:
        for neuron in neurons.values():
            neuron.stop()
        raise
    yield Ops(gateway, neurons)
    gateway.stop()
    for neuron in neurons.values():
        neuron.stop()
