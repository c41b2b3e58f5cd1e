"""The ledger's view of one model for one request: kept between requests while nothing moved,
and never stale about our own requests, loads, cordons or polls (over in-memory nodes)."""

from __future__ import annotations

from cortex.fleet import Fleet, placement
from cortex.testing import FakeNodeClient


def narrowed(fleet: Fleet, node: str, model: str = "m1") -> tuple[int, float | None, bool]:
    """(in flight, last used, cordoned) of `model` on `node` in a request's view."""
    view = fleet.ledger.snapshot(model=model, narrow=True).nodes[node]
    entry = view.models[model]
    return entry.in_flight, entry.last_used_at, view.cordoned


async def test_a_requests_view_follows_our_requests_cordons_and_polls() -> None:
    nodes = [FakeNodeClient(n, ["m1", "m2"], loaded=["m1"]) for n in "ab"]
    fleet = Fleet(nodes, poll_interval_s=3600.0)
    async with fleet:
        ledger = fleet.ledger
        first = ledger.snapshot(model="m1", narrow=True).nodes["a"]
        assert ledger.snapshot(model="m1", narrow=True).nodes["a"] is first  # nothing moved
        assert list(first.models) == ["m1"]

        lease = await fleet.acquire("m1")
        assert narrowed(fleet, lease.node)[0] == 1
        lease.release()
        in_flight, used, _ = narrowed(fleet, lease.node)
        assert in_flight == 0 and used is not None

        fleet.ledger.cordoned.add("b")
        assert narrowed(fleet, "b")[2]
        fleet.ledger.cordoned.discard("b")
        assert not narrowed(fleet, "b")[2]

        await fleet.load("m2")
        loaded_on = [
            name
            for name, node in ledger.snapshot(model="m2", narrow=True).nodes.items()
            if node.models["m2"].state == "loaded"
        ]
        assert len(loaded_on) == 1
        await fleet.poller.poll_once()
        assert ledger.snapshot(model="m1", narrow=True).nodes["a"] is not first  # a new poll


async def test_a_warm_requests_route_is_the_one_placement_plans() -> None:
    """`Ledger.least_busy` (every warm request's decision) agrees with placement's first rule
    as our requests, drains, evictions and failures move the nodes."""
    nodes = [FakeNodeClient(n, ["m1", "m2"], loaded=["m1"] if n != "c" else []) for n in "abc"]
    fleet = Fleet(nodes, poll_interval_s=3600.0)
    async with fleet:
        ledger = fleet.ledger

        def agree(exclude: frozenset[str] = frozenset()) -> str | None:
            chosen = ledger.least_busy("m1", exclude)
            planned = placement.plan(ledger.snapshot(), "m1", exclude=exclude)
            assert chosen == (planned.node if planned.action == "route" else None)
            return chosen

        first = agree()
        held = await fleet.acquire("m1")
        assert held.node == first and agree() != first  # the other copy is less busy now
        ledger.draining.add("b")
        assert agree() == "a"  # b is drained while a holds a copy, busy or not
        assert agree(frozenset({"a"})) == "b"  # and serves when a cannot
        ledger.evicting.add(("m1", "a"))
        assert agree() == "b"
        held.release()
        ledger.evicting.clear()
        ledger.draining.clear()
        assert agree(frozenset({"a", "b"})) is None  # only c is left, and m1 is not loaded there
