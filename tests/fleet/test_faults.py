"""Faults with real neuron processes: kill -9, a hung node, busy models, defragmentation."""

from __future__ import annotations

import os
import signal

import pytest

from cortex.config import ModelProfile
from cortex.errors import OverloadedError
from cortex.fleet.dispatch import Route
from cortex.gateway.metrics import GatewayMetrics

from ..helpers import chat, until
from .conftest import FleetFactory, neuron_config, start_all
from .helpers import loaded

pytestmark = pytest.mark.e2e


async def test_killed_node_is_down_within_two_polls_and_traffic_moves(
    make_fleet: FleetFactory,
) -> None:
    nodes = start_all({n: neuron_config(n) for n in "abc"})
    try:
        profile = [ModelProfile(id="m1", nodes=["a", "b", "c"])]
        fleet = await make_fleet(nodes, profile)
        # A second fleet that polls rarely: only a failed request can tell it a node died.
        slow = await make_fleet(nodes, profile, poll_interval_s=60.0)
        route = Route("m1")
        await fleet.complete(chat("m1"), route=route)
        assert route.node == "a"

        nodes["a"].kill()
        rounds = fleet.poller.rounds
        await until(lambda: fleet.poller.rounds >= rounds + 2)
        assert not fleet.snapshot().nodes["a"].up
        route = Route("m1")
        reply = await fleet.complete(chat("m1"), route=route)
        assert route.node == "b" and "on b" in reply["choices"][0]["message"]["content"]

        # The rarely polling fleet still thinks a and b are up: the request that finds them dead
        # moves on to the next candidate, and marks them down.
        nodes["b"].kill()
        assert slow.snapshot().nodes["a"].up and slow.snapshot().nodes["b"].up
        route = Route("m1")
        chunks = [c async for c in slow.stream(chat("m1"), route=route)]
        assert route.node == "c"
        assert [failure.split(":")[0] for failure in route.failures] == ["a", "b"]
        assert not slow.snapshot().nodes["a"].up and not slow.snapshot().nodes["b"].up
        assert chunks[-1].done
    finally:
        for node in nodes.values():
            node.stop()


async def test_hung_node_goes_down_and_comes_back_by_itself(make_fleet: FleetFactory) -> None:
    nodes = start_all({"a": neuron_config("a")})
    try:
        fleet = await make_fleet(nodes)
        assert fleet.snapshot().nodes["a"].up
        os.kill(nodes["a"].pid, signal.SIGSTOP)
        try:
            rounds = fleet.poller.rounds
            await until(lambda: fleet.poller.rounds >= rounds + 2)
            assert not fleet.snapshot().nodes["a"].up
        finally:
            os.kill(nodes["a"].pid, signal.SIGCONT)
        await until(lambda: fleet.snapshot().nodes["a"].up)
        reply = await fleet.complete(chat("m1"))
        assert "on a" in reply["choices"][0]["message"]["content"]
    finally:
        for node in nodes.values():
            node.stop()


async def test_a_model_with_requests_in_flight_is_never_evicted(make_fleet: FleetFactory) -> None:
    config = neuron_config("a", tokens_per_s=40.0)
    config["memory_mb"] = 500.0  # one model at a time
    nodes = start_all({"a": config})
    try:
        fleet = await make_fleet(nodes)
        stream = fleet.stream(chat("m1", "a reply long enough to still be running " * 3))
        first = await anext(stream)
        assert first.payload["choices"]
        with pytest.raises(OverloadedError) as refused:  # m1 is busy: no room for m2
            await fleet.complete(chat("m2"))
        assert refused.value.retry_after_s
        assert loaded(nodes["a"]) == {"m1"}
        rest = [chunk async for chunk in stream]
        assert rest[-1].done
        reply = await fleet.complete(chat("m2"))  # idle now: m1 makes room
        assert "This is m2 on a" in reply["choices"][0]["message"]["content"]
        assert loaded(nodes["a"]) == {"m2"}
    finally:
        for node in nodes.values():
            node.stop()


async def test_defrag_after_cycles_unloads_unpinned_idle_models(make_fleet: FleetFactory) -> None:
    nodes = start_all({"a": neuron_config("a")})
    try:
        profiles = [ModelProfile(id="m1", pinned=True)]
        fleet = await make_fleet(nodes, profiles, defrag_after_cycles=2)
        await until(lambda: loaded(nodes["a"]) == {"m1"})
        for model in ["m2", "m3", "m4"]:  # two evictions: two load/unload cycles
            await fleet.complete(chat(model))
        metrics = fleet.observer
        assert isinstance(metrics, GatewayMetrics)
        defrag = metrics.evictions.labels("m4", "a", "defrag")
        await until(lambda: defrag._value.get() == 1)
        assert loaded(nodes["a"]) == {"m1"}
        reply = await fleet.complete(chat("m4"))  # and the node serves on afterwards
        assert "m4 on a" in reply["choices"][0]["message"]["content"]
    finally:
        for node in nodes.values():
            node.stop()
