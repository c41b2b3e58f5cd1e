"""Many clients leaving mid-stream: the node's generations are cancelled, and every in-flight
count (the neuron's, its KV cache use, the gateway's gauge and its fleet ledger) returns to zero."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .servers import (
    ADMIN,
    ANTHROPIC,
    API,
    chat,
    fake_neuron,
    gateway_config,
    message,
    start_gateway,
    start_neurons,
    wait_for,
)

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


async def test_clients_leaving_mid_stream_cancel_their_work_and_counts_return_to_zero() -> None:
    nodes = start_neurons({"a": fake_neuron("a", ["m1"], tokens_per_s=20.0)})
    node = nodes["a"]
    gateway = start_gateway(gateway_config(nodes))
    limits = httpx.Limits(max_connections=CLIENTS * 2)
    try:
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:

            async def leave_after_two_events(i: int) -> None:
                if i % 2:
                    path, headers = "/v1/messages", ANTHROPIC
                    body = message("m1", LONG, stream=True)
                else:
                    path, headers, body = "/v1/chat/completions", API, chat("m1", LONG, stream=True)
                async with client.stream(
                    "POST", gateway.url + path, json=body, headers=headers
                ) as response:
                    assert response.status_code == 200
                    seen = 0
                    async for line in response.aiter_lines():
                        seen += line.startswith("data: ")
                        if seen == 3:
                            break  # leaving closes the connection

            everyone = asyncio.gather(*(leave_after_two_events(i) for i in range(CLIENTS)))
            await asyncio.wait_for(everyone, 60)

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

        await asyncio.to_thread(wait_for, neuron_idle)
        await asyncio.to_thread(wait_for, gateway_idle)
        gone = samples(gateway.metrics_url)
        assert total(gone, "cortex_requests_total", "status=499") == CLIENTS
        cancelled = samples(node.url)
        assert total(cancelled, "cortex_neuron_requests_total", "status=499") == CLIENTS
        # The node is idle, not broken: the next request is answered in full.
        reply = httpx.post(
            f"{gateway.url}/v1/chat/completions", json=chat("m1"), headers=API, timeout=30
        )
        assert reply.json()["choices"][0]["message"]["content"] == (
            "This is m1 on a. You said: hello"
        )
    finally:
        gateway.stop()
        node.stop()
