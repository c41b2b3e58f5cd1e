"""What a fleet is built from: a client per node of cortex.toml (an in-process neuron is composed
above the fleet, in `cortex.embedded`)."""

from __future__ import annotations

from cortex.config import CortexConfig
from cortex.fleet.clients import (
    NeuronClient,
    NodeClient,
    OpenAIServerClient,
    Timeouts,
)

__all__ = ["clients_from_config"]


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
