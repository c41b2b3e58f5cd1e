"""The gateway app in-process over a fake neuron: routes, streams, context limits, keep-alives."""

from __future__ import annotations

import asyncio
import json
from functools import partial
from typing import Any

from cortex.config import FakeModel, ModelProfile
from cortex.translate import SSEDecoder

from ..helpers import chat
from ..helpers import message as anthropic_message
from .conftest import Local, local_gateway

message = partial(anthropic_message, max_tokens=64)  # m1's context is 256 tokens


async def events(local: Local, path: str, body: dict[str, Any]) -> tuple[int, list[Any], bytes]:
    """Stream a request; (status, decoded SSE events, raw bytes)."""
    decoder = SSEDecoder()
    raw = b""
    out: list[Any] = []
    async with local.client.stream("POST", path, json=body) as response:
        async for chunk in response.aiter_raw():
            raw += chunk
            out += decoder.feed(chunk)
        return response.status_code, out, raw


async def test_openai_chat_plain_and_streamed(local: Local) -> None:
    reply = await local.client.post("/v1/chat/completions", json=chat())
    assert reply.status_code == 200
    assert reply.json()["choices"][0]["message"]["content"] == "This is m1 on a. You said: hello"
    status, got, _ = await events(local, "/v1/chat/completions", chat(stream=True))
    assert status == 200 and got[-1].is_done
    text = "".join(
        (json.loads(e.data)["choices"] or [{}])[0].get("delta", {}).get("content") or ""
        for e in got[:-1]
    )
    assert text == "This is m1 on a. You said: hello"
    # the gateway asks the node for usage, but passes the usage chunk on only when asked
    assert all(json.loads(e.data)["choices"] for e in got[:-1])
    _, with_usage, _ = await events(
        local, "/v1/chat/completions", chat(stream=True, stream_options={"include_usage": True})
    )
    assert json.loads(with_usage[-2].data)["usage"]["completion_tokens"] == 8


async def test_legacy_completions(local: Local) -> None:
    reply = await local.client.post("/v1/completions", json={"model": "m1", "prompt": "say it"})
    assert reply.status_code == 200
    assert reply.json()["choices"][0]["text"].endswith("You said: say it")


async def test_anthropic_messages_plain_and_streamed(local: Local) -> None:
    reply = await local.client.post("/v1/messages", json=message())
    assert reply.status_code == 200
    body = reply.json()
    assert body["content"] == [{"type": "text", "text": "This is m1 on a. You said: hello"}]
    assert body["stop_reason"] == "end_turn" and body["model"] == "m1"
    status, got, _ = await events(local, "/v1/messages", message(stream=True))
    assert status == 200
    kinds = [e.event for e in got]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    start = json.loads(got[0].data)
    assert start["message"]["usage"]["input_tokens"] == 4  # counted before dispatch


async def test_context_overflow_is_refused_in_each_dialect(local: Local) -> None:
    long = "word " * 300  # 300 fake tokens: more than the 256 of m1's context
    reply = await local.client.post("/v1/messages", json=message(text=long))
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith(
        "input length and `max_tokens` exceed context limit: 303 + 64 > 256"
    )
    streamed = await local.client.post("/v1/messages", json=message(text=long, stream=True))
    assert streamed.status_code == 400 and "303 + 64 > 256" in streamed.json()["error"]["message"]
    reply = await local.client.post("/v1/chat/completions", json=chat(text=long, max_tokens=10))
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "context_length_exceeded"
    assert local.harness.opened == ["m1"]  # nothing was generated for them


async def test_anthropic_max_tokens_is_clamped_to_what_is_left(local: Local) -> None:
    text = "word " * 200  # 203 tokens of 256: room for 53
    reply = await local.client.post("/v1/messages", json=message(text=text, max_tokens=32000))
    assert reply.status_code == 200
    assert reply.json()["usage"]["input_tokens"] == 203
    # OpenAI clients asking for too much are refused, not clamped
    refused = await local.client.post("/v1/chat/completions", json=chat(text=text, max_tokens=100))
    assert refused.status_code == 400
    assert "203 + 100 > 256" in refused.json()["error"]["message"]


async def test_count_tokens_uses_the_models_tokenizer(local: Local) -> None:
    reply = await local.client.post(
        "/v1/messages/count_tokens",
        json={
            "model": "m1",
            "system": "be brief",
            "messages": [{"role": "user", "content": "a b c"}],
        },
    )
    assert reply.status_code == 200
    assert reply.json() == {"input_tokens": 3 + 2 + 3 + 3}  # fake: words + 3 per message


async def test_models_in_both_shapes_and_unknown_models() -> None:
    gateway, close = await local_gateway(profiles=[ModelProfile(id="m1", aliases=["fast"])])
    try:
        openai = (await gateway.client.get("/v1/models")).json()
        assert openai["object"] == "list"
        assert {m["id"] for m in openai["data"]} == {"m1", "fast"}
        assert openai["data"][0]["max_model_len"] == 256
        anthropic = (
            await gateway.client.get("/v1/models", headers={"anthropic-version": "2023-06-01"})
        ).json()
        assert anthropic["data"][0]["type"] == "model" and anthropic["has_more"] is False
        one = await gateway.client.get("/v1/models/fast")
        assert one.status_code == 200 and one.json()["alias_of"] == "m1"
        missing = await gateway.client.post("/v1/chat/completions", json=chat("nope"))
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "model_not_found"
        missing = await gateway.client.post("/v1/messages", json=message("nope"))
        assert missing.json()["type"] == "error"
        # Claude Code's tier names map to the default model (the first profile here)
        claude = await gateway.client.post("/v1/messages", json=message("claude-sonnet-4-5"))
        assert claude.status_code == 200 and claude.json()["model"] == "claude-sonnet-4-5"
        alias = await gateway.client.post("/v1/chat/completions", json=chat("fast"))
        assert alias.status_code == 200
    finally:
        await close()


async def test_keep_alives_during_a_cold_load() -> None:
    models = [FakeModel(id="m1", memory_mb=400.0), FakeModel(id="m2", memory_mb=400.0)]
    gateway, close = await local_gateway(models, load_s=1.0)
    try:
        _, got, raw = await events(gateway, "/v1/chat/completions", chat(stream=True))
        assert raw.startswith(b": keep-alive\n\n") and got[-1].is_done
        _, got, raw = await events(gateway, "/v1/messages", message("m2", stream=True))
        assert raw.startswith(b"event: ping\n") and got[-1].event == "message_stop"
    finally:
        await close()


async def test_busy_fleet_answers_503_or_529_with_retry_after() -> None:
    models = [FakeModel(id="m1", memory_mb=400.0), FakeModel(id="m2", memory_mb=400.0)]
    gateway, close = await local_gateway(models, memory_mb=500.0, tokens_per_s=20.0)
    try:
        long = chat(text="keep me busy " * 5, stream=True)
        async with gateway.client.stream("POST", "/v1/chat/completions", json=long) as busy:
            await anext(busy.aiter_raw())
            refused = await gateway.client.post("/v1/chat/completions", json=chat("m2"))
            assert refused.status_code == 503 and refused.headers["retry-after"]
            refused = await gateway.client.post("/v1/messages", json=message("m2"))
            assert refused.status_code == 529
            assert refused.json()["error"]["type"] == "overloaded_error"
    finally:
        await close()


async def test_client_disconnect_cancels_the_generation() -> None:
    gateway, close = await local_gateway(tokens_per_s=20.0)
    try:
        body = chat(text="a long reply please " * 10, stream=True)
        async with gateway.client.stream("POST", "/v1/chat/completions", json=body) as response:
            await anext(response.aiter_raw())
        stats = gateway.harness.stats
        for _ in range(200):
            if stats().running == 0:
                break
            await asyncio.sleep(0.01)
        assert stats().running == 0
        requests = gateway.metrics.requests.labels("m1", "a", "openai", "499")
        for _ in range(200):
            if requests._value.get() == 1:
                break
            await asyncio.sleep(0.01)
        assert requests._value.get() == 1
    finally:
        await close()


async def test_failure_after_the_first_token_is_an_error_event_in_the_dialect() -> None:
    gateway, close = await local_gateway(tokens_per_s=20.0)
    try:
        body = message(text="long enough to interrupt " * 5, stream=True)
        async with gateway.client.stream("POST", "/v1/messages", json=body) as response:
            decoder = SSEDecoder()
            seen: list[Any] = []
            chunks = response.aiter_raw()
            async for chunk in chunks:
                seen += decoder.feed(chunk)
                if any(e.event == "content_block_delta" for e in seen):
                    break
            await gateway.harness.unload("m1", drain_timeout_s=0)
            async for chunk in chunks:
                seen += decoder.feed(chunk)
        assert seen[-1].event == "error"
        error = json.loads(seen[-1].data)
        assert error["type"] == "error" and "was unloaded" in error["error"]["message"]
    finally:
        await close()


async def test_health_and_probes(local: Local) -> None:
    health = (await local.client.get("/health")).json()
    assert health["status"] == "ok" and health["nodes_up"] == 1
    assert (await local.client.head("/")).status_code == 200
    assert (await local.client.head("/api/hello")).status_code == 200
    missing = await local.client.get("/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    bad = await local.client.post("/v1/messages", content=b"{not json")
    assert bad.status_code == 400 and bad.json()["type"] == "error"


async def test_inference_routes_answer_other_methods_in_the_dialect(local: Local) -> None:
    # POST goes straight to the pipeline; anything else still takes the router's answers.
    wrong = await local.client.get("/v1/chat/completions")
    assert wrong.status_code == 405 and wrong.json()["error"]["type"] == "invalid_request_error"
    wrong = await local.client.get("/v1/messages")
    assert wrong.status_code == 405 and wrong.json()["type"] == "error"
    for path in ("/v1/completions", "/v1/embeddings", "/v1/responses"):
        assert (await local.client.put(path, json={})).status_code == 405
    slash = await local.client.post("/v1/chat/completions/", json=chat(), follow_redirects=True)
    assert slash.status_code == 200 and slash.json()["choices"][0]["message"]["content"]


async def test_admin_status_load_unload_and_placement(local: Local) -> None:
    plan = (await local.client.get("/admin/placement", params={"model": "m1"})).json()
    assert plan["action"] == "load" and plan["node"] == "a" and plan["evictions"] == []
    loaded = (await local.client.post("/admin/models/load", json={"model": "m1"})).json()
    assert loaded["node"] == "a"
    status = (await local.client.get("/admin/status")).json()
    assert status["nodes"][0]["up"] and status["models"][0]["nodes"][0]["state"] == "loaded"
    assert (await local.client.get("/admin/placement", params={"model": "m1"})).json()[
        "action"
    ] == "route"
    gone = (await local.client.post("/admin/models/unload", json={"model": "m1"})).json()
    assert gone == {"model": "m1", "unloaded_from": ["a"]}
    bad = await local.client.post("/admin/models/load", json={"model": "zzz"})
    assert bad.status_code == 404
