"""Snapshot types of the fleet: nodes, their devices and models, placement policies, plans."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from cortex.config import ModelProfile

__all__ = [
    "DeviceInfo",
    "Eviction",
    "FleetSnapshot",
    "ModelOnNode",
    "ModelPolicy",
    "ModelState",
    "NodeKind",
    "NodeSnapshot",
    "Plan",
    "Strategy",
]

ModelState = Literal["available", "loading", "loaded", "unloading", "failed"]
NodeKind = Literal["neuron", "openai"]
Strategy = Literal["lru", "priority"]


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """One accelerator (or the CPU) of a node, as its `/status` reports it."""

    index: int
    kind: str
    name: str
    memory_total_mb: float | None = None
    memory_used_mb: float | None = None
    memory_free_mb: float | None = None
    utilization: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (for `/admin/status`)."""
        return {
            "index": self.index,
            "kind": self.kind,
            "name": self.name,
            "memory_total_mb": self.memory_total_mb,
            "memory_used_mb": self.memory_used_mb,
            "memory_free_mb": self.memory_free_mb,
            "utilization": self.utilization,
        }


@dataclass(frozen=True, slots=True)
class ModelOnNode:
    """One model as one node sees it.

    Args:
        id: the model id the node reports.
        state: available, loading, loaded, unloading or failed.
        memory_mb: measured when loaded, else the node's estimate (None when unknown).
        context_length: the model's context window, when known.
        pinned: the node (or a profile) says it must never be evicted.
        in_flight: requests running on it now (the larger of the node's and the gateway's count).
        last_used_at: unix seconds of its last request, None if never used.
        generation_config: the model's own sampling defaults (from its generation_config.json).
        progress: while loading, what the node says of it: `phase` (pulling, importing,
            loading, warming), `fraction` 0..1 or None, and `bytes`/`total_bytes` of a pull.
        kind: `chat` or `embedding` (served on `/v1/embeddings`).
        dtype: the dtype it runs in on that node, once loaded (e.g. `bfloat16`).
        quant: how its weights are held there, once loaded (`none`, `int8`, `int4-g64`...).
    """

    id: str
    state: ModelState
    memory_mb: float | None = None
    context_length: int | None = None
    architecture: str | None = None
    device: str | None = None
    pinned: bool = False
    in_flight: int = 0
    last_used_at: float | None = None
    error: str | None = None
    generation_config: Mapping[str, Any] = field(default_factory=dict)
    progress: Mapping[str, Any] | None = None
    kind: str = "chat"
    dtype: str | None = None
    quant: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (for `/admin/status`)."""
        return {
            "id": self.id,
            "state": self.state,
            "memory_mb": self.memory_mb,
            "context_length": self.context_length,
            "architecture": self.architecture,
            "device": self.device,
            "pinned": self.pinned,
            "in_flight": self.in_flight,
            "last_used_at": self.last_used_at,
            "error": self.error,
            "progress": dict(self.progress) if self.progress is not None else None,
            "kind": self.kind,
            "dtype": self.dtype,
            "quant": self.quant,
        }


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    """One node of the fleet at one moment.

    Args:
        name: the node's name from cortex.toml.
        kind: `neuron` (full lifecycle) or `openai` (an external server: routed, never loaded).
        up: answered its last poll.
        models: every model it can serve, by id.
        memory_capacity_mb: the most memory it may use for models (its cap, else its devices').
        memory_free_mb: memory free for another model now (None when unknown: assumed to fit).
        in_flight: requests running on it (all models).
        load_cycles: load/unload cycles since the node started (for defragmentation).
        cordoned: no new load is placed there (what is loaded keeps serving).
        draining: being emptied (`Fleet.drain`): requests go to another copy when there is one.
        pulls: the pulls it runs on their own (`Fleet.pull`), each `{source, phase, fraction,
            bytes, total_bytes, file}` (a pull on load shows as the model's `progress`).
    """

    name: str
    kind: NodeKind = "neuron"
    up: bool = True
    endpoint: str = ""
    models: Mapping[str, ModelOnNode] = field(default_factory=dict)
    devices: tuple[DeviceInfo, ...] = ()
    memory_capacity_mb: float | None = None
    memory_free_mb: float | None = None
    in_flight: int = 0
    waiting: int = 0
    load_cycles: int = 0
    error: str | None = None
    last_seen_at: float | None = None
    version: str | None = None
    cordoned: bool = False
    draining: bool = False
    pulls: tuple[Mapping[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (for `/admin/status`)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "up": self.up,
            "endpoint": self.endpoint,
            "devices": [d.to_dict() for d in self.devices],
            "memory_capacity_mb": self.memory_capacity_mb,
            "memory_free_mb": self.memory_free_mb,
            "in_flight": self.in_flight,
            "waiting": self.waiting,
            "load_cycles": self.load_cycles,
            "error": self.error,
            "last_seen_at": self.last_seen_at,
            "version": self.version,
            "cordoned": self.cordoned,
            "draining": self.draining,
            "pulls": [dict(pull) for pull in self.pulls],
            "models": [m.to_dict() for m in self.models.values()],
        }


@dataclass(frozen=True, slots=True)
class ModelPolicy:
    """What placement needs from a model's profile in models.toml.

    Args:
        id: the model id.
        aliases: other names for it.
        nodes: nodes it may be placed on, in order of preference (empty: anywhere).
        priority: higher is more important (the `priority` strategy never evicts a model of
            higher priority for one of lower priority).
        pinned: loaded at start and never evicted.
        memory_mb: memory it needs, overriding the node's estimate.
        context_length: context window to advertise and enforce, overriding the node's.
        source: where a node lacking the model pulls it from (`hf:ORG/NAME[:QUANT]`).
        quant: how a neuron should hold its weights when it loads it (`int4`, `int8`...); a
            node's own setting for the model wins.
    """

    id: str
    aliases: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    priority: int = 0
    pinned: bool = False
    memory_mb: float | None = None
    context_length: int | None = None
    source: str | None = None
    quant: str | None = None

    @classmethod
    def from_profile(cls, profile: ModelProfile) -> ModelPolicy:
        """The policy of a models.toml profile."""
        return cls(
            id=profile.id,
            aliases=tuple(profile.aliases),
            nodes=tuple(profile.nodes),
            priority=profile.priority,
            pinned=profile.pinned,
            memory_mb=profile.memory_mb,
            context_length=profile.context_length,
            source=profile.source,
            quant=profile.quant,
        )

    def allows(self, node: str) -> bool:
        """Whether the profile lets the model be placed on `node`."""
        return not self.nodes or node in self.nodes

    def preference(self, node: str) -> int:
        """Rank of `node` in the profile's order (lower is preferred; unlisted last)."""
        return self.nodes.index(node) if node in self.nodes else len(self.nodes)


@dataclass(frozen=True, slots=True)
class FleetSnapshot:
    """The whole fleet at one moment: what placement is a pure function of.

    Args:
        nodes: every node, in the order of cortex.toml.
        policies: profiles by model id.
        measured_memory_mb: memory a node measured for a model once it was loaded anywhere;
            placement prefers it to any estimate.
        now: the snapshot's time (unix seconds).
    """

    nodes: Mapping[str, NodeSnapshot]
    policies: Mapping[str, ModelPolicy] = field(default_factory=dict)
    measured_memory_mb: Mapping[str, float] = field(default_factory=dict)
    now: float = 0.0

    def policy(self, model: str) -> ModelPolicy:
        """The model's policy (a default one when models.toml has no profile for it)."""
        return self.policies.get(model) or ModelPolicy(id=model)

    def resolve(self, name: str) -> str | None:
        """The model id that `name` (an id or an alias) stands for, None when unknown."""
        if name in self.policies:
            return name
        for policy in self.policies.values():
            if name in policy.aliases:
                return policy.id
        if any(name in node.models for node in self.nodes.values()):
            return name
        return None

    def required_mb(self, model: str) -> float | None:
        """Memory `model` needs: measured once loaded anywhere, else the profile, else estimate."""
        if model in self.measured_memory_mb:
            return self.measured_memory_mb[model]
        policy = self.policies.get(model)
        if policy is not None and policy.memory_mb is not None:
            return policy.memory_mb
        estimates = [
            node.models[model].memory_mb
            for node in self.nodes.values()
            if model in node.models and node.models[model].memory_mb is not None
        ]
        return max((e for e in estimates if e is not None), default=None)

    def context_length(self, model: str) -> int | None:
        """The model's context window: the profile's, else the smallest a node reports."""
        policy = self.policies.get(model)
        if policy is not None and policy.context_length is not None:
            return policy.context_length
        lengths = [
            node.models[model].context_length
            for node in self.nodes.values()
            if model in node.models and node.models[model].context_length
        ]
        return min((n for n in lengths if n is not None), default=None)


@dataclass(frozen=True, slots=True)
class Eviction:
    """One model to unload to make room (or to defragment a node)."""

    node: str
    model: str
    memory_mb: float
    reason: str
    last_used_at: float | None = None
    priority: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (for `/admin/placement`)."""
        return {
            "node": self.node,
            "model": self.model,
            "memory_mb": self.memory_mb,
            "reason": self.reason,
            "last_used_at": self.last_used_at,
            "priority": self.priority,
        }


@dataclass(frozen=True, slots=True)
class Plan:
    """Where a model goes and what must leave first.

    Args:
        model: the resolved model id.
        node: the node chosen.
        action: `route` (already loaded there), `wait` (loading there now: join that load) or
            `load` (load it there, after the evictions).
        evictions: models to unload first, in order.
        required_mb: memory the model needs, when known.
        reason: why this node, in words.
        source: for a load on a node that lacks the model, where the node pulls it from.
        quant: for a load, how the node should hold the weights (the profile's `quant`).
    """

    model: str
    node: str
    action: Literal["route", "wait", "load"]
    evictions: tuple[Eviction, ...] = ()
    required_mb: float | None = None
    reason: str = ""
    source: str | None = None
    quant: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (for `/admin/placement`)."""
        return {
            "model": self.model,
            "node": self.node,
            "action": self.action,
            "evictions": [e.to_dict() for e in self.evictions],
            "required_mb": self.required_mb,
            "reason": self.reason,
            **({"source": self.source} if self.source else {}),
            **({"quant": self.quant} if self.quant else {}),
        }
