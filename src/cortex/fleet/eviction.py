"""Eviction policy: which idle, unpinned models leave a node to make room, and when to defragment.

Pure functions over snapshots; the `Fleet` carries out what they decide. A model is a candidate
victim only when it is loaded, idle (nothing in flight), unpinned (neither by the node nor by
its profile), on a node with a lifecycle (never on an external `openai` server), and, under the
`priority` strategy, of no higher priority than the model it makes room for.
"""

from __future__ import annotations

from collections.abc import Sequence

from cortex.fleet.state import Eviction, FleetSnapshot, ModelOnNode, NodeSnapshot, Strategy

__all__ = [
    "choose_victims",
    "defrag_due",
    "defrag_victims",
    "evictable",
    "eviction_cost",
    "victim_key",
]


def victim_key(
    model: ModelOnNode, snapshot: FleetSnapshot, strategy: Strategy
) -> tuple[float, ...]:
    """Sort key of a victim: smaller leaves first (LRU; priority first under `priority`).

    A model never used sorts as the least recently used.
    """
    last_used = model.last_used_at if model.last_used_at is not None else float("-inf")
    if strategy == "priority":
        return (float(snapshot.policy(model.id).priority), last_used)
    return (last_used,)


def evictable(
    node: NodeSnapshot,
    snapshot: FleetSnapshot,
    strategy: Strategy,
    *,
    for_priority: int | None = None,
) -> list[ModelOnNode]:
    """The models of `node` that may be evicted, in the order they should go.

    Args:
        node: the node to make room on.
        snapshot: the fleet (for the models' policies).
        strategy: `lru` or `priority`.
        for_priority: the priority of the model that needs the room; under `priority`, models
            of higher priority are never offered.
    """
    if node.kind != "neuron":
        return []
    victims = []
    for model in node.models.values():
        policy = snapshot.policy(model.id)
        if model.state != "loaded" or model.in_flight > 0 or model.pinned or policy.pinned:
            continue
        if strategy == "priority" and for_priority is not None and policy.priority > for_priority:
            continue
        victims.append(model)
    victims.sort(key=lambda m: (victim_key(m, snapshot, strategy), m.id))
    return victims


def choose_victims(
    node: NodeSnapshot,
    required_mb: float,
    snapshot: FleetSnapshot,
    strategy: Strategy,
    *,
    for_priority: int | None = None,
) -> tuple[Eviction, ...] | None:
    """The fewest victims, taken in eviction order, that free `required_mb` on `node`.

    Returns an empty tuple when the model fits already, None when it cannot fit even with
    every evictable model gone.
    """
    free = node.memory_free_mb
    if free is None or free >= required_mb:
        return ()
    if node.memory_capacity_mb is not None and required_mb > node.memory_capacity_mb:
        return None
    chosen: list[Eviction] = []
    for model in evictable(node, snapshot, strategy, for_priority=for_priority):
        if free >= required_mb:
            break
        memory = model.memory_mb or 0.0
        if memory <= 0:
            continue
        chosen.append(
            Eviction(
                node=node.name,
                model=model.id,
                memory_mb=memory,
                reason=strategy,
                last_used_at=model.last_used_at,
                priority=snapshot.policy(model.id).priority,
            )
        )
        free += memory
    return tuple(chosen) if free >= required_mb else None


def defrag_victims(node: NodeSnapshot, snapshot: FleetSnapshot) -> tuple[Eviction, ...]:
    """Every unpinned idle model of `node`: what a defragmentation unloads."""
    return tuple(
        Eviction(
            node=node.name,
            model=model.id,
            memory_mb=model.memory_mb or 0.0,
            reason="defrag",
            last_used_at=model.last_used_at,
            priority=snapshot.policy(model.id).priority,
        )
        for model in evictable(node, snapshot, "lru")
    )


def defrag_due(node: NodeSnapshot, cycles_at_last_defrag: int, defrag_after_cycles: int) -> bool:
    """Whether `node` has done enough load/unload cycles to defragment, and is quiet now.

    Args:
        node: the node.
        cycles_at_last_defrag: its `load_cycles` when it was last defragmented (0 at start).
        defrag_after_cycles: the threshold from `[eviction]` (0 turns it off).
    """
    if defrag_after_cycles <= 0 or node.kind != "neuron" or not node.up:
        return False
    if node.in_flight > 0 or node.waiting > 0:
        return False
    if any(m.state in ("loading", "unloading") for m in node.models.values()):
        return False
    return node.load_cycles - cycles_at_last_defrag >= defrag_after_cycles


def eviction_cost(victims: Sequence[Eviction], strategy: Strategy) -> tuple[float, ...]:
    """How much a set of victims costs: the key of its most valuable member (smaller is cheaper).

    Comparing nodes by this cost makes the fleet-wide least recently used model (or, under
    `priority`, the lowest priority one) leave first, whichever node it is on.
    """
    if not victims:
        return (float("-inf"),)
    keys = []
    for victim in victims:
        last_used = victim.last_used_at if victim.last_used_at is not None else float("-inf")
        keys.append((float(victim.priority), last_used) if strategy == "priority" else (last_used,))
    return max(keys)
