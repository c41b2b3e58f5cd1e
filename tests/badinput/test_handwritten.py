"""Hand-written bad input against the real gateway (and the neuron behind it): each is refused
with the right status and a well-formed error in the client's dialect; never a 500, never a hang.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.faults.servers import ANTHROPIC, API, KEY, is_anthropic_error, is_openai_error
from tests.helpers import chat, message

from .conftest import NODE_TOKEN, Stack

pytestmark = pytest.mark.e2e

ROUTES = {
    "chat": ("/v1/chat/completions", API, "openai"),
    "completions": ("/v1/completions", API, "openai"),
    "responses": ("/v1/responses", API, "openai"),
    "messages": ("/v1/messages", ANTHROPIC, "anthropic"),
    "count_tokens": ("/v1/messages/count_tokens", ANTHROPIC, "anthropic"),
}
LIMIT = 1024 * 1024  # max_body_mb = 1


def send(
    stack: Stack,
    route: str,
    content: bytes | Iterator[bytes],
    *,
    content_type: str = "application/json",
) -> httpx.Response:
    path, headers, _ = ROUTES[route]
    return httpx.post(
        stack.gateway.url + path,
        content=content,
        headers={**headers, "content-type": content_type},
        timeout=30,
    )


def refused(response: httpx.Response, route: str, status: int, words: str = "") -> dict[str, Any]:
    """Assert the refusal: its status, its dialect's envelope, and `words` in the message."""
    dialect = ROUTES[route][2]
    assert response.status_code == status, (response.status_code, response.text[:500])
    body: dict[str, Any] = response.json()
    assert is_anthropic_error(body) if dialect == "anthropic" else is_openai_error(body), body
    assert words.lower() in body["error"]["message"].lower(), body
    return body


def body_for(route: str, model: str = "m1", text: str = "hello", **extra: Any) -> dict[str, Any]:
    if route == "completions":
        return {"model": model, "prompt": text, **extra}
    if route == "responses":
        return {"model": model, "input": text, **extra}
    if route in ("messages", "count_tokens"):
        return message(model, text, **extra)
    return chat(model, text, **extra)


ALL = list(ROUTES)


@pytest.mark.parametrize("route", ALL)
@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"", b"[]", b'"a string"', b"null", b'{"model": "m1",}', b"\x00\x01\x02"],
    ids=["broken", "empty", "array", "string", "null", "trailing-comma", "binary"],
)
def test_malformed_json(stack: Stack, route: str, raw: bytes) -> None:
    refused(send(stack, route, raw), route, 400)


@pytest.mark.parametrize("route", ALL)
def test_invalid_utf8(stack: Stack, route: str) -> None:
    raw = json.dumps(body_for(route)).encode().replace(b"hello", b"hel\xff\xfelo")
    refused(send(stack, route, raw), route, 400)


@pytest.mark.parametrize("route", ALL)
def test_deeply_nested_json(stack: Stack, route: str) -> None:
    deep = b'{"model": "m1", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    refused(send(stack, route, deep), route, 400, "nested")
    # Deep, though well within the JSON parser's limits, inside a field the gateway reads.
    tools = {"type": "object", "properties": {}}
    node = tools
    for _ in range(100):
        child: dict[str, Any] = {"type": "object", "properties": {}}
        node["properties"]["x"] = child
        node = child
    extra = {"tools": [{"type": "function", "function": {"name": "f", "parameters": tools}}]}
    if route in ("messages", "count_tokens"):
        extra = {"tools": [{"name": "f", "input_schema": tools}]}
    response = send(stack, route, json.dumps(body_for(route, **extra)).encode())
    refused(response, route, 400, "nested deeper than 64 levels")
    # Deep inside a string (tool-call arguments are JSON text): read as text, not refused.
    arguments = json.dumps(tools)
    if route in ("messages", "count_tokens"):
        history = [
            {"role": "user", "content": "call f"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": arguments}}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}],
            },
        ]
        deep_args = {**body_for(route), "messages": history}
    elif route == "chat":
        call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}
        history = [
            {"role": "user", "content": "call f"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "ok"},
        ]
        deep_args = {**body_for(route), "messages": history}
    else:
        return
    response = send(stack, route, json.dumps(deep_args).encode())
    assert response.status_code == 200, response.text[:300]


@pytest.mark.parametrize("route", ALL)
def test_wrong_content_type(stack: Stack, route: str) -> None:
    form = send(
        stack, route, b"model=m1&prompt=hi", content_type="application/x-www-form-urlencoded"
    )
    refused(form, route, 400, "JSON")
    # A JSON body labelled text/plain is read as JSON (curl's default label): not refused.
    plain = send(stack, route, json.dumps(body_for(route)).encode(), content_type="text/plain")
    assert plain.status_code == 200, plain.text[:300]


@pytest.mark.parametrize("route", ["chat", "messages", "responses"])
def test_bodies_over_the_limit_get_413(stack: Stack, route: str) -> None:
    big = json.dumps(body_for(route, text="x" * (LIMIT + 10))).encode()
    refused(send(stack, route, big), route, 413, "limit")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies as bytes arrive
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    refused(send(stack, route, chunks()), route, 413, "limit")
    just_under = json.dumps(body_for(route, text="x" * (LIMIT - 1000))).encode()
    assert send(stack, route, just_under).status_code in (200, 400)  # 400: beyond the context


@pytest.mark.parametrize("route", ["chat", "completions", "messages", "responses"])
@pytest.mark.parametrize("value", [-1, 0, -(10**30), "ten", 1.5, [], {}, "1e9"])
def test_negative_or_absurd_max_tokens_are_refused(stack: Stack, route: str, value: Any) -> None:
    field = {"responses": "max_output_tokens"}.get(route, "max_tokens")
    response = send(stack, route, json.dumps(body_for(route, **{field: value})).encode())
    refused(response, route, 400)


@pytest.mark.parametrize("route", ["chat", "completions", "messages", "responses"])
def test_a_max_tokens_beyond_the_window(stack: Stack, route: str) -> None:
    field = {"responses": "max_output_tokens"}.get(route, "max_tokens")
    response = send(stack, route, json.dumps(body_for(route, **{field: 10**30})).encode())
    if route == "messages":  # Anthropic's max_tokens is lowered to what the window leaves
        assert response.status_code == 200, response.text[:300]
    else:
        refused(response, route, 400, "context")


@pytest.mark.parametrize("route", ALL)
@pytest.mark.parametrize(
    "model",
    [
        "no-such-model",
        "../../etc/passwd",
        "/etc/passwd",
        "m1/../m1",
        "..%2F..%2Fetc%2Fpasswd",
        "C:\\Windows\\system32",
        "m1\x00",
        "~/.ssh/id_rsa",
    ],
)
def test_unknown_models_and_ids_that_look_like_paths(stack: Stack, route: str, model: str) -> None:
    refused(send(stack, route, json.dumps(body_for(route, model=model)).encode()), route, 404)


@pytest.mark.parametrize("model", ["../../etc/passwd", "/etc/passwd", "%2e%2e%2fetc", "a/../../b"])
def test_path_like_ids_on_the_model_routes(stack: Stack, model: str) -> None:
    got = httpx.get(f"{stack.gateway.url}/v1/models/{model}", headers=API, timeout=10)
    assert got.status_code == 404 and is_openai_error(got.json())
    token = {"authorization": f"Bearer {NODE_TOKEN}"}
    for path in ("/models/load", "/models/unload"):
        direct = httpx.post(
            stack.neuron.url + path, json={"model": model}, headers=token, timeout=10
        )
        assert direct.status_code in (400, 404) and is_openai_error(direct.json()), direct.text


@pytest.mark.parametrize("route", ALL)
def test_prompts_beyond_the_context(stack: Stack, route: str) -> None:
    long = " ".join(["word"] * 200)  # the `tiny` model's window is 64 tokens
    response = send(stack, route, json.dumps(body_for(route, model="tiny", text=long)).encode())
    if route == "count_tokens":  # counting is what a client does to find out
        assert response.status_code == 200 and response.json()["input_tokens"] > 64
        return
    body = refused(response, route, 400, "context")
    if ROUTES[route][2] == "anthropic":  # Claude Code parses these words to retry smaller
        assert "input length and `max_tokens` exceed context limit" in body["error"]["message"]


BAD_OPENAI_TOOLS: list[Any] = [
    "not a list",
    [5],
    [{"type": "function"}],
    [{"type": "function", "function": {"name": 5}}],
    [{"type": "function", "function": {"name": "f", "parameters": "not an object"}}],
    [{"type": "function", "function": {"name": "", "parameters": {}}}],
    [{"type": "function", "function": {"name": "f" * 10_000}}],
]
BAD_ANTHROPIC_TOOLS: list[Any] = [
    "not a list",
    [5],
    [{"name": 5, "input_schema": {}}],
    [{"name": "f", "input_schema": 7}],
    [{"description": "no name", "input_schema": {}}],
]


@pytest.mark.parametrize("tools", BAD_OPENAI_TOOLS)
def test_invalid_openai_tool_schemas(stack: Stack, tools: Any) -> None:
    response = send(stack, "chat", json.dumps(chat("m1", "call tool f", tools=tools)).encode())
    refused(response, "chat", 400)


@pytest.mark.parametrize("tools", BAD_ANTHROPIC_TOOLS)
def test_invalid_anthropic_tool_schemas(stack: Stack, tools: Any) -> None:
    response = send(
        stack, "messages", json.dumps(message("m1", "call tool f", tools=tools)).encode()
    )
    refused(response, "messages", 400)


@pytest.mark.parametrize("data", ["!!!not base64!!!", "", "aGVsbG8", "\u00e9\u00e9"])
def test_bad_base64_images(stack: Stack, data: str) -> None:
    image = {"type": "base64", "media_type": "image/png", "data": data}
    content = [{"type": "image", "source": image}, {"type": "text", "text": "what is it?"}]
    anthropic = {
        "model": "m1",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": content}],
    }
    refused(send(stack, "messages", json.dumps(anthropic).encode()), "messages", 400)
    url = {"url": f"data:image/png;base64,{data}"}
    parts = [{"type": "image_url", "image_url": url}, {"type": "text", "text": "what is it?"}]
    openai = {"model": "m1", "messages": [{"role": "user", "content": parts}]}
    refused(send(stack, "chat", json.dumps(openai).encode()), "chat", 400)


def test_odd_keys_are_refused_not_crashed_on(stack: Stack) -> None:
    for key in ["Bearer", "k" * 10_000, "\u00e9t\u00e9", KEY[:-1], KEY + "x", KEY.upper()]:
        for header in ("x-api-key", "authorization"):
            value = key if header == "x-api-key" else f"Bearer {key}"
            got = httpx.post(
                f"{stack.gateway.url}/v1/chat/completions",
                json=chat("m1"),
                headers={header: value.encode("utf-8")},  # raw bytes: not ASCII
                timeout=10,
            )
            assert got.status_code == 401, (key[:20], header, got.text[:200])
            assert is_openai_error(got.json())


@pytest.mark.parametrize("server", ["gateway", "neuron"])
def test_a_declared_length_over_the_limit_is_refused_before_the_body(
    stack: Stack, server: str
) -> None:
    """A client that announces a huge body gets 413 at once: nothing is read into memory (the
    neuron's own bound is 256 MB, far above the gateway's policy)."""
    url = stack.gateway.url if server == "gateway" else stack.neuron.url
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            + f"x-api-key: {KEY}\r\ncontent-length: {300 * 1024 * 1024}\r\n\r\n".encode()
            + b'{"model": "m1"'
        )
        answer = b""  # and sends no more: the answer must come without the body
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
        head, _, body = answer.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        while len(body) < length:
            body += sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 413"), answer[:300]
    assert is_openai_error(json.loads(body)) and b"over the limit" in body
