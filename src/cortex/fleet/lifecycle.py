"""Model lifecycle on the nodes: loads (after their evictions), unloads, defragmentation.

One load per (model, node) runs at a time: it is a task in the ledger, and every request for
that model there waits on it. Evictions mark their victims `unloading` in the ledger the moment
they are decided, so no request is routed to a model on its way out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any

from cortex.errors import CortexError, UpstreamError
from cortex.fleet.clients import UNREACHABLE, NodeClient
from cortex.fleet.events import FleetObserver
from cortex.fleet.eviction import defrag_due, defrag_victims
from cortex.fleet.ledger import Ledger
from cortex.fleet.state import Eviction, FleetSnapshot, NodeSnapshot, Plan

__all__ = ["Lifecycle"]

log = logging.getLogger("cortex.fleet")


class Lifecycle:
    """Carries out the loads, evictions and defragmentations the fleet decides.

    Args:
        ledger: the fleet's ledger (loads, evictions and states are written there).
        clients: the nodes by name.
        observer: told of every load and eviction.
        refresh: polls one node now.
        mark_down: marks a node down (it could not be reached).
        spawn: runs a coroutine in the background, owned by the fleet.
        defrag_after_cycles: load/unload cycles after which a node is defragmented (0: never).
        retry_pinned_s: wait before trying again to load a pinned model that failed to load.
    """

    def __init__(
        self,
        ledger: Ledger,
        clients: Mapping[str, NodeClient],
        observer: FleetObserver,
        *,
        refresh: Callable[[str], Awaitable[None]],
        mark_down: Callable[[str, str], None],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        defrag_after_cycles: int = 0,
        retry_pinned_s: float = 30.0,
    ) -> None:
        self.ledger = ledger
        self.clients = clients
        self.observer = observer
        self.refresh = refresh
        self.mark_down = mark_down
        self.spawn = spawn
        self.defrag_after_cycles = defrag_after_cycles
        self.defrag_base: dict[str, int] = {}
        self.retry_pinned_s = retry_pinned_s
        self._pinning: set[str] = set()
        self._pin_retry_at: dict[str, float] = {}

    def begin_load(self, decision: Plan) -> asyncio.Task[None]:
        """Start the load `decision` asks for, evictions first (call under the fleet's lock)."""
        key = (decision.model, decision.node)
        for eviction in decision.evictions:
            self.ledger.evicting.add((eviction.model, eviction.node))
        self.ledger.reserved_mb[key] = decision.required_mb or 0.0
        task = asyncio.ensure_future(self._load(decision))
        self.ledger.loads[key] = task
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return task

    async def _load(self, decision: Plan) -> None:
        key = (decision.model, decision.node)
        started = time.monotonic()
        outcome = "error"
        try:
            for eviction in decision.evictions:
                await self.evict(eviction)
            await self.clients[decision.node].load(
                decision.model, source=decision.source, quant=decision.quant
            )
            outcome = "ok"
        except UpstreamError as exc:
            if exc.code == UNREACHABLE:
                self.mark_down(decision.node, exc.message)
            raise
        finally:
            seconds = time.monotonic() - started
            self.observer.on_load(decision.model, decision.node, outcome, seconds)
            await self.refresh(decision.node)
            if outcome == "ok":
                self.ledger.set_state(decision.node, decision.model, "loaded")
            self.ledger.loads.pop(key, None)
            self.ledger.reserved_mb.pop(key, None)

    async def evict(self, eviction: Eviction) -> None:
        """Unload one victim (already marked `unloading` in the ledger) and report it."""
        try:
            await self.clients[eviction.node].unload(eviction.model)
            self.ledger.set_state(eviction.node, eviction.model, "available")
            self.observer.on_eviction(eviction.model, eviction.node, eviction.reason)
        finally:
            self.ledger.evicting.discard((eviction.model, eviction.node))

    async def unload(self, model: str, snapshot: FleetSnapshot, nodes: Sequence[str]) -> list[str]:
        """Unload `model` from those of `nodes` where it is loaded (by hand); returns them."""
        done = []
        for name in nodes:
            target = snapshot.nodes.get(name)
            entry = target.models.get(model) if target is not None else None
            if target is None or entry is None or target.kind != "neuron":
                continue
            if entry.state not in ("loaded", "loading", "failed"):
                continue
            self.ledger.evicting.add((model, name))
            try:
                await self.clients[name].unload(model)
            finally:
                self.ledger.evicting.discard((model, name))
                await self.refresh(name)
            done.append(name)
        return done

    # -- pinned models ------------------------------------------------------------------------

    def unpinned(self, snapshot: FleetSnapshot) -> list[str]:
        """Pinned models loaded (or loading) nowhere that a node up could load: load them.

        Only nodes the profile allows count: a model pinned to node `a` is not attempted while
        only `b` answers (an attempt would fail and back off `retry_pinned_s`), and is loaded at
        the first poll `a` answers.
        """
        now = time.monotonic()
        out = []
        for policy in snapshot.policies.values():
            if not policy.pinned or policy.id in self._pinning:
                continue
            if now < self._pin_retry_at.get(policy.id, 0.0):
                continue
            where = [n for n in snapshot.nodes.values() if n.up and policy.id in n.models]
            states = [n.models[policy.id].state for n in where]
            if any(s in ("loaded", "loading") for s in states):
                continue
            loadable = [
                n for n in where if n.kind == "neuron" and not n.cordoned and policy.allows(n.name)
            ]
            if loadable:
                self._pinning.add(policy.id)
                out.append(policy.id)
        return out

    def forget_failures(self, model: str) -> None:
        """Try a pinned model again at once (it was just pinned, or its profile changed)."""
        self._pin_retry_at.pop(model, None)

    async def load_pinned(self, model: str, acquire: Callable[[str], Awaitable[Any]]) -> None:
        """Load a pinned model through `acquire` (placement as for any request)."""
        try:
            lease = await acquire(model)
            lease.release()
        except CortexError as exc:
            log.warning("pinned model %s could not be loaded: %s", model, exc)
            self._pin_retry_at[model] = time.monotonic() + self.retry_pinned_s
        finally:
            self._pinning.discard(model)

    # -- defragmentation ----------------------------------------------------------------------

    def polled(self, node: NodeSnapshot, snapshot: FleetSnapshot) -> None:
        """A node answered a poll: defragment it if it is due and quiet."""
        base = self.defrag_base.setdefault(node.name, node.load_cycles)
        if node.load_cycles < base:  # the node restarted
            self.defrag_base[node.name] = base = node.load_cycles
        view = snapshot.nodes[node.name]
        if not defrag_due(view, base, self.defrag_after_cycles):
            return
        victims = defrag_victims(view, snapshot)
        if not victims:
            self.defrag_base[node.name] = node.load_cycles
            return
        log.info("defragmenting %s: unloading %s", node.name, [v.model for v in victims])
        for victim in victims:
            self.ledger.evicting.add((victim.model, victim.node))
        self.spawn(self._defrag(node.name, victims))

    async def _defrag(self, name: str, victims: Sequence[Eviction]) -> None:
        for victim in victims:
            try:
                await self.evict(victim)
            except CortexError as exc:
                log.warning("defrag of %s on %s failed: %s", victim.model, name, exc)
        await self.refresh(name)
        self.defrag_base[name] = self.ledger.nodes[name].load_cycles
