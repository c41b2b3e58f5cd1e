"""The Fleet: every node behind one catalogue, with placement, cold loads and eviction.

A `Fleet` holds a client per node, a poller keeping each node's state fresh, and the gateway's
own view of what it sends where (requests in flight, last use, loads and evictions under way),
which it lays over the polled state to form a `FleetSnapshot`. Every decision is
`placement.plan(snapshot, ...)` taken under one lock, so two requests never decide on stale
views of each other; the slow parts (loading, unloading, generating) run outside it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any

from cortex.config import CortexConfig, ModelProfile, ModelsConfig
from cortex.errors import (
    CortexError,
    ModelNotFoundError,
    OverloadedError,
    UpstreamError,
)
from cortex.fleet import dispatch, placement
from cortex.fleet.clients import (
    UNREACHABLE,
    NeuronClient,
    NodeClient,
    OpenAIServerClient,
    Timeouts,
)
from cortex.fleet.dispatch import Chunk, Route
from cortex.fleet.events import FleetObserver
from cortex.fleet.eviction import defrag_due, defrag_victims
from cortex.fleet.poller import Poller
from cortex.fleet.sampling import resolve_sampling
from cortex.fleet.state import (
    Eviction,
    FleetSnapshot,
    ModelOnNode,
    ModelPolicy,
    NodeSnapshot,
    Plan,
    Strategy,
)

__all__ = ["CatalogueEntry", "Fleet", "Lease"]

log = logging.getLogger("cortex.fleet")

Key = tuple[str, str]  # (model, node)


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
    """

    id: str
    aliases: tuple[str, ...]
    context_length: int | None
    loaded_on: tuple[str, ...]
    loadable_on: tuple[str, ...]
    pinned: bool = False
    priority: int = 0

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
        }


class Lease:
    """A request's hold on a model on one node: it counts as in flight until released.

    Use it as a context manager (`with lease:`); `client` is where to send the request.
    """

    def __init__(self, fleet: Fleet, model: str, node: str, client: NodeClient) -> None:
        self.fleet = fleet
        self.model = model
        self.node = node
        self.client = client
        self._released = False

    def release(self) -> None:
        """Stop counting the request as in flight (idempotent); marks the model used now."""
        if not self._released:
            self._released = True
            self.fleet._release((self.model, self.node))

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Fleet:
    """Every node of a cortex fleet behind one catalogue.

    Args:
        clients: one client per node (see `cortex.fleet.clients`).
        models: models.toml profiles (aliases, placement, priorities, pins, sampling).
        strategy: `lru` or `priority`.
        defrag_after_cycles: defragment a node after this many load/unload cycles (0: never).
        poll_interval_s: seconds between polls of each node.
        load_timeout_s: how long requests wait on a cold load.
        observer: receives loads, evictions and node up/down (the gateway's metrics).
        default_model: what an unknown `claude-*` model name means (default: the first pinned
            profile, else the first profile, else the catalogue's only model).
        first_poll_s: how long the first poll at start waits for slow nodes.

    Example:
        ```python
        async with Fleet.from_config(load_cortex_config("cortex.toml")) as fleet:
            print(fleet.plan("smollm2-135m-instruct"))
        ```
    """

    def __init__(
        self,
        clients: Sequence[NodeClient],
        *,
        models: ModelsConfig | None = None,
        strategy: Strategy = "lru",
        defrag_after_cycles: int = 0,
        poll_interval_s: float = 5.0,
        load_timeout_s: float = 600.0,
        observer: FleetObserver | None = None,
        default_model: str | None = None,
        first_poll_s: float = 5.0,
    ) -> None:
        names = [c.name for c in clients]
        if len(set(names)) != len(names):
            raise ValueError(f"node names must be unique, got {names}")
        self.clients: dict[str, NodeClient] = {c.name: c for c in clients}
        self.models = models or ModelsConfig()
        self.strategy: Strategy = strategy
        self.defrag_after_cycles = defrag_after_cycles
        self.load_timeout_s = load_timeout_s
        self.observer = observer or FleetObserver()
        self.poller = Poller(clients, self._on_poll, interval_s=poll_interval_s)
        self._nodes: dict[str, NodeSnapshot] = {
            c.name: NodeSnapshot(name=c.name, kind=c.kind, endpoint=c.endpoint, up=False)
            for c in clients
        }
        self._policies = {p.id: _policy(p) for p in self.models.models}
        self._default_model = default_model
        self._in_flight: Counter[Key] = Counter()
        self._last_used: dict[Key, float] = {}
        self._loads: dict[Key, asyncio.Task[None]] = {}
        self._reserved_mb: dict[Key, float] = {}
        self._evicting: set[Key] = set()
        self._measured_mb: dict[str, float] = {}
        self._defrag_base: dict[str, int] = {}
        self._changed_at: dict[str, float] = {}
        self._polled_at: dict[str, float] = {}
        self._released_at: dict[Key, float] = {}
        self._pinning: set[str] = set()
        self._pin_retry_at: dict[str, float] = {}
        self._first_poll_s = first_poll_s
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False

    # -- construction and lifetime ------------------------------------------------------------

    @classmethod
    def from_config(
        cls,
        config: CortexConfig,
        *,
        models: ModelsConfig | None = None,
        observer: FleetObserver | None = None,
    ) -> Fleet:
        """A fleet of the neurons and external servers `cortex.toml` names.

        Args:
            config: the gateway configuration.
            models: profiles (default: `config.models_config`, loaded).
            observer: receives fleet events.
        """
        g = config.gateway
        timeouts = Timeouts(
            connect_s=g.connect_timeout_s,
            request_s=g.request_timeout_s,
            load_s=g.load_timeout_s,
        )
        clients: list[NodeClient] = []
        for node in config.neurons:
            kind = OpenAIServerClient if node.kind == "openai" else NeuronClient
            clients.append(kind(node.name, node.endpoint, token=node.token, timeouts=timeouts))
        return cls(
            clients,
            models=models if models is not None else config.load_models(),
            strategy=config.eviction.strategy,
            defrag_after_cycles=config.eviction.defrag_after_cycles,
            poll_interval_s=g.poll_interval_s,
            load_timeout_s=g.load_timeout_s,
            observer=observer,
        )

    async def start(self) -> None:
        """Poll every node once, start the poller, and load the pinned models."""
        if self._started:
            return
        self._started = True
        await self.poller.poll_once(timeout_s=max(self.poller.interval_s, self._first_poll_s))
        self.poller.start()
        self._keep_pinned()

    async def close(self) -> None:
        """Stop polling and background work, close every client."""
        await self.poller.stop()
        tasks = list(self._tasks) + list(self._loads.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(c.aclose() for c in self.clients.values()))
        self._started = False

    async def __aenter__(self) -> Fleet:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _keep_pinned(self) -> None:
        """Load every pinned model that is loaded nowhere (at start, and when a node returns)."""
        now = time.monotonic()
        for policy in self._policies.values():
            if not policy.pinned or policy.id in self._pinning:
                continue
            if now < self._pin_retry_at.get(policy.id, 0.0):
                continue
            states = [
                node.models[policy.id].state
                for node in self._nodes.values()
                if node.up and policy.id in node.models
            ]
            if states and not any(s in ("loaded", "loading") for s in states):
                self._pinning.add(policy.id)
                self._spawn(self._load_pinned(policy.id))

    async def _load_pinned(self, model: str) -> None:
        try:
            lease = await self.acquire(model)
            lease.release()
        except CortexError as exc:
            log.warning("pinned model %s could not be loaded: %s", model, exc)
            self._pin_retry_at[model] = time.monotonic() + 10 * self.poller.interval_s
        finally:
            self._pinning.discard(model)

    # -- the view -----------------------------------------------------------------------------

    def snapshot(self) -> FleetSnapshot:
        """The fleet now: polled node state with the gateway's own knowledge laid over it."""
        nodes: dict[str, NodeSnapshot] = {}
        for name, node in self._nodes.items():
            models: dict[str, ModelOnNode] = {}
            reserved = 0.0
            polled = self._polled_at.get(name, 0.0)

            def fresh(key: Key, polled: float = polled) -> bool:
                # A node's in-flight count from before our last request there ended is stale.
                return polled > self._released_at.get(key, 0.0)

            for model_id, model in node.models.items():
                key = (model_id, name)
                reported = model.in_flight
                state = model.state
                if key in self._evicting:
                    state = "unloading"
                elif key in self._loads and state != "loaded":
                    if state != "loading":
                        reserved += self._reserved_mb.get(key, 0.0)
                    state = "loading"
                used = self._last_used.get(key)
                last = model.last_used_at
                models[model_id] = replace(
                    model,
                    state=state,
                    pinned=model.pinned or self.policy(model_id).pinned,
                    in_flight=max(reported if fresh(key) else 0, self._in_flight[key]),
                    last_used_at=max(last, used) if last and used else (used or last),
                )
            ours = sum(n for (_, node_name), n in self._in_flight.items() if node_name == name)
            free = node.memory_free_mb
            nodes[name] = replace(
                node,
                models=models,
                in_flight=max(node.in_flight, ours),
                memory_free_mb=max(0.0, free - reserved) if free is not None else None,
            )
        return FleetSnapshot(
            nodes=nodes,
            policies=self._policies,
            measured_memory_mb=dict(self._measured_mb),
            now=time.time(),
        )

    def policy(self, model: str) -> ModelPolicy:
        """The placement policy of `model` (a default one when it has no profile)."""
        return self._policies.get(model) or ModelPolicy(id=model)

    def profile(self, model: str) -> ModelProfile | None:
        """The models.toml profile of `model` (by id or alias)."""
        return self.models.profile(model)

    def resolve(self, name: str) -> str:
        """The model id `name` stands for (an id or an alias).

        Raises:
            ModelNotFoundError: no node knows it.
        """
        model = self.snapshot().resolve(name)
        if model is None:
            known = ", ".join(e.id for e in self.catalogue()) or "none"
            raise ModelNotFoundError(
                f"model {name!r} does not exist in this fleet (known: {known})"
            )
        return model

    def catalogue(self) -> list[CatalogueEntry]:
        """Every model loaded or loadable anywhere, with where, sorted by id."""
        snap = self.snapshot()
        ids = {m for node in snap.nodes.values() for m in node.models} | set(self._policies)
        entries = []
        for model in sorted(ids):
            policy = snap.policy(model)
            here = [n for n in snap.nodes.values() if model in n.models]
            entries.append(
                CatalogueEntry(
                    id=model,
                    aliases=policy.aliases,
                    context_length=snap.context_length(model),
                    loaded_on=tuple(
                        n.name for n in here if n.up and n.models[model].state == "loaded"
                    ),
                    loadable_on=tuple(
                        n.name for n in here if n.kind == "neuron" and policy.allows(n.name)
                    ),
                    pinned=policy.pinned,
                    priority=policy.priority,
                )
            )
        return entries

    @property
    def default_model(self) -> str | None:
        """The model an unknown `claude-*` name is served by (Claude Code's tiers), if any."""
        if self._default_model is not None:
            return self._default_model
        pinned = [p.id for p in self.models.models if p.pinned]
        if pinned or self.models.models:
            return (pinned or [p.id for p in self.models.models])[0]
        ids = {m for node in self._nodes.values() for m in node.models}
        return ids.pop() if len(ids) == 1 else None

    def context_length(self, model: str) -> int | None:
        """The context window of `model` (profile first, else what its nodes report)."""
        return self.snapshot().context_length(model)

    def sampling(self, model: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """`request` with its sampling fields resolved: request, profile, model's own, built-ins."""
        generation: Mapping[str, Any] = {}
        for node in self._nodes.values():
            entry = node.models.get(model)
            if entry is not None and entry.generation_config:
                generation = entry.generation_config
                break
        return resolve_sampling(request, self.profile(model), generation)

    def plan(self, model: str, *, exclude: Collection[str] = ()) -> Plan:
        """Where `model` would go now and what would be evicted: a dry run, nothing is done."""
        return placement.plan(self.snapshot(), model, self.strategy, exclude=exclude)

    # -- routing ------------------------------------------------------------------------------

    async def acquire(
        self,
        model: str,
        *,
        exclude: Collection[str] = (),
        failures: list[str] | None = None,
    ) -> Lease:
        """Find (or make) a node serving `model` and hold it for one request.

        Loads the model if needed, evicting as placement says; a load that fails moves on to
        the next candidate. Every request for a model that is loading waits on the one load.

        Args:
            model: a model id or alias.
            exclude: nodes not to use.
            failures: `node: reason` of each failed load is appended to it.

        Raises:
            ModelNotFoundError: no node knows the model.
            OverloadedError: no node can take it now (every candidate failed or is full).
        """
        excluded = set(exclude)
        failures = failures if failures is not None else []
        while True:
            async with self._lock:
                try:
                    decision = placement.plan(
                        self.snapshot(), model, self.strategy, exclude=excluded
                    )
                except OverloadedError as exc:
                    if failures:
                        raise OverloadedError(
                            f"{exc.message}; tried: {'; '.join(failures)}", details=exc.details
                        ) from exc
                    raise
                key = (decision.model, decision.node)
                self._in_flight[key] += 1
                lease = Lease(self, decision.model, decision.node, self.clients[decision.node])
                if decision.action == "route":
                    return lease
                task = self._loads.get(key) or self._begin_load(decision)
            try:
                await asyncio.wait_for(asyncio.shield(task), self.load_timeout_s)
            except BaseException as exc:
                lease.release()
                if not isinstance(exc, Exception):
                    raise  # cancelled: the caller went away
                excluded.add(decision.node)
                failures.append(f"{decision.node}: {_describe(exc)}")
                continue
            return lease

    def _release(self, key: Key) -> None:
        self._in_flight[key] -= 1
        if self._in_flight[key] <= 0:
            del self._in_flight[key]
        self._last_used[key] = time.time()
        self._released_at[key] = time.monotonic()

    def _begin_load(self, decision: Plan) -> asyncio.Task[None]:
        """Start one load (after its evictions); called under the lock."""
        key = (decision.model, decision.node)
        for eviction in decision.evictions:
            self._evicting.add((eviction.model, eviction.node))
        self._reserved_mb[key] = decision.required_mb or 0.0
        task = asyncio.ensure_future(self._load(decision))
        self._loads[key] = task
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return task

    async def _load(self, decision: Plan) -> None:
        key = (decision.model, decision.node)
        client = self.clients[decision.node]
        started = time.monotonic()
        outcome = "error"
        try:
            for eviction in decision.evictions:
                await self._evict(eviction)
            await client.load(decision.model)
            outcome = "ok"
        except UpstreamError as exc:
            if exc.code == UNREACHABLE:
                self.mark_down(decision.node, exc.message)
            raise
        finally:
            self.observer.on_load(
                decision.model, decision.node, outcome, time.monotonic() - started
            )
            await self.refresh(decision.node)
            if outcome == "ok":
                self._set_state(decision.node, decision.model, "loaded")
            self._loads.pop(key, None)
            self._reserved_mb.pop(key, None)

    async def _evict(self, eviction: Eviction) -> None:
        key = (eviction.model, eviction.node)
        try:
            await self.clients[eviction.node].unload(eviction.model)
            self._set_state(eviction.node, eviction.model, "available")
            self.observer.on_eviction(eviction.model, eviction.node, eviction.reason)
        finally:
            self._evicting.discard(key)

    def _set_state(self, node: str, model: str, state: Any) -> None:
        snap = self._nodes[node]
        entry = snap.models.get(model)
        if entry is None or entry.state == state:
            return
        models = dict(snap.models)
        models[model] = replace(entry, state=state)
        freed = (entry.memory_mb or 0.0) if state == "available" else 0.0
        free = snap.memory_free_mb + freed if snap.memory_free_mb is not None else None
        self._nodes[node] = replace(snap, models=models, memory_free_mb=free)
        self._changed_at[node] = time.monotonic()

    # -- lifecycle by hand --------------------------------------------------------------------

    async def load(self, model: str, node: str | None = None) -> Plan:
        """Load `model` (on `node`, or where placement puts it), evicting as needed.

        Returns the plan that was carried out.
        """
        model_id = self.resolve(model)
        if node is not None and node not in self.clients:
            raise ModelNotFoundError(f"no node named {node!r}", param="node")
        others = [n for n in self.clients if node is not None and n != node]
        decision = self.plan(model_id, exclude=others)
        lease = await self.acquire(model_id, exclude=others)
        lease.release()
        return replace(decision, node=lease.node)

    async def unload(self, model: str, node: str | None = None) -> list[str]:
        """Unload `model` from `node` (or from every node where it is loaded); returns the nodes."""
        model_id = self.resolve(model)
        snap = self.snapshot()
        names = [node] if node is not None else list(snap.nodes)
        done = []
        for name in names:
            target = snap.nodes.get(name)
            entry = target.models.get(model_id) if target is not None else None
            if target is None or entry is None or target.kind != "neuron":
                continue
            if entry.state not in ("loaded", "loading", "failed"):
                continue
            self._evicting.add((model_id, name))
            try:
                await self.clients[name].unload(model_id)
            finally:
                self._evicting.discard((model_id, name))
                await self.refresh(name)
            done.append(name)
        return done

    # -- inference ----------------------------------------------------------------------------

    async def complete(
        self,
        body: Mapping[str, Any],
        *,
        path: str = "/v1/chat/completions",
        route: Route | None = None,
        lease: Lease | None = None,
    ) -> dict[str, Any]:
        """Run one non-streamed OpenAI request (chat by default) wherever its model is served.

        Sampling defaults are filled in per field; node failures move it to the next candidate.

        Args:
            body: the OpenAI request body (`model`, `messages` or `prompt`, ...).
            path: `/v1/chat/completions` or `/v1/completions`.
            route: filled in with where it went (optional).
            lease: a lease already held for it (from `acquire`), used for the first attempt.
        """
        model = lease.model if lease is not None else self.resolve(str(body.get("model", "")))
        route = route if route is not None else Route(model)
        route.model = model
        return await dispatch.complete(self, path, self.sampling(model, body), route, lease=lease)

    def stream(
        self,
        body: Mapping[str, Any],
        *,
        path: str = "/v1/chat/completions",
        route: Route | None = None,
        lease: Lease | None = None,
    ) -> AsyncIterator[Chunk]:
        """Run one streamed OpenAI request; yields the node's stream events as they come.

        Fails over to the next candidate until the first token; closing the iterator cancels
        the generation. Arguments as for `complete`.
        """
        model = lease.model if lease is not None else self.resolve(str(body.get("model", "")))
        route = route if route is not None else Route(model)
        route.model = model
        request = self.sampling(model, body)
        request["stream"] = True
        return dispatch.stream(self, path, request, route, lease=lease)

    async def count_tokens(
        self, model: str, messages: Sequence[Any], tools: Sequence[Any] | None = None
    ) -> int:
        """Prompt tokens of a chat for `model`, by its own tokenizer and chat template.

        The model is loaded first if it must be (its node tokenizes).
        """
        with await self.acquire(model) as lease:
            return await lease.client.count_tokens(lease.model, messages, tools)

    # -- node state ---------------------------------------------------------------------------

    def refresh_soon(self, node: str) -> None:
        """Poll one node in the background."""
        self._spawn(self.refresh(node))

    async def refresh(self, node: str) -> None:
        """Poll one node now (after a load, an unload or a failure)."""
        await self.poller.poll_node(self.clients[node])

    def mark_down(self, node: str, reason: str) -> None:
        """Mark `node` down at once (a request could not reach it); the poller brings it back."""
        snap = self._nodes[node]
        if snap.up:
            log.warning("node %s is down: %s", node, reason)
            self._nodes[node] = replace(snap, up=False, error=reason)
            self.observer.on_node(node, False)

    def _on_poll(
        self,
        name: str,
        snap: NodeSnapshot | None,
        error: BaseException | None,
        started_at: float,
    ) -> None:
        previous = self._nodes[name]
        if snap is not None and started_at < self._changed_at.get(name, 0.0):
            return  # asked before our own load or unload there ended: stale
        if snap is None:
            self._nodes[name] = replace(previous, up=False, error=_describe(error))
            if previous.up:
                log.warning("node %s is down: %s", name, _describe(error))
            self.observer.on_node(name, False)
            return
        if not previous.up:
            log.info("node %s is up", name)
        self._nodes[name] = replace(snap, up=True, error=None, last_seen_at=time.time())
        self._polled_at[name] = started_at
        self._defrag_base.setdefault(name, snap.load_cycles)
        if snap.load_cycles < self._defrag_base[name]:
            self._defrag_base[name] = snap.load_cycles  # the node restarted
        for model in snap.models.values():
            if model.state == "loaded" and model.memory_mb:
                self._measured_mb[model.id] = model.memory_mb
        self.observer.on_node(name, True)
        self._maybe_defrag(name)
        self._keep_pinned()

    def _maybe_defrag(self, name: str) -> None:
        snapshot = self.snapshot()
        node = snapshot.nodes[name]
        if not defrag_due(node, self._defrag_base.get(name, 0), self.defrag_after_cycles):
            return
        victims = defrag_victims(node, snapshot)
        if not victims:
            self._defrag_base[name] = node.load_cycles
            return
        log.info("defragmenting %s: unloading %s", name, [v.model for v in victims])
        for victim in victims:
            self._evicting.add((victim.model, victim.node))
        self._spawn(self._defrag(name, victims))

    async def _defrag(self, name: str, victims: Sequence[Eviction]) -> None:
        for victim in victims:
            try:
                await self._evict(victim)
            except CortexError as exc:
                log.warning("defrag of %s on %s failed: %s", victim.model, name, exc)
        await self.refresh(name)
        self._defrag_base[name] = self._nodes[name].load_cycles


def _policy(profile: ModelProfile) -> ModelPolicy:
    return ModelPolicy(
        id=profile.id,
        aliases=tuple(profile.aliases),
        nodes=tuple(profile.nodes),
        priority=profile.priority,
        pinned=profile.pinned,
        memory_mb=profile.memory_mb,
        context_length=profile.context_length,
    )


def _describe(exc: BaseException | None) -> str:
    if isinstance(exc, CortexError):
        return exc.message
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "timed out"
    return repr(exc)
