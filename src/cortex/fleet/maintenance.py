"""Taking a node out of service without failing a request: cordon, drain, uncordon.

- **cordon**: placement puts no new load there; what is loaded keeps serving.
- **drain**: cordon, then empty the node model by model. A model worth keeping (pinned, in use,
  or used within `recent_s`) is first loaded on another node through ordinary placement (which
  may evict idle models elsewhere); once that copy is loaded, placement routes new requests to
  it (a draining node is served only while no other copy exists). Then the old copy is retired:
  marked `unloading` (so no request is routed to it any more), the
  requests already holding it finish (bounded by `timeout_s`), and only then is it unloaded.
  A request is therefore never sent to a copy on its way out, which is what keeps a drain
  under load free of failed requests.
- **uncordon**: the node takes new loads again.

What can go wrong: no other node can hold a model (profile restricted to this node, or no room
that placement may make). A pinned model then stays where it is (the report says why) and the
node stays cordoned; an unpinned one is unloaded anyway, and loads elsewhere on its next request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from cortex.errors import CortexError, NotFoundError
from cortex.fleet.fleet import Fleet
from cortex.fleet.state import FleetSnapshot

__all__ = ["DrainReport", "Maintenance"]

log = logging.getLogger("cortex.fleet")


@dataclass(slots=True)
class DrainReport:
    """What a drain did, model by model (also its progress while it runs).

    Args:
        node: the node drained.
        state: `draining` while it runs, then `drained` (nothing left) or `cordoned` (some
            model stayed: see `stayed`).
        moved: `{"model", "to"}` for each model copied to another node before it left.
        unloaded: models unloaded without a copy elsewhere (idle and unpinned, or no room).
        stayed: `{"model", "reason"}` for each model still there (pinned with nowhere to go).
        started_at: unix time the drain began; finished_at when it ended.
    """

    node: str
    state: str = "draining"
    moved: list[dict[str, str]] = field(default_factory=list)
    unloaded: list[str] = field(default_factory=list)
    stayed: list[dict[str, str]] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (for `/admin/nodes/{node}/drain`)."""
        return {
            "node": self.node,
            "state": self.state,
            "moved": list(self.moved),
            "unloaded": list(self.unloaded),
            "stayed": list(self.stayed),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


class Maintenance:
    """Cordons and drains the nodes of one fleet (the state lives in its ledger).

    Args:
        fleet: the fleet.
        recent_s: a model used within this many seconds is copied elsewhere before it leaves.
        timeout_s: how long requests already on a retiring copy may take to finish.
    """

    def __init__(self, fleet: Fleet, *, recent_s: float = 600.0, timeout_s: float = 600.0) -> None:
        self.fleet = fleet
        self.ledger = fleet.ledger
        self.recent_s = recent_s
        self.timeout_s = timeout_s
        self.reports: dict[str, DrainReport] = {}
        self._drains: dict[str, asyncio.Task[DrainReport]] = {}

    def _node(self, node: str) -> str:
        if node not in self.fleet.clients:
            raise NotFoundError(f"no node named {node!r}", param="node")
        return node

    def cordon(self, node: str) -> None:
        """No new load is placed on `node` from now on.

        Raises:
            NotFoundError: no such node.
        """
        self.ledger.cordoned.add(self._node(node))
        log.info("node %s cordoned", node)

    def uncordon(self, node: str) -> None:
        """`node` takes new loads again (a drain under way there is stopped)."""
        self._node(node)
        task = self._drains.pop(node, None)
        if task is not None:
            task.cancel()
        self.ledger.cordoned.discard(node)
        self.ledger.draining.discard(node)
        log.info("node %s uncordoned", node)

    async def drain(self, node: str) -> DrainReport:
        """Cordon `node` and move or unload every model loaded there; returns the report.

        Two calls for one node share one drain.

        Raises:
            NotFoundError: no such node.
        """
        self._node(node)
        task = self._drains.get(node)
        if task is None or task.done():
            task = asyncio.ensure_future(self._drain(node))
            self._drains[node] = task
        return await asyncio.shield(task)

    async def _drain(self, node: str) -> DrainReport:
        report = DrainReport(node)
        self.reports[node] = report
        self.ledger.cordoned.add(node)
        self.ledger.draining.add(node)
        log.info("draining node %s", node)
        try:
            await self._settle_loads(node)
            view = self.ledger.snapshot()
            snap = view.nodes[node]
            if snap.kind == "neuron":
                for model in list(snap.models.values()):
                    if model.state not in ("loaded", "failed"):
                        continue
                    await self._empty(report, model.id)
            report.state = "cordoned" if report.stayed else "drained"
        except BaseException:
            report.state = "cordoned"
            raise
        finally:
            self.ledger.draining.discard(node)
            report.finished_at = time.time()
            log.info("node %s %s: %s", node, report.state, report.to_dict())
        return report

    async def _settle_loads(self, node: str) -> None:
        """Let loads under way on `node` end (they were placed before the cordon)."""
        tasks = [task for (_, where), task in self.ledger.loads.items() if where == node]
        if tasks:
            await asyncio.wait([asyncio.shield(t) for t in tasks], timeout=self.timeout_s)

    async def _empty(self, report: DrainReport, model: str) -> None:
        node = report.node
        view = self.ledger.snapshot()
        entry = view.nodes[node].models[model]
        policy = view.policy(model)
        pinned = entry.pinned or policy.pinned
        recent = entry.last_used_at is not None and view.now - entry.last_used_at < self.recent_s
        if entry.state == "loaded" and (pinned or recent or entry.in_flight > 0):
            try:
                lease = await self.fleet.acquire(model, exclude={node})
            except CortexError as exc:
                if pinned:
                    report.stayed.append({"model": model, "reason": exc.message})
                    return
                log.warning("drain of %s: %s has nowhere to go: %s", node, model, exc.message)
            else:
                lease.release()
                report.moved.append({"model": model, "to": lease.node})
        await self._retire(model, node)
        if not any(m["model"] == model for m in report.moved):
            report.unloaded.append(model)

    async def _retire(self, model: str, node: str) -> None:
        """Unload `model` from `node` once no request of ours holds it (none can start)."""
        key = (model, node)
        # Placement decides and holds without an await in between, so from here on no
        # request can be routed to this copy: only those holding it already remain.
        self.ledger.evicting.add(key)
        try:
            deadline = time.monotonic() + self.timeout_s
            while self.ledger.in_flight[key] > 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            # The polled view: the overlay shows the copy `unloading` already, and it is.
            polled = FleetSnapshot(nodes=dict(self.ledger.nodes), policies=self.ledger.policies)
            await self.fleet.lifecycle.unload(model, polled, [node])
        finally:
            self.ledger.evicting.discard(key)
