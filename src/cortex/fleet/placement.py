"""Placement: where a model should run and what must be evicted first, as a pure function.

`plan(snapshot, model, strategy)` follows docs/gateway.md ("Placement"):

1. loaded on a healthy node: the least busy such node;
2. loading on one: join that load;
   (a node being drained only while no other node has it loaded);
3. else loadable (the node's registry has it, or the profile names a `source` any neuron can
   pull it from; the profile allows the node and the node is not cordoned): prefer a node
   where it fits without eviction, then the profile's order, then the most free memory;
4. else make room where it costs least across the whole fleet: `lru` chooses the node whose
   victims are the least recently used in the fleet, `priority` the lowest priority first,
   then LRU; pinned models and models with requests in flight are never victims.

Being pure, it answers dry runs (`Fleet.plan`, `GET /admin/placement`) exactly as it decides.
"""

from __future__ import annotations

from collections.abc import Collection

from cortex.errors import InsufficientMemoryError, ModelNotFoundError, OverloadedError
from cortex.fleet.eviction import choose_victims, eviction_cost
from cortex.fleet.state import FleetSnapshot, NodeSnapshot, Plan, Strategy

__all__ = ["plan"]


def plan(
    snapshot: FleetSnapshot,
    model: str,
    strategy: Strategy = "lru",
    *,
    exclude: Collection[str] = (),
) -> Plan:
    """Decide where `model` runs, without acting.

    Args:
        snapshot: the fleet now.
        model: a model id or alias.
        strategy: `lru` or `priority` (`[eviction] strategy`).
        exclude: node names to leave out (those that already failed this request).

    Raises:
        ModelNotFoundError: no node, up or down, knows the model.
        OverloadedError: nodes know it but none is up, or none can make room now.
        InsufficientMemoryError: it is larger than any allowed node could ever hold.
    """
    model_id = snapshot.resolve(model)
    if model_id is None:
        raise ModelNotFoundError(f"model {model!r} is not served by any node of the fleet")
    policy = snapshot.policy(model_id)
    order = {name: i for i, name in enumerate(snapshot.nodes)}
    nodes = [n for n in snapshot.nodes.values() if n.up and n.name not in exclude]
    here = [n for n in nodes if model_id in n.models]

    def rank(node: NodeSnapshot) -> tuple[int, int]:
        return (policy.preference(node.name), order[node.name])

    loaded = [n for n in here if n.models[model_id].state == "loaded"]
    staying = [n for n in loaded if not n.draining]
    if staying:  # a node being drained serves only until a copy elsewhere is ready
        loaded = staying
    if loaded:
        node = min(loaded, key=lambda n: (n.in_flight + n.waiting, *rank(n)))
        return Plan(model_id, node.name, "route", reason="loaded there; least busy such node")

    loading = [n for n in here if n.models[model_id].state == "loading"]
    if loading:
        node = min(loading, key=rank)
        return Plan(model_id, node.name, "wait", reason="loading there now; joining that load")

    candidates = [
        n
        for n in here
        if n.kind == "neuron"
        and not n.cordoned
        and n.models[model_id].state in ("available", "failed")
        and policy.allows(n.name)
    ]
    if not candidates and policy.source is not None:
        # Nobody has it: the profile's source lets any allowed neuron pull it on load.
        candidates = [
            n
            for n in nodes
            if n.kind == "neuron" and not n.cordoned and policy.allows(n.name)
            and model_id not in n.models
        ]  # fmt: skip
    if not candidates:
        where = [n.name for n in snapshot.nodes.values() if model_id in n.models]
        raise OverloadedError(
            f"model {model_id!r} is known on {', '.join(where)} but no healthy, uncordoned node "
            "allowed by its profile can serve it now",
            details={"model": model_id},
        )
    required = snapshot.required_mb(model_id) or 0.0

    def failed(node: NodeSnapshot) -> int:
        entry = node.models.get(model_id)
        return int(entry is None or entry.state == "failed")

    def free(node: NodeSnapshot) -> float:
        return node.memory_free_mb if node.memory_free_mb is not None else float("inf")

    fits = [n for n in candidates if free(n) >= required]
    if fits:
        node = min(fits, key=lambda n: (failed(n), *rank(n), -free(n)))
        return Plan(
            model_id,
            node.name,
            "load",
            required_mb=required,
            reason="fits without eviction; profile order, then most free memory",
            source=policy.source,
            quant=policy.quant,
        )

    options = []
    for node in candidates:
        victims = choose_victims(node, required, snapshot, strategy, for_priority=policy.priority)
        if victims is None:
            continue
        cost = eviction_cost(victims, strategy)
        options.append(
            ((cost, failed(node), len(victims), *rank(node), -free(node)), node, victims)
        )
    if options:
        _, node, victims = min(options, key=lambda option: option[0])
        return Plan(
            model_id,
            node.name,
            "load",
            evictions=victims,
            required_mb=required,
            reason=f"evicting {', '.join(v.model for v in victims)} ({strategy}): "
            "the cheapest room in the fleet",
            source=policy.source,
            quant=policy.quant,
        )

    capacities = [n.memory_capacity_mb for n in candidates if n.memory_capacity_mb is not None]
    if capacities and len(capacities) == len(candidates) and required > max(capacities):
        raise InsufficientMemoryError(
            f"model {model_id!r} needs {required:.0f} MB, more than any allowed node can hold "
            f"(largest: {max(capacities):.0f} MB)",
            required_mb=required,
            free_mb=max(free(n) for n in candidates),
        )
    raise OverloadedError(
        f"no room for model {model_id!r} ({required:.0f} MB) on any allowed node: what is "
        "loaded there is pinned, busy or of higher priority",
        details={"model": model_id, "required_mb": required},
    )
