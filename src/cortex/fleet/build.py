"""What a fleet is built from: clients for the nodes of cortex.toml, or one in-process neuron."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

from cortex.config import CortexConfig
from cortex.fleet.clients import (
    NeuronClient,
    NodeClient,
    OpenAIServerClient,
    Timeouts,
    in_process_client,
)

__all__ = ["clients_from_config", "embedded_neuron"]


def clients_from_config(config: CortexConfig) -> list[NodeClient]:
    """A client per `[[neurons]]` entry: a neuron, or an external OpenAI server (`kind`)."""
    g = config.gateway
    timeouts = Timeouts(
        connect_s=g.connect_timeout_s, request_s=g.request_timeout_s, load_s=g.load_timeout_s
    )
    clients: list[NodeClient] = []
    for node in config.neurons:
        kind = OpenAIServerClient if node.kind == "openai" else NeuronClient
        token = node.token.get_secret_value() if node.token else None
        clients.append(kind(node.name, node.endpoint, token=token, timeouts=timeouts))
    return clients


def embedded_neuron(
    harness: Any, name: str
) -> tuple[NodeClient, AbstractAsyncContextManager[Any], str]:
    """A neuron app in this process: its client, its lifespan and the default model's id.

    Args:
        harness: the neuron's harness; None for the engine over the default model search.
        name: the node's name.
    """
    # Imported here: the neuron sits beside the gateway, above the fleet, and only the embedded
    # mode needs it (the engine harness imports torch when it loads).
    from cortex.config import NeuronConfig
    from cortex.neuron.app import create_neuron_app
    from cortex.neuron.catalog import DEFAULT_MODEL_ID

    if harness is None:
        from cortex.neuron.engine_harness import EngineHarness

        harness = EngineHarness.from_config(NeuronConfig(name=name))
    app = create_neuron_app(harness, name=name)
    return in_process_client(name, app), app.router.lifespan_context(app), DEFAULT_MODEL_ID
