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
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from types import TracebackType
from typing import Any

from cortex.config import CortexConfig, ModelProfile, ModelsConfig, load_models_config
from cortex.errors import (
    CortexError,
    ModelNotFoundError,
    OverloadedError,
    UpstreamTimeoutError,
    describe_error,
)
from cortex.fleet import dispatch, placement
from cortex.fleet.build import clients_from_config
from cortex.fleet.catalogue import Catalogue, CatalogueEntry
from cortex.fleet.clients import NodeClient
from cortex.fleet.dispatch import Batch, Chunk, Route
from cortex.fleet.events import FleetObserver
from cortex.fleet.ledger import Lease, Ledger
from cortex.fleet.lifecycle import Lifecycle
from cortex.fleet.poller import Poller
from cortex.fleet.sampling import resolve_sampling
from cortex.fleet.state import (
    FleetSnapshot,
    ModelPolicy,
    NodeSnapshot,
    Plan,
    Strategy,
)

__all__ = ["Fleet"]

log = logging.getLogger("cortex.fleet")


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
        lifespans: entered at start, before the first poll, and left at close (the lifespan
            of a neuron app reached in-process: see `cortex.embedded`).

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
        lifespans: Sequence[AbstractAsyncContextManager[Any]] = (),
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
        self._policies = {p.id: ModelPolicy.from_profile(p) for p in self.models.models}
        self._default_model = default_model
        self.ledger = Ledger(clients, self._policies)
        self._catalogue = Catalogue(self.ledger)
        self.lifecycle = Lifecycle(
            self.ledger,
            self.clients,
            self.observer,
            refresh=self.refresh,
            mark_down=self.mark_down,
            spawn=self._spawn,
            defrag_after_cycles=defrag_after_cycles,
            retry_pinned_s=10 * poll_interval_s,
        )
        self._first_poll_s = first_poll_s
        self._lifespans = list(lifespans)
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._last_polled: dict[str, NodeSnapshot] = {}
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
        clients = clients_from_config(config)
        return cls(
            clients,
            models=models if models is not None else load_models_config(config.models_config),
            strategy=config.eviction.strategy,
            defrag_after_cycles=config.eviction.defrag_after_cycles,
            poll_interval_s=config.gateway.poll_interval_s,
            load_timeout_s=config.gateway.load_timeout_s,
            observer=observer,
        )

    async def start(self) -> None:
        """Poll every node once, start the poller, and load the pinned models."""
        if self._started:
            return
        self._started = True
        for lifespan in self._lifespans:
            await lifespan.__aenter__()
        await self.poller.poll_once(timeout_s=max(self.poller.interval_s, self._first_poll_s))
        self.poller.start()
        self._keep_pinned()

    async def close(self) -> None:
        """Stop polling and background work, close every client."""
        await self.poller.stop()
        tasks = list(self._tasks) + list(self.ledger.loads.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(c.aclose() for c in self.clients.values()))
        for lifespan in reversed(self._lifespans):
            await lifespan.__aexit__(None, None, None)
        self._lifespans.clear()  # a context manager is entered once
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
        if not any(policy.pinned for policy in self._policies.values()):
            return
        for model in self.lifecycle.unpinned(self.snapshot()):
            self._spawn(self.lifecycle.load_pinned(model, self.acquire))

    # -- the view -----------------------------------------------------------------------------

    def snapshot(self) -> FleetSnapshot:
        """The fleet now: polled node state with the gateway's own knowledge laid over it."""
        return self.ledger.snapshot()

    def _polled(self) -> FleetSnapshot:
        """The nodes as polled, without the overlay: enough for names and context windows,
        and cheap (no copy per request)."""
        return FleetSnapshot(nodes=self.ledger.nodes, policies=self._policies)

    def policy(self, model: str) -> ModelPolicy:
        """The placement policy of `model` (a default one when it has no profile)."""
        return self.ledger.policy(model)

    def profile(self, model: str) -> ModelProfile | None:
        """The models.toml profile of `model` (by id or alias)."""
        return self.models.profile(model)

    def resolve(self, name: str) -> str:
        """The model id `name` stands for (an id or an alias).

        Raises:
            ModelNotFoundError: no node knows it.
        """
        model = self._polled().resolve(name)
        if model is None:
            known = ", ".join(e.id for e in self.catalogue()) or "none"
            raise ModelNotFoundError(
                f"model {name!r} does not exist in this fleet (known: {known})"
            )
        return model

    def catalogue(self) -> tuple[CatalogueEntry, ...]:
        """Every model loaded or loadable anywhere, with where, sorted by id (built again only
        when a node's models, a node's being up, or a load or eviction of ours changed)."""
        return self._catalogue.entries()

    @property
    def default_model(self) -> str | None:
        """The model an unknown `claude-*` name is served by (Claude Code's tiers), if any."""
        if self._default_model is not None:
            return self._default_model
        pinned = [p.id for p in self.models.models if p.pinned]
        if pinned or self.models.models:
            return (pinned or [p.id for p in self.models.models])[0]
        ids = {m for node in self.ledger.nodes.values() for m in node.models}
        return ids.pop() if len(ids) == 1 else None

    def context_length(self, model: str) -> int | None:
        """The context window of `model` (profile first, else what its nodes report)."""
        return self._polled().context_length(model)

    def sampling(self, model: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """`request` with its sampling fields resolved: request, profile, model's own, built-ins."""
        generation: Mapping[str, Any] = {}
        for node in self.ledger.nodes.values():
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
                    decision = self._place(model, excluded)
                except OverloadedError as exc:
                    if failures:
                        raise OverloadedError(
                            f"{exc.message}; tried: {'; '.join(failures)}", details=exc.details
                        ) from exc
                    raise
                key = (decision.model, decision.node)
                self.ledger.hold(key)
                lease = Lease(
                    self.ledger, decision.model, decision.node, self.clients[decision.node]
                )
                if decision.action == "route":
                    return lease
                task = self.ledger.loads.get(key) or self.lifecycle.begin_load(decision)
            try:
                await asyncio.wait_for(asyncio.shield(task), self.load_timeout_s)
            except BaseException as exc:
                lease.release()
                if not isinstance(exc, Exception):
                    raise  # cancelled: the caller went away
                excluded.add(decision.node)
                failures.append(f"{decision.node}: {describe_error(exc)}")
                continue
            return lease

    def _place(self, model: str, excluded: Collection[str]) -> Plan:
        """Placement over the nodes that hold or could hold the model: routing to a loaded copy
        (nearly every request) is read from the ledger (`Ledger.least_busy`), joining a load
        from a view of only the model's own entries, so either costs the same whatever else the
        fleet holds; a load is planned over those nodes whole."""
        model_id = self._polled().resolve(model) or model
        node = self.ledger.least_busy(model_id, excluded)
        if node is not None:
            return Plan(model_id, node, "route", reason="loaded there; least busy such node")
        narrow = self.ledger.snapshot(model=model_id, narrow=True)
        try:
            decision = placement.plan(narrow, model, self.strategy, exclude=excluded)
            if decision.action in ("route", "wait"):
                return decision
        except CortexError:
            pass  # decided on the whole view below, with its own errors
        view = self.ledger.snapshot(model=model_id)
        return placement.plan(view, model, self.strategy, exclude=excluded)

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

    async def pull(self, source: str, node: str) -> dict[str, Any]:
        """Pull a model onto `node` from `source` (`hf:ORG/NAME[:QUANT]`) without loading it;
        the node's entry for it.

        While it runs, the node is polled every second (or every poll interval, if shorter)
        so its pull's bytes reach `/admin/status` (`cortex pull --node` draws them).
        """
        if node not in self.clients:
            raise ModelNotFoundError(f"no node named {node!r}", param="node")
        watch = asyncio.create_task(self._poll_every(node, min(1.0, self.poller.interval_s)))
        try:
            return await self.clients[node].pull(source)
        finally:
            watch.cancel()
            await self.refresh(node)

    async def _poll_every(self, node: str, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await self.refresh(node)

    async def unload(self, model: str, node: str | None = None) -> list[str]:
        """Unload `model` from `node` (or from every node where it is loaded); returns the nodes."""
        model_id = self.resolve(model)
        snapshot = self.snapshot()
        names = [node] if node is not None else list(snapshot.nodes)
        return await self.lifecycle.unload(model_id, snapshot, names)

    # -- inference ----------------------------------------------------------------------------

    async def complete(
        self,
        body: Mapping[str, Any],
        *,
        path: str = "/v1/chat/completions",
        route: Route | None = None,
        lease: Lease | None = None,
        resolved: bool = False,
    ) -> dict[str, Any]:
        """Run one non-streamed OpenAI request (chat by default) wherever its model is served.

        Sampling defaults are filled in per field; node failures move it to the next candidate.

        Args:
            body: the OpenAI request body (`model`, `messages` or `prompt`, ...).
            path: `/v1/chat/completions` or `/v1/completions`.
            route: filled in with where it went (optional).
            lease: a lease already held for it (from `acquire`), used for the first attempt.
            resolved: `body` has its sampling fields resolved already (`Fleet.sampling`).
        """
        request, route = self._prepared(body, route, lease, stream=False, resolved=resolved)
        return await dispatch.complete(self, path, request, route, lease=lease)

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
        request, route = self._prepared(body, route, lease, stream=True)
        return dispatch.stream(self, path, request, route, lease=lease)

    def stream_batches(
        self,
        body: Mapping[str, Any],
        *,
        path: str = "/v1/chat/completions",
        route: Route | None = None,
        lease: Lease | None = None,
        resolved: bool = False,
    ) -> AsyncIterator[Batch]:
        """As `stream`, but the events that arrived together come as one `Batch` (for relays)."""
        request, route = self._prepared(body, route, lease, stream=True, resolved=resolved)
        return dispatch.stream_batches(self, path, request, route, lease=lease)

    def _prepared(
        self,
        body: Mapping[str, Any],
        route: Route | None,
        lease: Lease | None,
        *,
        stream: bool,
        resolved: bool = False,
    ) -> tuple[dict[str, Any], Route]:
        """The request with its sampling resolved, and the route it will fill in."""
        model = lease.model if lease is not None else self.resolve(str(body.get("model", "")))
        route = route if route is not None else Route(model)
        route.model = model
        request = dict(body) if resolved else self.sampling(model, body)
        if stream:
            request["stream"] = True
        return request, route

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

    def touch(self, node: str) -> None:
        """`node` just sent us inference bytes: proof of life between polls."""
        self.ledger.alive_at[node] = time.monotonic()

    def mark_down(self, node: str, reason: str) -> None:
        """Mark `node` down at once (a request could not reach it); the poller brings it back."""
        if self.ledger.down(node, reason):
            log.warning("node %s is down: %s", node, reason)
            self.observer.on_node(node, False)

    def _on_poll(
        self,
        name: str,
        snap: NodeSnapshot | None,
        error: BaseException | None,
        started_at: float,
    ) -> None:
        if snap is None:
            busy = isinstance(error, asyncio.TimeoutError | TimeoutError | UpstreamTimeoutError)
            if busy and started_at - self.ledger.alive_at.get(name, -1e9) < self.poller.interval_s:
                return  # slow to answer a poll, but streaming to us right now: not down
            if self.ledger.down(name, describe_error(error)):
                log.warning("node %s is down: %s", name, describe_error(error))
            self.observer.on_node(name, False)
            return
        was_up = self.ledger.nodes[name].up
        unchanged = was_up and snap is self._last_polled.get(name)
        self._last_polled[name] = snap
        if not self.ledger.record(name, snap, started_at):
            return
        if not was_up:
            log.info("node %s is up", name)
        self.observer.on_node(name, True)
        if unchanged:
            return  # the node answered 304: nothing to re-plan, cost independent of its models
        if self.defrag_after_cycles:
            self.lifecycle.polled(snap, self.snapshot())
        self._keep_pinned()
