"""Gateways for the tests: in-process over fake neuron apps, and real `cortex-gateway` processes
(`cortex.testing.start_gateway_process`) in front of real neurons, with the official SDKs."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import openai
import pytest
from starlette.applications import Starlette

from cortex.config import AuthConfig, FakeModel, ModelProfile, ModelsConfig
from cortex.fleet import Fleet, in_process_client
from cortex.fleet.transport import StreamingASGITransport
from cortex.gateway import GatewayMetrics, create_gateway_app
from cortex.neuron.app import create_neuron_app
from cortex.testing import (
    FakeHarness,
    GatewayProcess,
    NeuronProcess,
    start_gateway_process,
    start_neuron_process,
)

KEY = "sk-test-key"
ADMIN_KEY = "sk-test-admin"


@dataclass
class Local:
    """An in-process gateway over one in-process fake neuron (node `a`)."""

    client: httpx.AsyncClient
    fleet: Fleet
    harness: FakeHarness
    metrics: GatewayMetrics
    app: Starlette


async def local_gateway(
    models: list[FakeModel] | None = None,
    *,
    profiles: list[ModelProfile] | None = None,
    auth: AuthConfig | None = None,
    memory_mb: float = 2000.0,
    **harness: Any,
) -> tuple[Local, Any]:
    """Build and start one; returns it and an async closer."""
    fake = FakeHarness(
        models or [FakeModel(id="m1", memory_mb=400.0, context_length=256)],
        memory_mb=memory_mb,
        node="a",
        **harness,
    )
    neuron = create_neuron_app(fake, name="a")
    lifespan = neuron.router.lifespan_context(neuron)
    await lifespan.__aenter__()
    metrics = GatewayMetrics()
    fleet = Fleet(
        [in_process_client("a", neuron)],
        models=ModelsConfig(models=profiles or []),
        observer=metrics,
        poll_interval_s=0.2,
    )
    await fleet.start()
    app = create_gateway_app(fleet, auth=auth, metrics=metrics, keepalive_s=0.2)
    client = httpx.AsyncClient(
        transport=StreamingASGITransport(app), base_url="http://gateway", timeout=30
    )

    async def close() -> None:
        await client.aclose()
        await fleet.close()
        await lifespan.__aexit__(None, None, None)

    return Local(client, fleet, fake, metrics, app), close


@pytest.fixture
async def local() -> AsyncIterator[Local]:
    """An open in-process gateway with model `m1` (context 256) on node `a`."""
    gateway, close = await local_gateway()
    yield gateway
    await close()


@contextmanager
def engine_neuron(
    tmp_path_factory: pytest.TempPathFactory, name: str, **config: Any
) -> Iterator[NeuronProcess]:
    """A real engine neuron process on the CPU, node `name`, with these neuron.toml keys
    (`preload`, `models_dirs`, `kv_cache_mb`...); stopped on exit."""
    workdir = tmp_path_factory.mktemp(name)
    node_config = {"name": name, "device": "cpu", **config}
    with start_neuron_process(node_config, harness="engine", workdir=workdir) as node:
        yield node


@contextmanager
def gateway_over(
    name: str, node: NeuronProcess, models: Iterable[str] = (), *, timeout_s: float = 180.0
) -> Iterator[GatewayProcess]:
    """A real gateway in front of the real neuron `name`, once it lists every one of `models`
    (the neuron preloads them); stopped on exit."""
    gateway = start_gateway_process(
        {"gateway": {"poll_interval_s": 0.5}, "neurons": [{"name": name, "endpoint": node.url}]}
    )
    try:
        wanted, deadline = set(models), time.monotonic() + timeout_s
        while not wanted <= {
            m["id"] for m in httpx.get(f"{gateway.url}/v1/models", timeout=5).json()["data"]
        }:
            assert time.monotonic() < deadline, gateway.logs()[-4000:]
            time.sleep(0.2)
        yield gateway
    finally:
        gateway.stop()


def openai_client(gateway: GatewayProcess, timeout_s: float = 300.0) -> openai.OpenAI:
    """The official OpenAI SDK pointed at `gateway` (no retries: a failure shows as it is)."""
    return openai.OpenAI(
        base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=timeout_s
    )


def anthropic_client(gateway: GatewayProcess, timeout_s: float = 300.0) -> anthropic.Anthropic:
    """The official Anthropic SDK pointed at `gateway` (no retries)."""
    return anthropic.Anthropic(
        base_url=gateway.url, api_key="unused", max_retries=0, timeout=timeout_s
    )


@dataclass
class Remote:
    """A gateway process over a fake neuron process, with keys."""

    gateway: GatewayProcess
    neuron: NeuronProcess


@pytest.fixture(scope="module")
def remote() -> Iterator[Remote]:
    """`cortex-gateway` over one `cortex-neuron --harness fake` (models m1, m2), auth on."""
    neuron = start_neuron_process(
        {
            "name": "a",
            "memory_mb": 2000.0,
            "fake": {
                "tokens_per_s": 2000.0,
                "models": [
                    {"id": "m1", "memory_mb": 400.0, "context_length": 4096},
                    {"id": "m2", "memory_mb": 400.0, "context_length": 4096},
                ],
            },
        }
    )
    config = {
        "gateway": {"poll_interval_s": 0.5},
        "auth": {"keys": [KEY], "admin_keys": [ADMIN_KEY]},
        "neurons": [{"name": "a", "endpoint": neuron.url}],
    }
    try:
        gateway = start_gateway_process(config)
    except BaseException:
        neuron.stop()
        raise
    yield Remote(gateway, neuron)
    gateway.stop()
    neuron.stop()
