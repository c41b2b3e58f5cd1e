"""The merged catalogue is built again only when what it shows changed, over in-memory nodes
(`cortex.testing.FakeNodeClient`), and `/v1/models` follows it."""

from __future__ import annotations

import httpx

from cortex.config import ModelProfile, ModelsConfig
from cortex.fleet import Fleet
from cortex.fleet.pins import Pins
from cortex.fleet.transport import StreamingASGITransport
from cortex.gateway import create_gateway_app
from cortex.testing import FakeNodeClient


def fake_fleet(models: ModelsConfig | None = None) -> tuple[Fleet, list[FakeNodeClient]]:
    nodes = [
        FakeNodeClient("a", ["m1", "m2"], loaded=["m1"]),
        FakeNodeClient("b", ["m2", "m3"]),
    ]
    return Fleet(nodes, models=models, poll_interval_s=3600.0), nodes


async def test_polls_that_bring_nothing_new_keep_the_very_same_catalogue() -> None:
    fleet, nodes = fake_fleet()
    async with fleet:
        first = fleet.catalogue()
        assert {e.id: e.loaded_on for e in first} == {"m1": ("a",), "m2": (), "m3": ()}
        await fleet.poller.poll_once()
        assert fleet.catalogue() is first
        assert all(node.fetches == 2 for node in nodes)


async def test_a_load_a_node_going_down_and_a_pin_each_change_it() -> None:
    fleet, _ = fake_fleet(ModelsConfig(models=[ModelProfile(id="m3")]))
    async with fleet:
        before = fleet.catalogue()
        await fleet.load("m3")
        loaded = fleet.catalogue()
        assert loaded is not before
        assert {e.id: e.loaded_on for e in loaded}["m3"] == ("b",)

        fleet.mark_down("b", "unplugged")
        down = fleet.catalogue()
        assert {e.id: e.loaded_on for e in down}["m3"] == ()
        await fleet.poller.poll_once()  # b answers again
        assert {e.id: e.loaded_on for e in fleet.catalogue()}["m3"] == ("b",)

        assert not next(e for e in fleet.catalogue() if e.id == "m3").pinned
        await Pins(fleet).pin("m3")
        assert next(e for e in fleet.catalogue() if e.id == "m3").pinned


async def test_v1_models_follows_the_catalogue_in_both_dialects() -> None:
    fleet, _ = fake_fleet()
    async with fleet:
        app = create_gateway_app(fleet)
        transport = StreamingASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            listing = (await client.get("/v1/models")).json()
            assert [m["id"] for m in listing["data"]] == ["m1", "m2", "m3"]
            assert listing["data"][2]["loaded_on"] == []
            await fleet.load("m3")
            one = (await client.get("/v1/models/m3")).json()
            assert one["loaded_on"] == ["b"] and one["loadable_on"] == ["b"]
            page = await client.get(
                "/v1/models", params={"limit": 2}, headers={"anthropic-version": "2023-06-01"}
            )
            body = page.json()
            assert [m["id"] for m in body["data"]] == ["m1", "m2"] and body["has_more"]
            missing = await client.get("/v1/models/nope")
            assert missing.status_code == 404
            assert missing.json()["error"]["code"] == "model_not_found"


async def test_a_fleet_of_fake_nodes_answers_chats_whole_and_streamed() -> None:
    fleet, nodes = fake_fleet()
    async with fleet:
        body = {"model": "m2", "messages": [{"role": "user", "content": "hi"}]}
        reply = await fleet.complete(body)
        assert reply["choices"][0]["message"]["content"].endswith("You said: hi")
        text = ""
        async for chunk in fleet.stream(body):
            if not chunk.done:
                choice = chunk.payload["choices"][0]
                text += choice["delta"].get("content") or ""
        assert text == reply["choices"][0]["message"]["content"]
        assert sum(node.requests for node in nodes) == 2
