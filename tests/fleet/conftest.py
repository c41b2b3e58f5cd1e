"""A fleet of real `cortex-neuron --harness fake` processes on free ports of 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from cortex.config import ModelProfile, ModelsConfig
from cortex.fleet.clients import NeuronClient, Timeouts
from cortex.fleet.fleet import Fleet
from cortex.gateway.metrics import GatewayMetrics
from cortex.testing import NeuronProcess, start_neuron_process

POLL_S = 0.25
MODELS = ["m1", "m2", "m3", "m4", "m5", "m6", "bad"]


def neuron_config(name: str, **fake: Any) -> dict[str, Any]:
    """A fake neuron of 1000 MB holding two 400 MB models at a time; `bad` fails on node a."""
    fake.setdefault("load_s", 0.2)
    fake.setdefault("tokens_per_s", 2000.0)
    fake.setdefault("fail_load", ["bad"] if name == "a" else [])
    fake.setdefault(
        "models", [{"id": m, "memory_mb": 400.0, "context_length": 2048} for m in MODELS]
    )
    return {"name": name, "memory_mb": 1000.0, "fake": fake}


def start_all(configs: dict[str, dict[str, Any]]) -> dict[str, NeuronProcess]:
    """Start several neurons at once (each takes about a second to import and bind)."""
    with ThreadPoolExecutor(len(configs)) as pool:
        futures = {n: pool.submit(start_neuron_process, c) for n, c in configs.items()}
        return {n: f.result() for n, f in futures.items()}


@pytest.fixture(scope="module")
def trio() -> Iterator[dict[str, NeuronProcess]]:
    """Three fake neurons a, b, c, shared by a module's tests (reset before each test)."""
    nodes = start_all({n: neuron_config(n) for n in "abc"})
    yield nodes
    for node in nodes.values():
        node.stop()


def unload_everything(nodes: dict[str, NeuronProcess]) -> None:
    """Put every node back to nothing loaded."""
    with httpx.Client(timeout=30) as client:
        for node in nodes.values():
            for entry in client.get(f"{node.url}/models").json()["data"]:
                if entry["state"] in ("loaded", "loading", "failed"):
                    client.post(f"{node.url}/models/unload", json={"model": entry["id"]})


@pytest.fixture
def nodes(trio: dict[str, NeuronProcess]) -> dict[str, NeuronProcess]:
    """The three neurons, with nothing loaded."""
    unload_everything(trio)
    return trio


FleetFactory = Callable[..., Awaitable[Fleet]]


@pytest.fixture
async def make_fleet() -> AsyncIterator[FleetFactory]:
    """Build (and start) fleets over given neurons; all closed at the end of the test."""
    fleets: list[Fleet] = []

    async def make(
        nodes: dict[str, NeuronProcess],
        profiles: Sequence[ModelProfile] = (),
        **kwargs: Any,
    ) -> Fleet:
        timeouts = Timeouts(connect_s=1.0, request_s=30.0, load_s=30.0)
        clients = [NeuronClient(n, p.url, timeouts=timeouts) for n, p in nodes.items()]
        kwargs.setdefault("poll_interval_s", POLL_S)
        kwargs.setdefault("load_timeout_s", 30.0)
        kwargs.setdefault("observer", GatewayMetrics())
        fleet = Fleet(clients, models=ModelsConfig(models=list(profiles)), **kwargs)
        await fleet.start()
        fleets.append(fleet)
        return fleet

    yield make
    for fleet in fleets:
        await fleet.close()
