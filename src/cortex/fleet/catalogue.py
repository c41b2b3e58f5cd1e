"""The merged catalogue: every model loaded or loadable anywhere in the fleet, with where.

`build_catalogue` walks every model of every node; `Catalogue` keeps its last answer and builds
it again only when something it shows may have changed (a node's models or its being up, a load
or eviction of ours, a profile pinned at runtime), so `/v1/models` costs the same at 6 nodes as
at 100 while nothing changes, and idle polling (a 304 hands back the very same models) never
rebuilds it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cortex.fleet.ledger import Ledger
from cortex.fleet.state import FleetSnapshot, ModelOnNode, ModelPolicy

__all__ = ["Catalogue", "CatalogueEntry", "build_catalogue"]


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


class Catalogue:
    """The catalogue of a ledger's fleet, rebuilt only when what it shows may have changed.

    What it shows depends on each node's models (as polled, or as our own load or unload left
    them), whether the node is up, our loads and evictions under way (shown as `loading` and
    `unloading`) and the placement policies. The check compares those by identity: a poll
    answered 304, or one whose models did not change, keeps the very same `models` mapping.

    Args:
        ledger: the fleet's ledger.
    """

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._entries: tuple[CatalogueEntry, ...] = ()
        self._seen: _Seen | None = None

    def entries(self) -> tuple[CatalogueEntry, ...]:
        """Every model a node reports or a profile names, sorted by id."""
        seen = self._observe()
        if self._seen is None or not self._seen.same(seen):
            self._entries = tuple(build_catalogue(self.ledger.snapshot()))
            self._seen = seen
        return self._entries

    def _observe(self) -> _Seen:
        ledger = self.ledger
        return _Seen(
            nodes=tuple((n.name, n.up, n.models) for n in ledger.nodes.values()),
            busy=frozenset(ledger.loads) | {("-", *key) for key in ledger.evicting},
            policies=tuple(ledger.policies.values()),
        )


@dataclass(frozen=True, slots=True)
class _Seen:
    """What a catalogue was built from, held to tell whether it still holds."""

    nodes: tuple[tuple[str, bool, Mapping[str, ModelOnNode]], ...]
    busy: frozenset[tuple[str, ...]]
    policies: tuple[ModelPolicy, ...]

    def same(self, other: _Seen) -> bool:
        return (
            len(self.nodes) == len(other.nodes)
            and all(
                a[0] == b[0] and a[1] == b[1] and a[2] is b[2]
                for a, b in zip(self.nodes, other.nodes, strict=True)
            )
            and self.busy == other.busy
            and len(self.policies) == len(other.policies)
            and all(a is b for a, b in zip(self.policies, other.policies, strict=True))
        )
