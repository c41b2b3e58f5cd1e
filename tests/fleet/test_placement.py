"""Placement as a pure function of fleet snapshots: each rule of docs/gateway.md, one test."""

from __future__ import annotations

import pytest

from cortex.errors import InsufficientMemoryError, ModelNotFoundError, OverloadedError
from cortex.fleet.eviction import choose_victims, defrag_due, defrag_victims, evictable
from cortex.fleet.placement import plan
from cortex.fleet.state import FleetSnapshot, ModelOnNode, ModelPolicy, NodeSnapshot


def node(
    name: str,
    *models: ModelOnNode,
    free: float | None = 1000.0,
    capacity: float | None = 1000.0,
    up: bool = True,
    in_flight: int = 0,
    kind: str = "neuron",
    cycles: int = 0,
) -> NodeSnapshot:
    return NodeSnapshot(
        name=name,
        kind=kind,  # type: ignore[arg-type]
        up=up,
        models={m.id: m for m in models},
        memory_free_mb=free,
        memory_capacity_mb=capacity,
        in_flight=in_flight,
        load_cycles=cycles,
    )


def m(
    id: str,
    state: str = "available",
    memory: float = 400.0,
    used: float | None = None,
    in_flight: int = 0,
    pinned: bool = False,
) -> ModelOnNode:
    return ModelOnNode(
        id=id,
        state=state,  # type: ignore[arg-type]
        memory_mb=memory,
        last_used_at=used,
        in_flight=in_flight,
        pinned=pinned,
        context_length=2048,
    )


def fleet(
    *nodes: NodeSnapshot, policies: tuple[ModelPolicy, ...] = (), **kw: object
) -> FleetSnapshot:
    return FleetSnapshot(
        nodes={n.name: n for n in nodes},
        policies={p.id: p for p in policies},
        **kw,  # type: ignore[arg-type]
    )


def test_loaded_model_goes_to_the_least_busy_node() -> None:
    snap = fleet(
        node("a", m("x", "loaded"), in_flight=3),
        node("b", m("x", "loaded"), in_flight=1),
        node("c", m("x"), in_flight=0),
    )
    result = plan(snap, "x")
    assert (result.node, result.action, result.evictions) == ("b", "route", ())


def test_down_and_excluded_nodes_are_never_chosen() -> None:
    snap = fleet(
        node("a", m("x", "loaded"), up=False), node("b", m("x", "loaded")), node("c", m("x"))
    )
    assert plan(snap, "x").node == "b"
    assert plan(snap, "x", exclude={"b"}).node == "c"
    assert plan(snap, "x", exclude={"b"}).action == "load"


def test_a_loading_model_is_joined_not_loaded_twice() -> None:
    snap = fleet(node("a", m("x")), node("b", m("x", "loading")))
    result = plan(snap, "x")
    assert (result.node, result.action) == ("b", "wait")


def test_loadable_prefers_fit_then_profile_order_then_free_memory() -> None:
    # a: no room; b and c fit; the profile prefers c over b.
    snap = fleet(
        node("a", m("x"), m("y", "loaded", used=1.0), free=100.0),
        node("b", m("x"), free=900.0),
        node("c", m("x"), free=500.0),
        policies=(ModelPolicy("x", nodes=("a", "c", "b")),),
    )
    assert plan(snap, "x").node == "c"
    # without a profile: most free memory wins among those that fit.
    snap = fleet(
        node("a", m("x"), free=100.0), node("b", m("x"), free=900.0), node("c", m("x"), free=500.0)
    )
    assert plan(snap, "x").node == "b"


def test_profile_nodes_restrict_placement() -> None:
    snap = fleet(node("a", m("x")), node("b", m("x")), policies=(ModelPolicy("x", nodes=("b",)),))
    assert plan(snap, "x").node == "b"
    with pytest.raises(OverloadedError):
        plan(snap, "x", exclude={"b"})


def test_aliases_resolve_and_unknown_models_are_not_found() -> None:
    snap = fleet(node("a", m("x", "loaded")), policies=(ModelPolicy("x", aliases=("fast",)),))
    assert plan(snap, "fast").model == "x"
    with pytest.raises(ModelNotFoundError):
        plan(snap, "nope")


def test_lru_evicts_the_fleet_wide_least_recently_used_model() -> None:
    # Node a has most free memory, but the fleet's LRU model sits on b: b is chosen.
    snap = fleet(
        node("a", m("new"), m("p", "loaded", used=50.0), m("q", "loaded", used=60.0), free=200.0),
        node("b", m("new"), m("r", "loaded", used=10.0), m("s", "loaded", used=90.0), free=100.0),
    )
    result = plan(snap, "new", "lru")
    assert result.node == "b"
    assert [e.model for e in result.evictions] == ["r"]
    assert result.evictions[0].reason == "lru"


def test_lru_takes_victims_in_order_until_the_model_fits() -> None:
    snap = fleet(
        node(
            "a",
            m("big", memory=900.0),
            m("p", "loaded", used=3.0, memory=300.0),
            m("q", "loaded", used=1.0, memory=300.0),
            m("r", "loaded", used=2.0, memory=300.0),
            free=100.0,
        )
    )
    result = plan(snap, "big")
    assert [e.model for e in result.evictions] == ["q", "r", "p"]


def test_priority_evicts_lowest_priority_first_then_lru() -> None:
    policies = (
        ModelPolicy("new", priority=5),
        ModelPolicy("low", priority=1),
        ModelPolicy("mid", priority=3),
        ModelPolicy("mid2", priority=3),
    )
    snap = fleet(
        node("a", m("new"), m("mid", "loaded", used=1.0), m("mid2", "loaded", used=0.5), free=0.0),
        node("b", m("new"), m("low", "loaded", used=99.0), free=0.0, capacity=400.0),
        policies=policies,
    )
    result = plan(snap, "new", "priority")
    assert (result.node, [e.model for e in result.evictions]) == ("b", ["low"])
    # Among equal priorities, the least recently used goes first.
    result = plan(snap, "new", "priority", exclude={"b"})
    assert [e.model for e in result.evictions] == ["mid2"]


def test_priority_never_evicts_a_higher_priority_model_for_a_lower_one() -> None:
    policies = (ModelPolicy("new", priority=1), ModelPolicy("vip", priority=9))
    snap = fleet(node("a", m("new"), m("vip", "loaded", used=0.0), free=0.0), policies=policies)
    with pytest.raises(OverloadedError):
        plan(snap, "new", "priority")
    # Under lru, priority does not protect it.
    assert [e.model for e in plan(snap, "new", "lru").evictions] == ["vip"]


def test_pinned_and_in_flight_models_are_never_victims() -> None:
    snap = fleet(
        node(
            "a",
            m("new"),
            m("pin", "loaded", used=0.0, pinned=True),
            m("busy", "loaded", used=1.0, in_flight=1),
            m("cfgpin", "loaded", used=2.0),
            m("idle", "loaded", used=3.0),
            free=0.0,
        ),
        policies=(ModelPolicy("cfgpin", pinned=True),),
    )
    assert [e.model for e in plan(snap, "new").evictions] == ["idle"]
    busy_only = fleet(node("a", m("new"), m("busy", "loaded", in_flight=2), free=0.0))
    with pytest.raises(OverloadedError):
        plan(busy_only, "new")


def test_measured_memory_wins_over_profile_and_estimate() -> None:
    a = node("a", m("x", memory=900.0), free=1000.0)
    assert plan(fleet(a), "x", "lru").required_mb == 900.0
    with_profile = fleet(a, policies=(ModelPolicy("x", memory_mb=450.0),))
    assert plan(with_profile, "x").required_mb == 450.0
    measured = fleet(
        a, policies=(ModelPolicy("x", memory_mb=450.0),), measured_memory_mb={"x": 300.0}
    )
    assert plan(measured, "x").required_mb == 300.0


def test_too_big_for_any_node_is_insufficient_memory() -> None:
    snap = fleet(node("a", m("huge", memory=5000.0), free=1000.0, capacity=1000.0))
    with pytest.raises(InsufficientMemoryError) as info:
        plan(snap, "huge")
    assert info.value.required_mb == 5000.0


def test_failed_nodes_are_tried_last_and_external_servers_are_never_loaded() -> None:
    snap = fleet(node("a", m("x", "failed"), free=900.0), node("b", m("x"), free=500.0))
    assert plan(snap, "x").node == "b"
    ext = fleet(node("vllm", m("x", "loaded", memory=0.0), kind="openai"))
    assert plan(ext, "x").action == "route"
    ext_only = fleet(node("vllm", m("y", "loaded"), kind="openai"), node("a", m("x"), free=0.0))
    assert evictable(ext_only.nodes["vllm"], ext_only, "lru") == []


def test_choose_victims_returns_empty_when_it_fits_and_none_when_it_cannot() -> None:
    a = node("a", m("p", "loaded", memory=300.0), free=500.0)
    snap = fleet(a)
    assert choose_victims(a, 400.0, snap, "lru") == ()
    assert choose_victims(a, 900.0, snap, "lru") is None
    assert [v.model for v in choose_victims(a, 800.0, snap, "lru") or ()] == ["p"]


def test_defrag_is_due_after_enough_cycles_at_a_quiet_moment() -> None:
    quiet = node("a", m("p", "loaded"), m("q", "loaded", pinned=True), cycles=12)
    assert defrag_due(quiet, 0, 10)
    assert not defrag_due(quiet, 5, 10)
    assert not defrag_due(quiet, 0, 0)
    busy = node("a", m("p", "loaded", in_flight=1), cycles=12, in_flight=1)
    assert not defrag_due(busy, 0, 10)
    assert [v.model for v in defrag_victims(quiet, fleet(quiet))] == ["p"]
