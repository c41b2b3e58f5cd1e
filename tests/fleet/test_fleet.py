"""The Fleet over three real fake-harness neurons: loads, reuse, eviction order, pins, failures."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from cortex.config import ModelProfile
from cortex.errors import ModelNotFoundError, OverloadedError
from cortex.fleet.dispatch import Route
from cortex.gateway.metrics import GatewayMetrics
from cortex.testing import NeuronProcess

from ..helpers import chat, until
from .conftest import FleetFactory
from .helpers import loaded, node_status

pytestmark = pytest.mark.e2e


def loads_started(node: NeuronProcess) -> int:
    return int(node_status(node)["loads_started"])


def evictions(metrics: object) -> list[tuple[str, str, str]]:
    """(model, node, reason) of every eviction the fleet reported, from its metrics."""
    assert isinstance(metrics, GatewayMetrics)
    out = []
    for family in metrics.registry.collect():
        if family.name == "cortex_evictions":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    labels = sample.labels
                    out += [(labels["model"], labels["node"], labels["reason"])] * int(sample.value)
    return out


async def test_cold_load_then_reuse(
    nodes: dict[str, NeuronProcess], make_fleet: FleetFactory
) -> None:
    fleet = await make_fleet(nodes, [ModelProfile(id="m1", nodes=["b"])])
    before = loads_started(nodes["b"])
    assert fleet.plan("m1").action == "load"
    route = Route("m1")
    reply = await fleet.complete(chat("m1"), route=route)
    assert route.node == "b"
    assert "This is m1 on b" in reply["choices"][0]["message"]["content"]
    assert fleet.plan("m1").action == "route"
    again = await fleet.complete(chat("m1", "again"))
    assert "You said: again" in again["choices"][0]["message"]["content"]
    assert loads_started(nodes["b"]) == before + 1
    assert loaded(nodes["b"]) == {"m1"}


async def test_lru_evicts_the_fleet_wide_least_recently_used(
    nodes: dict[str, NeuronProcess], make_fleet: FleetFactory
) -> None:
    profiles = [
        ModelProfile(id="m1", nodes=["a"]),
        ModelProfile(id="m2", nodes=["a"]),
        ModelProfile(id="m3", nodes=["b"]),
        ModelProfile(id="m4", nodes=["b"]),
        ModelProfile(id="m5", nodes=["a", "b"]),
        ModelProfile(id="m6", nodes=["a", "b"]),
    ]
    fleet = await make_fleet({n: nodes[n] for n in "ab"}, profiles, strategy="lru")
    for model in ["m3", "m1", "m4", "m2"]:  # m3 is used least recently, then m1
        await fleet.complete(chat(model))
    assert fleet.plan("m5").evictions[0].model == "m3"
    await fleet.complete(chat("m5"))
    await fleet.complete(chat("m6"))
    assert evictions(fleet.observer) == [("m3", "b", "lru"), ("m1", "a", "lru")]
    assert loaded(nodes["a"]) == {"m2", "m6"}
    assert loaded(nodes["b"]) == {"m4", "m5"}


async def test_priority_evicts_lowest_priority_first_and_never_a_higher_one(
    nodes: dict[str, NeuronProcess], make_fleet: FleetFactory
) -> None:
    profiles = [
        ModelProfile(id="m1", nodes=["a"], priority=1),
        ModelProfile(id="m2", nodes=["a"], priority=5),
        ModelProfile(id="m3", nodes=["a"], priority=3),
        ModelProfile(id="m4", nodes=["a"], priority=0),
    ]
    fleet = await make_fleet({"a": nodes["a"]}, profiles, strategy="priority")
    await fleet.complete(chat("m2"))
    await fleet.complete(chat("m1"))  # most recently used, but the lowest priority
    await fleet.complete(chat("m3"))
    assert loaded(nodes["a"]) == {"m2", "m3"}
    assert evictions(fleet.observer) == [("m1", "a", "priority")]
    with pytest.raises(OverloadedError):  # m4 (priority 0) may not push out m2 or m3
        await fleet.complete(chat("m4"))
    assert loaded(nodes["a"]) == {"m2", "m3"}


async def test_pinned_model_survives_pressure(
    nodes: dict[str, NeuronProcess], make_fleet: FleetFactory
) -> None:
    profiles = [ModelProfile(id="m1", nodes=["c"], pinned=True)]
    profiles += [ModelProfile(id=m, nodes=["c"]) for m in ["m2", "m3", "m4", "m5"]]
    fleet = await make_fleet({"c": nodes["c"]}, profiles)
    await until(lambda: "m1" in loaded(nodes["c"]))  # pinned models load at start
    for model in ["m2", "m3", "m4", "m5", "m2"]:
        await fleet.complete(chat(model))
        assert "m1" in loaded(nodes["c"])
    assert {m for m, _, _ in evictions(fleet.observer)} == {"m2", "m3", "m4", "m5"}


async def test_concurrent_requests_for_a_cold_model_cause_one_load(
    nodes: dict[str, NeuronProcess], make_fleet: FleetFactory
) -> None:
    fleet = await make_fleet(nodes, [ModelProfile(id="m2", nodes=["a"])])
    metrics = fleet.observer
    assert isinstance(metrics, GatewayMetrics)
    before = loads_started(nodes["a"])
    replies = await asyncio.gather(*(fleet.complete(chat("m2", f"n{i}")) for i in range(20)))
    assert [r["choices"][0]["message"]["content"].endswith(f"n{i}") for i, r in enumerate(replies)]
    assert loads_started(nodes["a"]) == before + 1
    assert metrics.model_loads.labels("m2", "a", "ok")._value.get() == 1


async def test_injected_load_failure_falls_through_to_the_next_candidate(
    nodes: dict[str, NeuronProcess], make_fleet: FleetFactory
) -> None:
    fleet = await make_fleet(nodes, [ModelProfile(id="bad", nodes=["a", "b"])])
    assert fleet.plan("bad").node == "a"
    route = Route("bad")
    reply = await fleet.complete(chat("bad"), route=route)
    assert route.node == "b"
    assert route.failures and route.failures[0].startswith("a: ")
    assert "This is bad on b" in reply["choices"][0]["message"]["content"]
    metrics = fleet.observer
    assert isinstance(metrics, GatewayMetrics)
    assert metrics.model_loads.labels("bad", "a", "error")._value.get() == 1
    assert metrics.model_loads.labels("bad", "b", "ok")._value.get() == 1


async def test_a_model_nobody_serves_is_not_found(
    nodes: dict[str, NeuronProcess], make_fleet: FleetFactory
) -> None:
    fleet = await make_fleet(nodes)
    with pytest.raises(ModelNotFoundError):
        await fleet.complete(chat("no-such-model"))
    assert {e.id for e in fleet.catalogue()} == {"m1", "m2", "m3", "m4", "m5", "m6", "bad"}


async def test_dry_run_and_admin_load_unload(
    nodes: dict[str, NeuronProcess], make_fleet: FleetFactory
) -> None:
    fleet = await make_fleet(nodes)
    plan = await fleet.load("m3", node="c")
    assert plan.node == "c" and loaded(nodes["c"]) == {"m3"}
    assert fleet.plan("m3").action == "route"
    assert await fleet.unload("m3") == ["c"]
    assert loaded(nodes["c"]) == set()


async def test_external_openai_server_joins_routing_without_lifecycle(
    nodes: dict[str, NeuronProcess], make_fleet: FleetFactory
) -> None:
    import httpx

    from cortex.errors import ConflictError
    from cortex.fleet import Fleet, OpenAIServerClient

    # A neuron with m4 loaded stands in for vLLM: only its OpenAI routes are used.
    httpx.post(f"{nodes['c'].url}/models/load", json={"model": "m4"}, timeout=30)
    before = loads_started(nodes["c"])
    async with Fleet([OpenAIServerClient("vllm", nodes["c"].url)], poll_interval_s=0.25) as fleet:
        [entry] = fleet.catalogue()
        assert (entry.id, entry.loaded_on, entry.loadable_on) == ("m4", ("vllm",), ())
        assert entry.context_length == 2048
        route = Route("m4")
        reply = await fleet.complete(chat("m4"), route=route)
        assert (
            route.node == "vllm" and "This is m4 on c" in reply["choices"][0]["message"]["content"]
        )
        chunks = [c async for c in fleet.stream(chat("m4", "streamed"))]
        assert chunks[-1].done
        assert await fleet.count_tokens("m4", [{"role": "user", "content": "one two"}]) == 5
        with pytest.raises(ModelNotFoundError):
            await fleet.complete(chat("m1"))  # not listed there, and it cannot load it
        with pytest.raises(ConflictError):
            await fleet.clients["vllm"].unload("m4")
    assert loads_started(nodes["c"]) == before  # no lifecycle call ever reached it


async def test_a_profiles_quant_travels_with_the_load_to_the_node(
    nodes: dict[str, NeuronProcess], make_fleet: FleetFactory
) -> None:
    fleet = await make_fleet(
        nodes, [ModelProfile(id="m1", nodes=["a"], quant="int4"), ModelProfile(id="m2")]
    )
    assert fleet.plan("m1").to_dict()["quant"] == "int4"  # the dry run says so too
    await fleet.complete(chat("m1"))
    await fleet.complete(chat("m2"))
    held = {
        e["id"]: e["quant"]
        for node in nodes.values()
        for e in httpx.get(f"{node.url}/models", timeout=10).json()["data"]
        if e["state"] == "loaded"
    }
    assert held == {"m1": "int4", "m2": "none"}  # no quant in its profile: the node's own
