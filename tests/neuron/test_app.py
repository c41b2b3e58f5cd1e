"""The neuron's wire API in-process (httpx.ASGITransport) over the fake harness."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pytest

from cortex.neuron.openapi import openapi_document

from .conftest import Neuron, NeuronFactory
from .schema import check

READ_TOOL = {
    "type": "function",
    "function": {
        "name": "read_file",
        "description": "Read a file.",
        "parameters": {
            "type": "object",
            "properties": {"path": {"type": "string"}, "limit": {"type": "integer"}},
            "required": ["path", "limit"],
        },
    },
}


def response_schema(path: str, method: str = "get", status: str = "200") -> dict[str, Any]:
    document = openapi_document()
    content = document["paths"][path][method]["responses"][status]["content"]
    return dict(content["application/json"]["schema"])


def conforms(body: Any, path: str, method: str = "get", status: str = "200") -> None:
    check(body, response_schema(path, method, status), openapi_document())


def sse_payloads(text: str) -> list[Any]:
    out = []
    for block in text.strip().split("\n\n"):
        assert block.startswith("data: "), block
        data = block.removeprefix("data: ")
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


async def test_node_routes_answer_in_their_documented_shapes(neuron: Neuron) -> None:
    health = (await neuron.client.get("/health")).json()
    conforms(health, "/health")
    assert health["status"] == "ok"
    status = (await neuron.client.get("/status")).json()
    conforms(status, "/status")
    assert status["name"] == "test-node"
    assert status["harness"] == "fake"
    assert status["memory"] == {"limit_mb": 1000, "used_mb": 400.0, "free_mb": 600.0}
    assert status["devices"][0]["kind"] in ("cpu", "cuda")
    models = (await neuron.client.get("/models")).json()
    conforms(models, "/models")
    states = {m["id"]: m["state"] for m in models["data"]}
    assert states == {"small": "loaded", "medium": "loaded", "org/large": "available"}
    listed = (await neuron.client.get("/v1/models")).json()
    conforms(listed, "/v1/models")
    assert [m["id"] for m in listed["data"]] == ["medium", "small"]


async def test_the_openapi_document_covers_exactly_the_routes(neuron: Neuron) -> None:
    document = (await neuron.client.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.1")
    routes = {
        (route.path, method.lower())
        for route in neuron.app.routes
        for method in getattr(route, "methods", ()) or ()
        if method != "HEAD"
    }
    documented = {(path, method) for path, ops in document["paths"].items() for method in ops}
    assert routes == documented
    chat = document["components"]["schemas"]["ChatCompletionRequest"]
    assert {"top_k", "min_p", "repetition_penalty", "stream_options"} <= set(chat["properties"])


async def test_load_and_unload_over_http(make_neuron: NeuronFactory) -> None:
    async with make_neuron() as neuron:
        response = await neuron.load("medium")
        assert response.status_code == 200
        conforms(response.json(), "/models/load", "post")
        assert response.json()["state"] == "loaded"
        response = await neuron.client.post("/models/unload", json={"model": "medium"})
        assert response.status_code == 200
        assert response.json()["state"] == "available"
        assert (await neuron.load("nope")).status_code == 404
        bad = await neuron.load("../../etc/passwd")
        assert bad.status_code == 400
        assert bad.json()["error"]["param"] == "model"


async def test_every_route_but_health_needs_the_token(make_neuron: NeuronFactory) -> None:
    chat = {"model": "small", "messages": [{"role": "user", "content": "hi"}]}
    routes = [
        ("POST", "/models/load", {"model": "small"}),
        ("POST", "/models/unload", {"model": "small"}),
        ("POST", "/v1/chat/completions", chat),
        ("POST", "/v1/completions", {"model": "small", "prompt": "hi"}),
        ("POST", "/tokenize", chat),
        ("GET", "/v1/models", None),
        ("GET", "/models", None),
        ("GET", "/status", None),
        ("GET", "/metrics", None),
        ("GET", "/openapi.json", None),
    ]
    async with make_neuron(token="s3cret") as neuron:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "Basic s3cret"}):
            for method, route, body in routes:
                response = await neuron.client.request(method, route, json=body, headers=headers)
                assert response.status_code == 401, (method, route)
                assert response.json()["error"]["type"] == "authentication_error"
                assert response.headers["www-authenticate"] == "Bearer"
        assert neuron.harness.model("small").state == "available"
        assert (await neuron.client.get("/health")).status_code == 200  # liveness stays open
        assert (await neuron.load("small", token="s3cret")).status_code == 200
        token = {"authorization": "Bearer s3cret"}
        reply = await neuron.client.post("/v1/chat/completions", json=chat, headers=token)
        assert reply.status_code == 200
        assert (await neuron.client.get("/status", headers=token)).status_code == 200


async def test_insufficient_memory_is_507_with_required_and_free(neuron: Neuron) -> None:
    response = await neuron.load("org/large")
    assert response.status_code == 507
    error = response.json()["error"]
    conforms(response.json(), "/models/load", "post", "507")
    assert (error["code"], error["required_mb"], error["free_mb"]) == (
        "insufficient_memory",
        800,
        600,
    )


async def test_chat_through_the_openai_sdk(neuron: Neuron) -> None:
    reply = await neuron.openai.chat.completions.create(
        model="medium", messages=[{"role": "user", "content": "hi there"}], max_tokens=100
    )
    assert reply.choices[0].message.content == "This is medium on test-node. You said: hi there"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.completion_tokens == 9
    raw = await neuron.client.post(
        "/v1/chat/completions",
        json={"model": "medium", "messages": [{"role": "user", "content": "hi there"}]},
    )
    conforms(raw.json(), "/v1/chat/completions", "post")

    stream = await neuron.openai.chat.completions.create(
        model="medium",
        messages=[{"role": "user", "content": "hi there"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage, finish = "", None, None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        else:
            usage = chunk.usage
    assert text == reply.choices[0].message.content
    assert finish == "stop"
    assert usage is not None and usage.total_tokens == reply.usage.total_tokens


async def test_max_tokens_cuts_the_reply_with_length(neuron: Neuron) -> None:
    reply = await neuron.openai.chat.completions.create(
        model="medium", messages=[{"role": "user", "content": "hi"}], max_completion_tokens=3
    )
    assert reply.choices[0].message.content == "This is medium"
    assert reply.choices[0].finish_reason == "length"


async def test_ignore_eos_makes_the_fake_talk_to_max_tokens(neuron: Neuron) -> None:
    reply = await neuron.openai.chat.completions.create(
        model="medium",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=25,
        extra_body={"ignore_eos": True},
    )
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 25


async def test_usage_chunk_only_when_asked(neuron: Neuron) -> None:
    body = {"model": "small", "messages": [{"role": "user", "content": "x"}], "stream": True}
    plain = sse_payloads((await neuron.client.post("/v1/chat/completions", json=body)).text)
    assert plain[-1] == "[DONE]"
    assert all(chunk["choices"] and "usage" not in chunk for chunk in plain[:-1])
    assert plain[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    body["stream_options"] = {"include_usage": True}
    asked = sse_payloads((await neuron.client.post("/v1/chat/completions", json=body)).text)
    assert asked[-2]["choices"] == [] and asked[-2]["usage"]["completion_tokens"] == 8
    assert all(chunk["usage"] is None for chunk in asked[:-2])


async def test_the_fake_calls_an_offered_tool_when_told_to(neuron: Neuron) -> None:
    messages: Any = [{"role": "user", "content": "please call tool read_file now"}]
    reply = await neuron.openai.chat.completions.create(
        model="medium", messages=messages, tools=[READ_TOOL]
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert (call.function.name, json.loads(call.function.arguments)) == ("read_file", {"path": "x"})

    stream = await neuron.openai.chat.completions.create(
        model="medium", messages=messages, tools=[READ_TOOL], stream=True
    )
    calls = [c.choices[0].delta.tool_calls async for c in stream if c.choices[0].delta.tool_calls]
    assert calls[0] is not None and calls[0][0].function is not None
    assert calls[0][0].id == call.id and calls[0][0].function.arguments == '{"path": "x"}'

    messages += [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "file contents"},
    ]
    follow_up = await neuron.openai.chat.completions.create(
        model="medium", messages=messages, tools=[READ_TOOL]
    )
    assert follow_up.choices[0].message.content is not None
    assert follow_up.choices[0].message.content.endswith("You said: file contents")
    unknown = await neuron.openai.chat.completions.create(
        model="medium", messages=[{"role": "user", "content": "call tool nope"}], tools=[READ_TOOL]
    )
    assert unknown.choices[0].finish_reason == "stop"


async def test_completions_through_the_openai_sdk(neuron: Neuron) -> None:
    reply = await neuron.openai.completions.create(model="medium", prompt="tell me", max_tokens=50)
    assert reply.choices[0].text == "This is medium on test-node. You said: tell me"
    assert reply.object == "text_completion"
    raw = await neuron.client.post("/v1/completions", json={"model": "medium", "prompt": "x"})
    conforms(raw.json(), "/v1/completions", "post")
    stream = await neuron.openai.completions.create(
        model="medium", prompt=[[1, 2, 3]], max_tokens=4, stream=True, logprobs=1
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].text for c in chunks) == "This is medium on"
    assert chunks[-1].choices[0].finish_reason == "length"
    assert chunks[0].choices[0].logprobs is not None
    assert chunks[0].choices[0].logprobs.tokens == ["This"]


def _chat(**fields: Any) -> bytes:
    body = {"model": "small", "messages": [{"role": "user", "content": "x"}], **fields}
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


IMAGE = [{"type": "image_url", "image_url": {"url": "data:,"}}]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (_chat(model=None), "model"),
        (_chat(messages="hello"), "messages"),
        (_chat(messages=[]), "messages"),
        (_chat(messages=[{"role": "wizard", "content": "x"}]), "messages.0.role"),
        (_chat(max_tokens="3"), "max_tokens"),
        (_chat(temperature="hot"), "temperature"),
        (_chat(temperature=3), "temperature"),
        (_chat(stream="yes"), "stream"),
        (_chat(n=65), "n"),  # n > 1 draws samples, up to 64
        (_chat(model=7), "model"),
        (_chat(model="../etc/passwd"), "model"),
        (_chat(messages=[{"role": "user", "content": IMAGE}]), "messages.0.content.0.type"),
    ],
)
async def test_bad_chat_requests_get_400_in_the_openai_envelope(
    neuron: Neuron, body: bytes, param: str | None
) -> None:
    response = await neuron.client.post(
        "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]


async def test_bad_completion_requests_get_400(neuron: Neuron) -> None:
    for body in (
        {"model": "small", "prompt": ["a", "b"]},
        {"model": "small", "prompt": "a", "echo": True},
        {"model": "small", "prompt": []},
        {"model": "small", "prompt": {"text": "a"}},
    ):
        response = await neuron.client.post("/v1/completions", json=body)
        assert response.status_code == 400, body
        assert response.json()["error"]["type"] == "invalid_request_error"


async def test_a_prompt_too_long_is_context_length_exceeded(neuron: Neuron) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await neuron.openai.chat.completions.create(
            model="small", messages=[{"role": "user", "content": "word " * 70}]
        )
    assert caught.value.code == "context_length_exceeded"
    assert "exceed context limit" in caught.value.message
    streamed = await neuron.client.post(
        "/v1/chat/completions",
        json={
            "model": "small",
            "stream": True,
            "max_tokens": 60,
            "messages": [{"role": "user", "content": "a few words"}],
        },
    )
    assert streamed.status_code == 400
    assert streamed.json()["error"]["code"] == "context_length_exceeded"


async def test_a_model_not_loaded_is_404_naming_the_loaded_ones(neuron: Neuron) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await neuron.openai.chat.completions.create(
            model="org/large", messages=[{"role": "user", "content": "x"}]
        )
    assert "loaded models: medium, small" in caught.value.message
    body: Any = caught.value.body
    assert body["loaded_models"] == ["medium", "small"]


async def test_a_full_queue_is_503_with_retry_after(make_neuron: NeuronFactory) -> None:
    async with make_neuron(tokens_per_s=50, max_running=1, max_waiting=0) as neuron:
        await neuron.load("medium")
        body = {"model": "medium", "messages": [{"role": "user", "content": "x"}]}
        first = asyncio.create_task(neuron.client.post("/v1/chat/completions", json=body))
        while neuron.harness.stats().running == 0:
            await asyncio.sleep(0.005)
        refused = await neuron.client.post("/v1/chat/completions", json=body)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["message"].startswith("the queue of 'medium' is full")
        assert (await first).status_code == 200


async def test_unknown_routes_and_methods_answer_in_the_envelope(neuron: Neuron) -> None:
    missing = await neuron.client.get("/v2/nothing")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found_error"
    wrong = await neuron.client.get("/models/load")
    assert wrong.status_code == 405
    assert "error" in wrong.json()


async def test_an_unload_under_a_stream_ends_it_with_an_error_event(
    make_neuron: NeuronFactory,
) -> None:
    async with make_neuron(tokens_per_s=20) as neuron:
        await neuron.load("medium")
        body = {
            "model": "medium",
            "stream": True,
            "messages": [{"role": "user", "content": "x"}],
        }
        request = asyncio.create_task(neuron.client.post("/v1/chat/completions", json=body))
        while neuron.harness.stats().running == 0:
            await asyncio.sleep(0.005)
        unload = await neuron.client.post(
            "/models/unload", json={"model": "medium", "drain_timeout_s": 0.05}
        )
        assert unload.json()["state"] == "available"
        events = sse_payloads((await request).text)
        assert events[-1]["error"]["code"] == "model_unloaded"
        assert "drain timeout" in events[-1]["error"]["message"]


async def test_metrics_count_requests_tokens_batches_and_loads(neuron: Neuron) -> None:
    await neuron.openai.chat.completions.create(
        model="medium", messages=[{"role": "user", "content": "hi"}]
    )
    await neuron.client.post("/v1/chat/completions", content=b"{")
    text = await neuron.metrics()
    lines = set(text.splitlines())
    endpoint = 'endpoint="/v1/chat/completions"'
    assert f'cortex_neuron_requests_total{{{endpoint},model="medium",status="200"}} 1.0' in lines
    assert f'cortex_neuron_requests_total{{{endpoint},model="unknown",status="400"}} 1.0' in lines
    assert 'cortex_neuron_tokens_total{kind="completion",model="medium"} 8.0' in lines
    assert 'cortex_neuron_tokens_total{kind="prompt",model="medium"} 4.0' in lines
    assert "cortex_neuron_batch_size_count 8.0" in lines
    assert 'cortex_neuron_model_loads_total{model="medium",outcome="ok"} 1.0' in lines
    assert 'cortex_neuron_model_load_seconds_count{model="medium"} 1.0' in lines
    assert 'cortex_neuron_kv_cache_usage_ratio{model="medium"} 0.0' in lines
    assert 'cortex_neuron_queue_depth{model="small"} 0.0' in lines
    assert 'cortex_neuron_time_to_first_token_seconds_count{model="medium"} 1.0' in lines
    assert "cortex_neuron_memory_used_bytes 4.194304e+08" in lines
    # The fake never preempts; its queue time is the wait for a slot (none here).
    assert 'cortex_neuron_preemptions_total{model="medium"} 0.0' in lines
    assert 'cortex_neuron_queue_time_seconds_count{model="medium"} 1.0' in lines
    assert 'cortex_neuron_queue_time_seconds_bucket{le="+Inf",model="medium"} 1.0' in lines


async def test_two_apps_keep_separate_metrics(make_neuron: NeuronFactory) -> None:
    async with make_neuron() as one, make_neuron() as two:
        await one.load("small")
        assert 'cortex_neuron_model_loads_total{model="small",outcome="ok"} 1.0' in (
            await one.metrics()
        )
        assert "cortex_neuron_model_loads_total{" not in await two.metrics()


async def test_preloads_start_with_the_app(make_neuron: NeuronFactory) -> None:
    from cortex.neuron import create_neuron_app
    from cortex.testing import FakeHarness

    harness = FakeHarness(memory_mb=1000, pinned=["smollm2-135m-instruct"])
    app = create_neuron_app(harness, preload=["smollm2-135m-instruct"])
    async with app.router.lifespan_context(app):
        await asyncio.sleep(0.01)
        entry = harness.model("smollm2-135m-instruct")
        assert (entry.state, entry.pinned) == ("loaded", True)
    assert harness.model("smollm2-135m-instruct").state == "available"


async def test_tokenize_counts_a_chat_on_its_loaded_model(neuron: Neuron) -> None:
    body = {"model": "medium", "messages": [{"role": "user", "content": "one two three"}]}
    response = await neuron.client.post("/tokenize", json=body)
    assert response.json() == {"count": 6, "max_model_len": 4096}
    conforms(response.json(), "/tokenize", "post")
    body["model"] = "org/large"
    assert (await neuron.client.post("/tokenize", json=body)).status_code == 404
