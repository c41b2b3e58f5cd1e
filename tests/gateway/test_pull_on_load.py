"""Pull on load: a profile's `source` makes a node that lacks the model pull it from the hub
(the stand-in of `cortex.testing.hub`, through the real `huggingface_hub`), then load it; and
a load's phases, as the gateway shows them while it runs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cortex.config import FakeModel, ModelProfile
from cortex.neuron.pull import HubPuller
from cortex.testing.checkpoints import tiny_llama_files
from cortex.testing.hub import StandInHub
from cortex.translate import SSEDecoder

from .conftest import Local, local_gateway

SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")


@pytest.fixture(autouse=True)
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """The session runs with HF_HUB_OFFLINE=1: put the client online for the stand-in hub."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def hub() -> Iterator[StandInHub]:
    # ~110 KB of weights in 64 KB chunks, 0.2 s apart: a pull of about a second.
    with StandInHub(chunk_delay_s=0.2) as hub:
        hub.add("org/tiny", tiny_llama_files(shards=2))
        yield hub


async def _gateway(hub: StandInHub, cache: Path, source: str) -> tuple[Local, Any]:
    return await local_gateway(
        [FakeModel(id="m1", memory_mb=400.0)],
        profiles=[ModelProfile(id="tiny", source=source)],
        puller=HubPuller(endpoint=hub.url, cache_dir=cache, supported={"llama"}),
    )


async def _stream(local: Local, body: dict[str, Any]) -> tuple[int, bytes, list[Any]]:
    decoder, raw, events = SSEDecoder(), b"", []
    async with local.client.stream("POST", "/v1/chat/completions", json=body) as response:
        async for chunk in response.aiter_raw():
            raw += chunk
            events += decoder.feed(chunk)
        return response.status_code, raw, events


async def test_two_requests_share_one_pull_with_keep_alives(
    hub: StandInHub, tmp_path: Path
) -> None:
    gateway, close = await _gateway(hub, tmp_path, "hf:org/tiny")
    try:
        listed = (await gateway.client.get("/v1/models")).json()["data"]
        assert {m["id"]: m["loadable_on"] for m in listed}["tiny"] == ["a"]
        body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        first = asyncio.ensure_future(_stream(gateway, body))
        seen: dict[str, Any] = {}
        while not first.done():  # the pull is visible in /v1/models while it runs
            models = (await gateway.client.get("/v1/models")).json()["data"]
            loading = {m["id"]: m.get("loading") for m in models}["tiny"]
            if loading and loading["a"]["phase"] == "pulling" and loading["a"]["fraction"]:
                seen = loading["a"]
                break
            await asyncio.sleep(0.05)
        second = asyncio.ensure_future(_stream(gateway, {**body, "model": "tiny"}))
        results = await asyncio.gather(first, second)
    finally:
        await close()
    assert seen["total_bytes"] > seen["bytes"] > 0 and 0 < seen["fraction"] < 1
    for status, raw, events in results:
        assert status == 200 and raw.startswith(b": keep-alive\n\n")
        assert events[-1].is_done
        text = "".join(
            (json.loads(e.data)["choices"] or [{}])[0].get("delta", {}).get("content") or ""
            for e in events[:-1]
        )
        assert text == "This is tiny on a. You said: hi"
    downloads = [path for method, path, _ in hub.requests if method == "GET"]
    assert sorted(p for p in downloads if p in SHARDS) == sorted(SHARDS)  # one pull


async def test_a_failed_pull_is_a_clear_error_in_each_dialect(
    hub: StandInHub, tmp_path: Path
) -> None:
    gateway, close = await _gateway(hub, tmp_path, "hf:org/missing")
    try:
        chat = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
        openai = await gateway.client.post("/v1/chat/completions", json=chat)
        anthropic = await gateway.client.post("/v1/messages", json={**chat, "max_tokens": 8})
        models = (await gateway.client.get("/v1/models")).json()["data"]
    finally:
        await close()
    assert openai.status_code >= 400
    assert "there is no model org/missing on http://127.0.0.1" in openai.json()["error"]["message"]
    assert anthropic.json()["type"] == "error"
    assert "no model org/missing" in anthropic.json()["error"]["message"]
    assert {m["id"]: m["loaded_on"] for m in models}["tiny"] == []
    assert not any(tmp_path.rglob("*.safetensors"))


async def test_admin_pull_onto_a_node_without_loading(hub: StandInHub, tmp_path: Path) -> None:
    gateway, close = await _gateway(hub, tmp_path, "hf:org/tiny")
    try:
        pulled = await gateway.client.post(
            "/admin/models/pull", json={"source": "hf:org/tiny", "node": "a"}
        )
        models = {m["id"]: m for m in (await gateway.client.get("/v1/models")).json()["data"]}
        chat = {"model": "org/tiny", "messages": [{"role": "user", "content": "hi"}]}
        reply = await gateway.client.post("/v1/chat/completions", json=chat)
        nowhere = await gateway.client.post(
            "/admin/models/pull", json={"source": "hf:org/tiny", "node": "b"}
        )
        missing = await gateway.client.post("/admin/models/pull", json={"source": "org/none"})
    finally:
        await close()
    assert pulled.status_code == 200, pulled.text
    body = pulled.json()
    assert body["node"] == "a" and body["model"]["id"] == "org/tiny"
    assert body["model"]["state"] == "available"  # pulled, not loaded
    assert models["org/tiny"]["loadable_on"] == ["a"] and models["org/tiny"]["loaded_on"] == []
    assert reply.status_code == 200  # then loaded on its first request
    assert nowhere.status_code == 404 and "no node named 'b'" in nowhere.text
    assert missing.status_code == 404 and "no model org/none" in missing.text  # the one neuron


async def test_a_load_shows_its_phases_in_models_and_status() -> None:
    # The fake reports `loading` for four fifths of load_s, then `warming`, as the engine does.
    gateway, close = await local_gateway([FakeModel(id="m1", memory_mb=400.0)], load_s=2.0)
    try:
        load = asyncio.ensure_future(
            gateway.client.post("/admin/models/load", json={"model": "m1"})
        )
        listed: list[str] = []
        status: list[str] = []
        while not load.done():
            models = (await gateway.client.get("/v1/models")).json()["data"]
            for where in (models[0].get("loading") or {}).values():
                listed.append(where["phase"])
            nodes = (await gateway.client.get("/admin/status")).json()["models"][0]["nodes"]
            status += [n["progress"]["phase"] for n in nodes if n["progress"]]
            await asyncio.sleep(0.02)
        assert (await load).status_code == 200
    finally:
        await close()
    assert list(dict.fromkeys(listed)) == ["loading", "warming"]
    assert list(dict.fromkeys(status)) == ["loading", "warming"]
