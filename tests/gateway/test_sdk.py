"""A real `cortex-gateway` process over a fake neuron, through the official SDKs and curl-like
HTTP: both dialects, tool round trips, metrics scraped and parsed, and auth on every route."""

from __future__ import annotations

import json
import time
from typing import Any

import anthropic
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import ADMIN_KEY, KEY, Remote

pytestmark = pytest.mark.e2e

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def scrape(remote: Remote) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the gateway's /metrics, parsed by prometheus_client's text parser."""
    text = httpx.get(f"{remote.gateway.metrics_url}/metrics", timeout=10).text
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def metric(samples: dict[Any, float], name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels`."""
    return sum(
        value
        for (sample, have), value in samples.items()
        if sample == name and set(labels.items()) <= set(have)
    )


def test_openai_sdk_chat_streamed_and_a_tool_round_trip(remote: Remote) -> None:
    client = openai.OpenAI(base_url=f"{remote.gateway.url}/v1", api_key=KEY)
    reply = client.chat.completions.create(
        model="m1", messages=[{"role": "user", "content": "hello"}]
    )
    assert reply.choices[0].message.content == "This is m1 on a. You said: hello"
    stream = client.chat.completions.create(
        model="m1",
        messages=[{"role": "user", "content": "streamed"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "This is m1 on a. You said: streamed"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8

    tools: Any = [{"type": "function", "function": WEATHER}]
    ask: Any = [{"role": "user", "content": "call tool get_weather please"}]
    called = client.chat.completions.create(model="m1", messages=ask, tools=tools, stream=True)
    calls = [d for c in called for d in (c.choices[0].delta.tool_calls or []) if c.choices]
    assert calls[0].function and calls[0].function.name == "get_weather"
    arguments = "".join(c.function.arguments or "" for c in calls if c.function)
    assert json.loads(arguments) == {"city": "x"}
    follow: Any = [
        *ask,
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": calls[0].id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny"},
    ]
    answer = client.chat.completions.create(model="m1", messages=follow, tools=tools)
    assert answer.choices[0].message.content == "This is m1 on a. You said: sunny"


def test_anthropic_sdk_messages_streamed_tools_and_count_tokens(remote: Remote) -> None:
    client = anthropic.Anthropic(base_url=remote.gateway.url, api_key=KEY)
    reply = client.messages.create(
        model="m2",
        max_tokens=100,
        messages=[{"role": "user", "content": "hello"}],
        extra_body={"temperature": 0.0},
    )
    assert reply.content[0].type == "text"
    assert reply.content[0].text == "This is m2 on a. You said: hello"
    assert reply.stop_reason == "end_turn" and reply.usage.input_tokens == 4

    with client.messages.stream(
        model="m2", max_tokens=32000, messages=[{"role": "user", "content": "streamed"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "This is m2 on a. You said: streamed"
    assert final.usage.output_tokens == 8

    tool: Any = {
        "name": "get_weather",
        "description": WEATHER["description"],
        "input_schema": WEATHER["parameters"],
    }
    ask: Any = [{"role": "user", "content": "call tool get_weather"}]
    with client.messages.stream(model="m2", max_tokens=500, messages=ask, tools=[tool]) as stream:
        called = stream.get_final_message()
    assert called.stop_reason == "tool_use"
    use = called.content[-1]
    assert use.type == "tool_use" and use.name == "get_weather" and use.input == {"city": "x"}
    follow: Any = [
        *ask,
        {"role": "assistant", "content": [c.model_dump() for c in called.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "rainy"}],
        },
    ]
    answer = client.messages.create(model="m2", max_tokens=500, messages=follow, tools=[tool])
    assert answer.content[0].type == "text"
    assert answer.content[0].text == "This is m2 on a. You said: rainy"

    counted = client.messages.count_tokens(
        model="m2", messages=[{"role": "user", "content": "one two three"}]
    )
    assert counted.input_tokens == 6


def test_metrics_count_the_requests_made(remote: Remote) -> None:
    client = openai.OpenAI(base_url=f"{remote.gateway.url}/v1", api_key=KEY)
    before = scrape(remote)
    started = time.perf_counter()
    completion = prompt = 0
    for i in range(3):
        reply = client.chat.completions.create(
            model="m1", messages=[{"role": "user", "content": f"plain {i}"}]
        )
        assert reply.usage is not None
        completion += reply.usage.completion_tokens
        prompt += reply.usage.prompt_tokens
    for i in range(2):
        chunks = list(
            client.chat.completions.create(
                model="m1",
                messages=[{"role": "user", "content": f"streamed number {i}"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        usage = chunks[-1].usage
        assert usage is not None
        completion += usage.completion_tokens
        prompt += usage.prompt_tokens
    claude = anthropic.Anthropic(base_url=remote.gateway.url, api_key=KEY)
    with claude.messages.stream(
        model="m1", max_tokens=50, messages=[{"role": "user", "content": "via anthropic"}]
    ) as stream:
        final = stream.get_final_message()
    completion += final.usage.output_tokens
    prompt += final.usage.input_tokens
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=[])
    elapsed = time.perf_counter() - started
    after = scrape(remote)

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    ok = {"model": "m1", "node": "a"}
    assert delta("cortex_requests_total", **ok, dialect="openai", status="200") == 5
    assert delta("cortex_requests_total", **ok, dialect="anthropic", status="200") == 1
    unknown = {"model": "unknown", "node": "none", "dialect": "openai", "status": "404"}
    assert delta("cortex_requests_total", **unknown) == 1  # labels stay bounded
    assert delta("cortex_tokens_total", **ok, kind="completion") == completion
    assert delta("cortex_tokens_total", **ok, kind="prompt") == prompt
    assert delta("cortex_request_duration_seconds_count", **ok) == 6
    assert delta("cortex_time_to_first_token_seconds_count", **ok) == 3
    assert delta("cortex_tokens_per_second_count", **ok) == 3
    durations = delta("cortex_request_duration_seconds_sum", **ok)
    assert 0 < delta("cortex_time_to_first_token_seconds_sum", **ok) < durations <= elapsed
    assert metric(after, "cortex_node_up", node="a") == 1
    assert metric(after, "cortex_inflight_requests", **ok) == 0
    assert metric(after, "cortex_model_loads_total", model="m1", node="a", outcome="ok") >= 1


ROUTES = [
    ("GET", "/v1/models", {}, "openai"),
    ("GET", "/v1/models", {"anthropic-version": "2023-06-01"}, "anthropic"),
    ("POST", "/v1/chat/completions", {}, "openai"),
    ("POST", "/v1/completions", {}, "openai"),
    ("POST", "/v1/messages", {}, "anthropic"),
    ("POST", "/v1/messages/count_tokens", {}, "anthropic"),
    ("GET", "/admin/status", {}, "openai"),
    ("POST", "/admin/models/load", {}, "openai"),
    ("POST", "/admin/models/unload", {}, "openai"),
    ("GET", "/admin/placement", {}, "openai"),
]


@pytest.mark.parametrize(("method", "path", "headers", "dialect"), ROUTES)
def test_every_route_refuses_without_a_key_in_its_dialect(
    remote: Remote, method: str, path: str, headers: dict[str, str], dialect: str
) -> None:
    url = remote.gateway.url + path
    for credentials in ({}, {"authorization": "Bearer wrong"}, {"x-api-key": "wrong"}):
        response = httpx.request(method, url, headers={**headers, **credentials}, json={})
        assert response.status_code == 401
        body = response.json()
        if dialect == "anthropic":
            assert body["type"] == "error"
            assert body["error"]["type"] == "authentication_error"
        else:
            assert body["error"]["type"] == "authentication_error"
            assert "message" in body["error"] and "type" not in body
    if path.startswith("/admin"):  # an API key is not an admin key
        refused = httpx.request(method, url, headers={"x-api-key": KEY}, json={})
        assert refused.status_code == 401


def test_keys_open_the_routes(remote: Remote) -> None:
    url = remote.gateway.url
    assert httpx.get(f"{url}/health").status_code == 200  # open to probes
    assert httpx.head(f"{url}/").status_code == 401  # only /health is open; Claude Code's
    assert httpx.head(f"{url}/", headers={"x-api-key": KEY}).status_code == 200  # probe takes any
    assert httpx.get(f"{url}/v1/models", headers={"x-api-key": KEY}).status_code == 200
    bearer = {"authorization": f"Bearer {KEY}"}
    assert httpx.get(f"{url}/v1/models", headers=bearer).status_code == 200
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    assert httpx.get(f"{url}/admin/status", headers=admin).status_code == 200


def test_admin_cli_commands(remote: Remote) -> None:
    import io

    from rich.console import Console

    from cortex.gateway import admin_cli

    buffer = io.StringIO()
    out = Console(file=buffer, width=200, color_system=None)

    def said() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    url, key = remote.gateway.url, ADMIN_KEY
    assert admin_cli.load("m2", node="a", url=url, admin_key=key, console=out) == 0
    assert "loaded m2 on a" in said()
    assert admin_cli.status(url=url, admin_key=key, console=out) == 0
    text = said()
    assert "Nodes" in text and "Models" in text and "loaded" in text and " up " in text
    assert admin_cli.models(url=url, admin_key=key, console=out) == 0
    text = said()
    assert "m1" in text and "m2" in text
    assert admin_cli.unload("m2", url=url, admin_key=key, console=out) == 0
    assert "unloaded m2 from a" in said()
    assert admin_cli.status(url=url, admin_key="wrong", console=out) == 3  # refused
    assert "error 401" in said()
    assert admin_cli.status(url="http://127.0.0.1:9", console=out) == 2
