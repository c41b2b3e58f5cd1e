"""Polling costs what changed: a neuron answers its unchanged `/status` and `/models` with 304
(no body), and the client hands the fleet the very same snapshot, which it does not re-plan."""

from __future__ import annotations

import httpx

from cortex.fleet.clients import NeuronClient, in_process_client
from cortex.neuron.app import create_neuron_app
from cortex.testing import FakeHarness, start_neuron_process

from .conftest import neuron_config


async def test_an_unchanged_neuron_answers_304_and_the_snapshot_is_reused() -> None:
    neuron = start_neuron_process(neuron_config("a"))
    try:
        client = NeuronClient("a", neuron.url)
        first = await client.fetch()
        assert await client.fetch() is first  # nothing changed: both polls were 304
        assert "devices" in httpx.get(f"{neuron.url}/status").json()  # telemetry, not in the tag
        etag = httpx.get(f"{neuron.url}/models").headers["etag"]
        answer = httpx.get(f"{neuron.url}/models", headers={"if-none-match": etag})
        assert (answer.status_code, answer.content) == (304, b"")
        await client.load("m1")
        changed = await client.fetch()
        assert changed is not first and changed.models["m1"].state == "loaded"
        await client.aclose()
    finally:
        neuron.stop()


async def test_an_in_process_neuron_is_polled_conditionally_too() -> None:
    app = create_neuron_app(FakeHarness(node="a"), name="a")
    async with app.router.lifespan_context(app):
        client = in_process_client("a", app)
        await client.fetch()  # the harness may still be settling (its preload)
        second = await client.fetch()
        assert await client.fetch() is second
        await client.aclose()
