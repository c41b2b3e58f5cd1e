"""Cordon, drain and runtime pins: placement rules as pure functions, then the Fleet over three
real fake-harness neurons, with a drain under steady load that must not fail one request."""

from __future__ import annotations

import asyncio
import json
import logging
import tomllib
from collections import Counter
from collections.abc import Collection
from dataclasses import replace
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cortex.config import ModelProfile, ModelsConfig
from cortex.errors import CortexError, OverloadedError
from cortex.fleet import Lease, dispatch, in_process_client
from cortex.fleet.clients import NeuronClient, NodeClient, Timeouts
from cortex.fleet.dispatch import Route as Route_
from cortex.fleet.events import FleetObserver
from cortex.fleet.fleet import Fleet
from cortex.fleet.ledger import Ledger
from cortex.fleet.lifecycle import Lifecycle
from cortex.fleet.maintenance import Maintenance
from cortex.fleet.pins import Pins
from cortex.fleet.placement import plan
from cortex.fleet.state import ModelPolicy, NodeSnapshot
from cortex.testing import NeuronProcess, free_port, start_neuron_process

from ..helpers import chat, until
from .conftest import FleetFactory, neuron_config
from .helpers import loaded
from .test_placement import fleet, m, node


def test_a_cordoned_node_serves_what_it_has_but_takes_no_load() -> None:
    cordoned = node("a", m("m1", "loaded"), m("m2"))
    snapshot = fleet(_cordon(cordoned), node("b", m("m3")))
    assert plan(snapshot, "m1").node == "a"  # loaded there: still routed
    with pytest.raises(OverloadedError, match="uncordoned"):
        plan(snapshot, "m2")  # only a has it, and a is cordoned
    assert plan(fleet(cordoned, node("b")), "m2").node == "a"


def test_a_draining_node_is_routed_to_only_until_another_copy_is_ready() -> None:
    draining = _cordon(node("a", m("m1", "loaded")), draining=True)
    alone = fleet(draining, node("b", m("m1")))
    assert plan(alone, "m1").node == "a"
    both = fleet(draining, node("b", m("m1", "loaded"), in_flight=5))
    assert plan(both, "m1").node == "b"  # busier, but not on its way out


def test_a_pinned_model_waits_for_an_allowed_node_instead_of_failing() -> None:
    """The pinned-at-start race: b answers first, m1 may only go on a. No attempt is made (it
    would fail and back off ten poll intervals) until a is up; then it is loaded at once."""
    ledger = Ledger([], {})
    lifecycle = Lifecycle(
        ledger,
        {},
        FleetObserver(),
        refresh=_no_refresh,
        mark_down=lambda node, reason: None,
        spawn=lambda coro: coro.close(),
    )
    policies = (ModelPolicy("m1", nodes=("a",), pinned=True),)
    only_b = fleet(node("a", m("m1"), up=False), node("b", m("m1")), policies=policies)
    assert lifecycle.unpinned(only_b) == []
    both = fleet(node("a", m("m1")), node("b", m("m1")), policies=policies)
    assert lifecycle.unpinned(both) == ["m1"]


async def _no_refresh(node: str) -> None:
    return None


def _cordon(snapshot: NodeSnapshot, *, draining: bool = False) -> NodeSnapshot:
    return replace(snapshot, cordoned=True, draining=draining)


# -- over real neurons ------------------------------------------------------------------------


async def test_cordon_keeps_serving_and_places_nothing_new(
    nodes: dict[str, NeuronProcess], make_fleet: FleetFactory
) -> None:
    fleet_ = await make_fleet(nodes, [ModelProfile(id="m1", nodes=["a"])])
    await fleet_.load("m1", "a")
    ops = Maintenance(fleet_)
    ops.cordon("a")
    reply = await fleet_.complete(chat("m1"))
    assert "on a" in reply["choices"][0]["message"]["content"]
    await fleet_.load("m2")
    assert "m2" not in loaded(nodes["a"])
    assert fleet_.snapshot().nodes["a"].cordoned
    ops.uncordon("a")
    assert not fleet_.snapshot().nodes["a"].cordoned


async def test_drain_under_steady_load_fails_no_request(
    nodes: dict[str, NeuronProcess], make_fleet: FleetFactory
) -> None:
    profiles = [
        ModelProfile(id="m1", nodes=["a", "b"], pinned=True),  # pinned: copied to b first
        ModelProfile(id="m2", nodes=["a", "b"]),  # idle, unpinned: simply unloaded
    ]
    fleet_ = await make_fleet(nodes, profiles)
    # The pin loads m1 on the first allowed node up: a, unless a busy machine let b answer its
    # first poll first. The drain below starts from m1 on a only.
    await until(lambda: "m1" in loaded(nodes["a"]) | loaded(nodes["b"]))
    if "m1" not in loaded(nodes["a"]):
        await fleet_.load("m1", "a")
        await fleet_.unload("m1", "b")
    await fleet_.load("m2", "a")
    counts: Counter[str] = Counter()
    served_by: Counter[str] = Counter()
    stop = asyncio.Event()
    errors: list[str] = []

    async def worker(i: int) -> None:
        while not stop.is_set():
            try:
                if i % 2:
                    reply = await fleet_.complete(chat("m1", f"request {i}"))
                    text = reply["choices"][0]["message"]["content"]
                    finished = reply["choices"][0]["finish_reason"] is not None
                else:
                    chunks = [c async for c in fleet_.stream(chat("m1", f"stream {i}"))]
                    text = "".join(
                        c.payload["choices"][0]["delta"].get("content") or ""
                        for c in chunks
                        if not c.done and c.payload.get("choices")
                    )
                    finished = bool(chunks) and chunks[-1].done
            except CortexError as exc:
                counts["error"] += 1
                errors.append(f"{type(exc).__name__}: {exc.message}")
                continue
            except Exception:
                counts["lost"] += 1
                continue
            if finished and text.startswith("This is m1 on "):
                counts["complete"] += 1
                served_by[text.split(" on ")[1][0]] += 1
            else:
                counts["lost"] += 1

    workers = [asyncio.create_task(worker(i)) for i in range(6)]
    try:
        await until(lambda: counts["complete"] >= 20)
        report = await Maintenance(fleet_, recent_s=0.0).drain("a")
        before = counts["complete"]
        await until(lambda: counts["complete"] >= before + 20)
    finally:
        stop.set()
        await asyncio.gather(*workers)
    assert counts["error"] == 0 and counts["lost"] == 0, (counts, errors[:5])
    assert report.state == "drained"
    assert report.moved == [{"model": "m1", "to": "b"}] and report.unloaded == ["m2"]
    assert loaded(nodes["a"]) == set() and "m1" in loaded(nodes["b"])
    assert served_by["a"] > 0 and served_by["b"] > 0
    assert fleet_.snapshot().nodes["a"].cordoned


async def test_a_pinned_model_with_nowhere_to_go_stays(
    nodes: dict[str, NeuronProcess], make_fleet: FleetFactory
) -> None:
    fleet_ = await make_fleet(nodes, [ModelProfile(id="m3", nodes=["c"], pinned=True)])
    await until(lambda: "m3" in loaded(nodes["c"]))
    report = await Maintenance(fleet_).drain("c")
    assert report.state == "cordoned" and [s["model"] for s in report.stayed] == ["m3"]
    assert "m3" in loaded(nodes["c"])


async def test_runtime_pins_load_hold_and_save(
    nodes: dict[str, NeuronProcess], make_fleet: FleetFactory, tmp_path: Path
) -> None:
    models_toml = tmp_path / "models.toml"
    models_toml.write_text('# our models\n[[models]]\nid = "m1"\naliases = ["one"]\n')
    fleet_ = await make_fleet({"a": nodes["a"]}, [ModelProfile(id="m1", aliases=["one"])])
    pins = Pins(fleet_, models_toml)
    result = await pins.pin("one", "a", save=True)
    assert (result["model"], result["loaded_on"]) == ("m1", "a")
    assert "m1" in loaded(nodes["a"])
    saved = tomllib.loads(models_toml.read_text())
    assert saved["models"] == [{"id": "m1", "aliases": ["one"], "pinned": True, "nodes": ["a"]}]
    assert Path(result["backup"]).read_text().startswith("# our models")
    await fleet_.load("m2")
    await fleet_.load("m3")  # a holds two models: m2 makes room, m1 is pinned
    assert loaded(nodes["a"]) == {"m1", "m3"}
    pins.unpin("m1")
    assert not fleet_.policy("m1").pinned
    await fleet_.complete(chat("m3"))
    await fleet_.load("m4")  # now m1, unpinned and least recently used, makes room
    assert loaded(nodes["a"]) == {"m3", "m4"}
    with pytest.raises(CortexError, match=r"no models\.toml"):
        await Pins(fleet_).pin("m1", save=True)


async def test_a_whole_reply_read_in_one_piece_is_not_malformed() -> None:
    """Under load a short reply (role, token, finish, `[DONE]`) can arrive in one read; the
    `[DONE]` after the first token must not be checked as a choice (it failed as 'malformed')."""
    events = [
        {"choices": [{"index": 0, "delta": {"role": "assistant"}}]},
        {"choices": [{"index": 0, "delta": {"content": "hi"}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    body += b"data: [DONE]\n\n"

    async def chat_route(request: Request) -> Response:
        return Response(body, media_type="text/event-stream")

    app = Starlette(routes=[Route("/v1/chat/completions", chat_route, methods=["POST"])])
    nodes = _OneNode(in_process_client("a", app))
    route = Route_("m")
    chunks = [c async for c in dispatch.stream(nodes, "/v1/chat/completions", chat("m"), route)]
    assert [c.data for c in chunks][-1] == "[DONE]" and len(chunks) == 4
    assert route.node == "a"


class _OneNode:
    """The smallest `dispatch.Nodes`: one node, always chosen."""

    def __init__(self, client: NodeClient) -> None:
        self.client = client
        self.ledger = Ledger([client], {})

    async def acquire(
        self, model: str, *, exclude: Collection[str] = (), failures: list[str] | None = None
    ) -> Lease:
        if self.client.name in exclude:
            raise OverloadedError("no other node")
        self.ledger.hold((model, self.client.name))
        return Lease(self.ledger, model, self.client.name, self.client)

    def mark_down(self, node: str, reason: str) -> None:
        raise AssertionError(f"{node} marked down: {reason}")

    def refresh_soon(self, node: str) -> None:
        pass

    def touch(self, node: str) -> None:
        pass


async def test_a_pinned_model_loads_when_its_node_comes_up_late(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """m1 is pinned to node a; b answers at start, a only later. m1 is loaded on a as soon as a
    answers, without a failed attempt (which would back off ten poll intervals) before."""
    caplog.set_level(logging.WARNING, logger="cortex.fleet")
    port = free_port()
    b = start_neuron_process(neuron_config("b"))
    a: NeuronProcess | None = None
    timeouts = Timeouts(connect_s=1.0, request_s=30.0, load_s=30.0)
    clients = [
        NeuronClient("a", f"http://127.0.0.1:{port}", timeouts=timeouts),
        NeuronClient("b", b.url, timeouts=timeouts),
    ]
    profiles = [ModelProfile(id="m1", nodes=["a"], pinned=True)]
    fleet_ = Fleet(clients, models=ModelsConfig(models=profiles), poll_interval_s=0.25)
    try:
        await fleet_.start()
        await until(lambda: fleet_.poller.rounds >= 3)  # b up, a down, for a few polls
        assert fleet_.snapshot().nodes["b"].up and not fleet_.snapshot().nodes["a"].up
        a = await asyncio.to_thread(start_neuron_process, neuron_config("a"), port=port)
        await until(lambda: "m1" in loaded(a))  # type: ignore[arg-type]
    finally:
        await fleet_.close()
        for node in (a, b):
            if node is not None:
                node.stop()
    assert not [r for r in caplog.records if "could not be loaded" in r.getMessage()]
