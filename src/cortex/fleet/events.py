"""What the fleet reports as it acts: loads, evictions, nodes going up and down."""

from __future__ import annotations

__all__ = ["FleetObserver"]


class FleetObserver:
    """Receives the fleet's events; the base class ignores them all.

    Subclass it (the gateway's metrics do) and pass it to `Fleet(observer=...)`.
    """

    def on_load(self, model: str, node: str, outcome: str, seconds: float) -> None:
        """A load ended: `outcome` is `ok` or `error`, after `seconds`."""

    def on_eviction(self, model: str, node: str, reason: str) -> None:
        """`model` was unloaded from `node` to make room (`lru`, `priority`) or by `defrag`."""

    def on_node(self, node: str, up: bool) -> None:
        """A node was polled: `up` says whether it answered."""
