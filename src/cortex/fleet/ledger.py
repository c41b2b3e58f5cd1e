"""The fleet's ledger: each node's last poll, and what the gateway knows first-hand on top of it.

Polls are up to an interval old; the gateway itself knows at once which requests it sent where
and when they ended, which loads and evictions it has under way and how much memory a loading
model will take. `Ledger.snapshot()` lays that knowledge over the polled state, so placement
never decides on a view older than the gateway's own last action.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import replace

from cortex.fleet.clients import NodeClient
from cortex.fleet.state import FleetSnapshot, ModelOnNode, ModelPolicy, ModelState, NodeSnapshot

__all__ = ["Key", "Lease", "Ledger"]

Key = tuple[str, str]
"""(model, node)."""

_Narrowed = tuple[
    NodeSnapshot, ModelOnNode | None, tuple[bool, bool, int, float | None], NodeSnapshot
]
"""A node as polled, its entry for one model and our overlay, and the view made of them."""


class Ledger:
    """Node state as polled, and the gateway's own requests, loads and evictions.

    Args:
        clients: the nodes (each starts down until its first poll answers).
        policies: the models' placement policies by id.
    """

    def __init__(self, clients: Sequence[NodeClient], policies: Mapping[str, ModelPolicy]) -> None:
        self.nodes: dict[str, NodeSnapshot] = {
            c.name: NodeSnapshot(name=c.name, kind=c.kind, endpoint=c.endpoint, up=False)
            for c in clients
        }
        self.policies = policies
        self.in_flight: Counter[Key] = Counter()
        self.last_used: dict[Key, float] = {}
        self.released_at: dict[Key, float] = {}
        self.loads: dict[Key, asyncio.Task[None]] = {}
        self.reserved_mb: dict[Key, float] = {}
        self.evicting: set[Key] = set()
        self.measured_mb: dict[str, float] = {}
        self.changed_at: dict[str, float] = {}
        self.polled_at: dict[str, float] = {}
        self.cordoned: set[str] = set()
        """Nodes where no new load is placed (`Fleet.cordon`, `Fleet.drain`)."""
        self.draining: set[str] = set()
        """Nodes being emptied: routed to only while no other node has the model."""
        self.alive_at: dict[str, float] = {}
        """When each node last sent us inference bytes (monotonic): proof of life between polls."""
        self._narrowed: dict[Key, _Narrowed] = {}
        """Per (node, model), the last narrowed view of the node and what it was made from."""

    def policy(self, model: str) -> ModelPolicy:
        """The placement policy of `model` (a default one when it has no profile)."""
        return self.policies.get(model) or ModelPolicy(id=model)

    # -- requests ---------------------------------------------------------------------------------

    def hold(self, key: Key) -> None:
        """A request of ours is now bound to (model, node)."""
        self.in_flight[key] += 1

    def release(self, key: Key) -> None:
        """That request ended: the model was used now."""
        self.in_flight[key] -= 1
        if self.in_flight[key] <= 0:
            del self.in_flight[key]
        self.last_used[key] = time.time()
        self.released_at[key] = time.monotonic()

    # -- node state -------------------------------------------------------------------------------

    def record(self, name: str, snapshot: NodeSnapshot, started_at: float) -> bool:
        """Take a poll's answer (asked at `started_at`, monotonic); False when it is stale."""
        if started_at < self.changed_at.get(name, 0.0):
            return False  # asked before our own load or unload there ended
        seen = self.nodes[name].models
        self.nodes[name] = replace(snapshot, up=True, error=None, last_seen_at=time.time())
        self.polled_at[name] = started_at
        if snapshot.models is not seen:  # an unchanged node (a 304) costs nothing per model
            for model in snapshot.models.values():
                if model.state == "loaded" and model.memory_mb:
                    self.measured_mb[model.id] = model.memory_mb
        return True

    def down(self, name: str, reason: str) -> bool:
        """Mark a node down; True when it was up until now."""
        previous = self.nodes[name]
        self.nodes[name] = replace(previous, up=False, error=reason)
        return previous.up

    def set_state(self, node: str, model: str, state: ModelState) -> None:
        """Our own load or unload there ended: the model is in `state` now."""
        snap = self.nodes[node]
        entry = snap.models.get(model)
        if entry is None or entry.state == state:
            return
        models = dict(snap.models)
        models[model] = replace(entry, state=state)
        freed = (entry.memory_mb or 0.0) if state == "available" else 0.0
        free = snap.memory_free_mb + freed if snap.memory_free_mb is not None else None
        self.nodes[node] = replace(snap, models=models, memory_free_mb=free)
        self.changed_at[node] = time.monotonic()

    # -- routing ----------------------------------------------------------------------------------

    def least_busy(self, model: str, exclude: Collection[str] = ()) -> str | None:
        """The node placement routes `model` to when a copy is loaded (its first rule: the
        least busy healthy node where it is loaded, one being drained only when no other has
        it; then the profile's order, then cortex.toml's), read from the ledger without
        building a view; None when no node has it loaded (placement decides the rest).

        This is every warm request's decision, so it costs only the nodes that hold the model.
        """
        policy = self.policy(model)
        best: tuple[bool, int, int, int] | None = None
        chosen: str | None = None
        for order, (name, node) in enumerate(self.nodes.items()):
            entry = node.models.get(model)
            if (
                entry is None
                or entry.state != "loaded"
                or not node.up
                or name in exclude
                or (model, name) in self.evicting
            ):
                continue
            ours = sum(n for (_, held_on), n in self.in_flight.items() if held_on == name)
            busy = max(node.in_flight, ours) + node.waiting
            rank = (name in self.draining, busy, policy.preference(name), order)
            if best is None or rank < best:
                best, chosen = rank, name
        return chosen

    # -- the view ---------------------------------------------------------------------------------

    def snapshot(self, *, model: str | None = None, narrow: bool = False) -> FleetSnapshot:
        """The fleet now: polled state with the gateway's own knowledge laid over it.

        Loads under way show as `loading` (their memory reserved), evictions as `unloading`;
        in-flight counts are the larger of the node's and ours (the node's is ignored when it
        was polled before our last request there ended); last use is the later of both.

        Args:
            model: only the nodes that hold or could hold this model (every node when its
                profile names a `source`, since any neuron may pull it): what placing one
                request needs, at a cost that does not grow with the rest of the fleet.
            narrow: and of each node's models only `model` (node-level figures stay whole
                but free memory): enough to route to a loaded copy or join a load, not to
                plan a load.
        """
        items: Iterable[tuple[str, NodeSnapshot]] = self.nodes.items()
        if model is not None and self.policy(model).source is None:
            items = [(name, node) for name, node in items if model in node.models]
        only = model if narrow else None
        nodes = {name: self._node(name, node, only) for name, node in items}
        return FleetSnapshot(
            nodes=nodes,
            policies=self.policies,
            measured_memory_mb=dict(self.measured_mb),
            now=time.time(),
        )

    def _node(self, name: str, node: NodeSnapshot, only: str | None = None) -> NodeSnapshot:
        models: dict[str, ModelOnNode] = {}
        reserved = 0.0
        polled = self.polled_at.get(name, 0.0)
        entries = node.models.items()
        if only is not None:
            entries = {only: node.models[only]}.items() if only in node.models else {}.items()
        for model_id, model in entries:
            key = (model_id, name)
            state = model.state
            if key in self.evicting:
                state = "unloading"
            elif key in self.loads and state != "loaded":
                if state != "loading":
                    reserved += self.reserved_mb.get(key, 0.0)
                state = "loading"
            reported = model.in_flight if polled > self.released_at.get(key, 0.0) else 0
            used, last = self.last_used.get(key), model.last_used_at
            profile = self.policies.get(model_id)
            pinned = model.pinned or (profile is not None and profile.pinned)
            in_flight = max(reported, self.in_flight[key])
            last_used = max(last, used) if last and used else (used or last)
            if (state, pinned, in_flight, last_used) == (
                model.state,
                model.pinned,
                model.in_flight,
                model.last_used_at,
            ):
                models[model_id] = model  # nothing of ours to lay over it: no copy
                continue
            models[model_id] = replace(
                model, state=state, pinned=pinned, in_flight=in_flight, last_used_at=last_used
            )
        ours = sum(n for (_, node_name), n in self.in_flight.items() if node_name == name)
        free = node.memory_free_mb
        overlay = (
            name in self.cordoned,
            name in self.draining,
            max(node.in_flight, ours),
            max(0.0, free - reserved) if free is not None else None,
        )
        if only is not None:  # a request's view: the same as last time unless something moved
            kept = self._narrowed.get((name, only))
            entry = models.get(only)
            if (
                kept is not None
                and kept[0] is node
                and kept[2] == overlay
                and (kept[1] is entry or kept[1] == entry)
            ):
                return kept[3]
        view = replace(
            node,
            models=models,
            cordoned=overlay[0],
            draining=overlay[1],
            in_flight=overlay[2],
            memory_free_mb=overlay[3],
        )
        if only is not None:
            self._narrowed[(name, only)] = (node, models.get(only), overlay, view)
        return view


class Lease:
    """A request's hold on a model on one node: it counts as in flight until released.

    Use it as a context manager (`with lease:`); `client` is where to send the request.
    """

    def __init__(self, ledger: Ledger, model: str, node: str, client: NodeClient) -> None:
        self.ledger = ledger
        self.model = model
        self.node = node
        self.client = client
        self._released = False

    def release(self) -> None:
        """Stop counting the request as in flight (idempotent); marks the model used now."""
        if not self._released:
            self._released = True
            self.ledger.release((self.model, self.node))

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
