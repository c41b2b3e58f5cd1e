"""Fixtures of the neuron tests: in-process apps over the fake harness, and their clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import openai
import pytest
from starlette.applications import Starlette

from cortex.config import FakeModel
from cortex.neuron import create_neuron_app
from cortex.testing import FakeHarness

MODELS = [
    FakeModel(id="small", memory_mb=100, context_length=64),
    FakeModel(id="medium", memory_mb=300, context_length=4096),
    FakeModel(id="org/large", memory_mb=800, context_length=4096),
]


class Neuron:
    """An app over a fake harness, with an httpx client and an OpenAI client on it."""

    def __init__(self, app: Starlette, harness: FakeHarness, client: httpx.AsyncClient) -> None:
        self.app = app
        self.harness = harness
        self.client = client
        self.openai = openai.AsyncOpenAI(
            base_url="http://neuron/v1", api_key="unused", http_client=client, max_retries=0
        )

    async def load(self, model: str, token: str | None = None) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return await self.client.post("/models/load", json={"model": model}, headers=headers)

    async def metrics(self) -> str:
        return (await self.client.get("/metrics")).text


NeuronFactory = Callable[..., AbstractAsyncContextManager[Neuron]]


@pytest.fixture
def make_neuron() -> NeuronFactory:
    """`async with make_neuron(memory_mb=..., token=..., **fake_options) as neuron:`."""

    @asynccontextmanager
    async def factory(
        *, token: str | None = None, models: list[FakeModel] | None = None, **options: Any
    ) -> AsyncIterator[Neuron]:
        options.setdefault("memory_mb", 1000)
        harness = FakeHarness(models or MODELS, node="test-node", **options)
        app = create_neuron_app(harness, name="test-node", token=token, drain_timeout_s=5)
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://neuron") as client,
        ):
            yield Neuron(app, harness, client)

    return factory


@pytest.fixture
async def neuron(make_neuron: NeuronFactory) -> AsyncIterator[Neuron]:
    """A fake neuron with `small` and `medium` loaded (1000 MB cap, fast tokens)."""
    async with make_neuron(tokens_per_s=2000) as neuron:
        for model in ("small", "medium"):
            assert (await neuron.load(model)).status_code == 200
        yield neuron
