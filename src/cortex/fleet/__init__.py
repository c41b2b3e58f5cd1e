"""The control plane: a fleet of nodes behind one catalogue, with placement and eviction.

`Fleet` is the entry point (`Fleet.from_config(config)`; `cortex.embedded.embedded_fleet()` for
a neuron in this process); placement is the pure function `plan(snapshot, model, strategy)` over
the snapshot types of `cortex.fleet.state`. Nothing here imports the neuron or the gateway.
"""

from __future__ import annotations

from cortex.fleet.catalogue import CatalogueEntry
from cortex.fleet.clients import (
    NeuronClient,
    NodeClient,
    OpenAIServerClient,
    Timeouts,
    in_process_client,
)
from cortex.fleet.dispatch import Batch, Chunk, Route
from cortex.fleet.events import FleetObserver
from cortex.fleet.fleet import Fleet
from cortex.fleet.ledger import Lease
from cortex.fleet.placement import plan
from cortex.fleet.sampling import resolve_sampling
from cortex.fleet.state import (
    DeviceInfo,
    Eviction,
    FleetSnapshot,
    ModelOnNode,
    ModelPolicy,
    NodeSnapshot,
    Plan,
)

__all__ = [
    "Batch",
    "CatalogueEntry",
    "Chunk",
    "DeviceInfo",
    "Eviction",
    "Fleet",
    "FleetObserver",
    "FleetSnapshot",
    "Lease",
    "ModelOnNode",
    "ModelPolicy",
    "NeuronClient",
    "NodeClient",
    "NodeSnapshot",
    "OpenAIServerClient",
    "Plan",
    "Route",
    "Timeouts",
    "in_process_client",
    "plan",
    "resolve_sampling",
]
