"""The merged catalogue: every model loaded or loadable anywhere in the fleet, with where."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cortex.fleet.state import FleetSnapshot

__all__ = ["CatalogueEntry", "build_catalogue"]


@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    """One model of the merged catalogue.

    Args:
        id: the model id.
        aliases: other names from models.toml.
        context_length: its context window (also what vLLM-style clients read as max_model_len).
        loaded_on: nodes where it is loaded now.
        loadable_on: nodes that could load it.
        pinned: never evicted.
        priority: its priority under the `priority` strategy.
        loading: per node where it is loading, the node's progress (`phase`, `fraction`...).
        kind: `chat`, or `embedding` for a model served on `/v1/embeddings`.
    """

    id: str
    aliases: tuple[str, ...]
    context_length: int | None
    loaded_on: tuple[str, ...]
    loadable_on: tuple[str, ...]
    pinned: bool = False
    priority: int = 0
    loading: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    kind: str = "chat"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "id": self.id,
            "aliases": list(self.aliases),
            "context_length": self.context_length,
            "max_model_len": self.context_length,
            "loaded_on": list(self.loaded_on),
            "loadable_on": list(self.loadable_on),
            "pinned": self.pinned,
            "priority": self.priority,
            "loading": {node: dict(progress) for node, progress in self.loading.items()},
            "kind": self.kind,
        }


def build_catalogue(snapshot: FleetSnapshot) -> list[CatalogueEntry]:
    """Every model a node reports or a profile names, sorted by id."""
    ids = {m for node in snapshot.nodes.values() for m in node.models} | set(snapshot.policies)
    entries = []
    for model in sorted(ids):
        policy = snapshot.policy(model)
        here = [n for n in snapshot.nodes.values() if model in n.models]
        entries.append(
            CatalogueEntry(
                id=model,
                aliases=policy.aliases,
                context_length=snapshot.context_length(model),
                loaded_on=tuple(n.name for n in here if n.up and n.models[model].state == "loaded"),
                loadable_on=tuple(
                    n.name
                    for n in snapshot.nodes.values()
                    if n.kind == "neuron"
                    and policy.allows(n.name)
                    and (n in here or policy.source is not None)
                ),
                pinned=policy.pinned,
                priority=policy.priority,
                loading={
                    n.name: n.models[model].progress or {"phase": "loading", "fraction": None}
                    for n in here
                    if n.models[model].state == "loading"
                },
                kind=next((n.models[model].kind for n in here), "chat"),
            )
        )
    return entries
