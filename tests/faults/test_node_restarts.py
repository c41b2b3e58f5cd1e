"""A neuron restarted in place comes back into the catalogue by itself within two poll
intervals, with its models' states read afresh (not remembered from before it died)."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import pytest

from cortex.fleet.clients import NeuronClient, Timeouts
from cortex.fleet.fleet import Fleet
from cortex.testing import start_neuron_process

from ..helpers import chat, until
from .servers import fake_neuron

pytestmark = pytest.mark.e2e

POLL_S = 0.5


async def test_a_restarted_neuron_is_back_within_two_polls_with_its_states_reread() -> None:
    node = start_neuron_process(fake_neuron("a", ["m1", "m2"]))
    port = urlsplit(node.url).port
    timeouts = Timeouts(connect_s=1.0, request_s=10.0, load_s=10.0)
    fleet = Fleet([NeuronClient("a", node.url, timeouts=timeouts)], poll_interval_s=POLL_S)
    await fleet.start()
    try:
        await fleet.complete(chat("m1"))
        assert fleet.snapshot().nodes["a"].models["m1"].state == "loaded"

        node.kill()
        await until(lambda: not fleet.snapshot().nodes["a"].up)
        assert {e.id: e.loaded_on for e in fleet.catalogue()} == {"m1": (), "m2": ()}

        # The same node comes back on the same address, serving m2 this time.
        config = fake_neuron("a", ["m1", "m2"])
        config["preload"] = ["m2"]
        node = await asyncio.to_thread(start_neuron_process, config, port=port)
        rounds = fleet.poller.rounds
        await until(lambda: fleet.snapshot().nodes["a"].up)
        assert fleet.poller.rounds - rounds <= 2
        await until(lambda: fleet.snapshot().nodes["a"].models["m2"].state == "loaded")
        states = {m.id: m.state for m in fleet.snapshot().nodes["a"].models.values()}
        assert states == {"m1": "available", "m2": "loaded"}
        assert {e.id: e.loaded_on for e in fleet.catalogue()} == {"m1": (), "m2": ("a",)}
        reply = await fleet.complete(chat("m2"))
        assert reply["choices"][0]["message"]["content"].startswith("This is m2 on a.")
    finally:
        await fleet.close()
        node.stop()
