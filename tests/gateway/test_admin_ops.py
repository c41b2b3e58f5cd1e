"""The admin API's operations in-process: pin and unpin, cordon, drain and uncordon, over two
in-process fake neurons, with an admin key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest

from cortex.config import AuthConfig, FakeModel, ModelProfile, ModelsConfig
from cortex.fleet import Fleet, in_process_client
from cortex.fleet.transport import StreamingASGITransport
from cortex.gateway import GatewayMetrics, create_gateway_app
from cortex.neuron.app import create_neuron_app
from cortex.testing import FakeHarness

from ..helpers import chat
from .conftest import ADMIN_KEY, KEY

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
MODELS = [FakeModel(id=m, memory_mb=400.0, context_length=256) for m in ("m1", "m2", "m3")]


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Fleet]]:
    async with AsyncExitStack() as stack:
        clients = []
        for name in ("a", "b"):
            neuron = create_neuron_app(FakeHarness(MODELS, memory_mb=1000.0, node=name), name=name)
            await stack.enter_async_context(neuron.router.lifespan_context(neuron))
            clients.append(in_process_client(name, neuron))
        profiles = [ModelProfile(id="m1", nodes=["a", "b"])]
        fleet = Fleet(clients, models=ModelsConfig(models=profiles), poll_interval_s=0.2)
        await stack.enter_async_context(fleet)
        models_toml = tmp_path / "models.toml"
        models_toml.write_text('[[models]]\nid = "m1"\nnodes = ["a", "b"]\n')
        app = create_gateway_app(
            fleet,
            auth=AuthConfig(keys=[KEY], admin_keys=[ADMIN_KEY]),
            metrics=GatewayMetrics(),
            models_path=models_toml,
        )
        client = httpx.AsyncClient(
            transport=StreamingASGITransport(app), base_url="http://gateway", timeout=30
        )
        await stack.enter_async_context(client)
        yield client, fleet


async def test_the_operations_need_the_admin_key(
    gateway: tuple[httpx.AsyncClient, Fleet],
) -> None:
    client, _ = gateway
    for path in ("/admin/nodes/a/cordon", "/admin/nodes/a/drain", "/admin/models/pin"):
        refused = await client.post(path, json={"model": "m1"}, headers={"x-api-key": KEY})
        assert refused.status_code == 401


async def test_cordon_drain_uncordon(gateway: tuple[httpx.AsyncClient, Fleet]) -> None:
    client, fleet = gateway
    loaded = await client.post(
        "/admin/models/load", json={"model": "m1", "node": "a"}, headers=ADMIN
    )
    assert loaded.status_code == 200
    await client.post("/v1/chat/completions", json=chat("m1"), headers={"x-api-key": KEY})
    cordoned = await client.post("/admin/nodes/a/cordon", headers=ADMIN)
    assert cordoned.json() == {"node": "a", "cordoned": True}
    status = (await client.get("/admin/status", headers=ADMIN)).json()
    assert {n["name"]: n["cordoned"] for n in status["nodes"]} == {"a": True, "b": False}
    report = (await client.post("/admin/nodes/a/drain", headers=ADMIN)).json()
    assert report["state"] == "drained" and report["moved"] == [{"model": "m1", "to": "b"}]
    status = (await client.get("/admin/status", headers=ADMIN)).json()
    assert status["drains"]["a"]["state"] == "drained"
    where = {m["id"]: m["loaded_on"] for m in status["models"]}
    assert where["m1"] == ["b"]
    uncordoned = await client.post("/admin/nodes/a/uncordon", headers=ADMIN)
    assert uncordoned.json()["cordoned"] is False and not fleet.snapshot().nodes["a"].cordoned
    missing = await client.post("/admin/nodes/zz/cordon", headers=ADMIN)
    assert missing.status_code == 404


async def test_pin_and_unpin_with_save(
    gateway: tuple[httpx.AsyncClient, Fleet], tmp_path: Path
) -> None:
    client, fleet = gateway
    body = {"model": "m2", "node": "b", "save": True}
    pinned = (await client.post("/admin/models/pin", json=body, headers=ADMIN)).json()
    assert (pinned["model"], pinned["loaded_on"], pinned["saved"]) == ("m2", "b", True)
    assert fleet.policy("m2").pinned and fleet.policy("m2").nodes == ("b",)
    assert 'id = "m2"' in (tmp_path / "models.toml").read_text()
    assert (tmp_path / "models.toml.bak").exists()
    status = (await client.get("/admin/status", headers=ADMIN)).json()
    assert status["pins"]["m2"] == {"pinned": True, "node": "b", "saved": True}
    unpinned = await client.post("/admin/models/unpin", json={"model": "m2"}, headers=ADMIN)
    assert unpinned.json()["pinned"] is False and not fleet.policy("m2").pinned
    bad = await client.post("/admin/models/pin", json={"model": "m2", "save": 1}, headers=ADMIN)
    assert bad.status_code == 400
