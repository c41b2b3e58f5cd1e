"""The official `openai` SDK as judge: `client.responses.*` against the translation.

An `httpx.MockTransport` plays cortex's `/v1/responses` over a scripted Chat backend: the
request is parsed and translated to Chat, the backend's reply (whole, or as chunks) is
translated back, streams go out as SSE bytes. What the SDK makes of it is the test.
"""

# ruff: noqa: E501  (scripted replies read best one message a line)
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

from cortex.errors import CortexError
from cortex.protocol.openai import ChatCompletion, ChatCompletionRequest
from cortex.translate.ids import IdFactory
from cortex.translate.responses_api import (
    openai_response_to_responses,
    parse_responses_request,
    responses_request_to_openai,
)
from cortex.translate.responses_stream import ResponsesStreamTranslator
from cortex.translate.sse import encode_sse

WEATHER_TOOL: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather of a city",
    "strict": True,
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
}


class Person(BaseModel):
    name: str
    age: int


def backend(chat: ChatCompletionRequest) -> dict[str, Any]:
    """A scripted Chat model: the assistant message and finish reason it answers with."""
    last = chat.messages[-1]
    if last.role == "tool":
        return {"content": f"It is {last.content} in Oslo.", "finish_reason": "stop"}
    if chat.response_format is not None and chat.response_format.type == "json_schema":
        return {"content": json.dumps({"name": "Ada", "age": 36}), "finish_reason": "stop"}
    if chat.tools:
        call = {"id": "call_w1", "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}  # fmt: skip
        return {"content": None, "tool_calls": [call], "finish_reason": "tool_calls"}
    return {"content": "Hello from cortex.", "finish_reason": "stop"}


def as_chunks(reply: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The reply as a backend streams it: role, text in pieces, tool calls, usage."""
    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": "m"}

    def delta(d: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return head | {"choices": [{"index": 0, "delta": d, "finish_reason": finish}]}

    yield delta({"role": "assistant", "content": ""})
    text = reply.get("content") or ""
    for start in range(0, len(text), 4):
        yield delta({"content": text[start : start + 4]})
    for index, call in enumerate(reply.get("tool_calls") or []):
        fn = call["function"]
        yield delta({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                     "function": {"name": fn["name"], "arguments": ""}}]})  # fmt: skip
        for start in range(0, len(fn["arguments"]), 5):
            piece = fn["arguments"][start : start + 5]
            yield delta({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield delta({}, reply["finish_reason"])
    yield head | {
        "choices": [],
        "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18},
    }


class Cortex:
    """The `/v1/responses` handler, and what it sent to the Chat backend."""

    def __init__(self) -> None:
        self.chat_requests: list[ChatCompletionRequest] = []
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, http: httpx.Request) -> httpx.Response:
        assert http.url.path == "/v1/responses"
        body = json.loads(http.content)
        self.bodies.append(body)
        ids = IdFactory(seed=len(self.bodies), created=1_700_000_000)
        try:
            request = parse_responses_request(body)
            chat = responses_request_to_openai(request)
        except CortexError as exc:
            return httpx.Response(exc.status, json=exc.to_openai())
        self.chat_requests.append(chat)
        reply = backend(chat)
        if not request.stream:
            whole = ChatCompletion.model_validate({
                "id": "chatcmpl-1", "created": 0, "model": "m",
                "choices": [{"index": 0, "finish_reason": reply["finish_reason"],
                             "message": {"role": "assistant"} | {k: v for k, v in reply.items() if k != "finish_reason"}}],
                "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18},
            })  # fmt: skip
            return httpx.Response(
                200,
                json=openai_response_to_responses(whole, request=request, ids=ids).model_dump(
                    mode="json"
                ),
            )
        translator = ResponsesStreamTranslator(request, ids=ids)
        events = translator.start()
        for c in as_chunks(reply):
            events += translator.feed(c)
        events += translator.finish()
        sse = b"".join(encode_sse(e) for e in events)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=sse)


@pytest.fixture
def cortex() -> Cortex:
    return Cortex()


@pytest.fixture
def client(cortex: Cortex) -> Iterator[openai.OpenAI]:
    http = httpx.Client(transport=httpx.MockTransport(cortex))
    with openai.OpenAI(
        base_url="http://cortex.test/v1", api_key="k", http_client=http, max_retries=0
    ) as c:
        yield c


def test_create(client: openai.OpenAI) -> None:
    response = client.responses.create(model="smollm2", input="Hi", instructions="Be nice.")
    assert response.output_text == "Hello from cortex."
    assert response.status == "completed"
    assert response.model == "smollm2"
    assert response.instructions == "Be nice."
    assert response.usage is not None and response.usage.total_tokens == 18


def test_create_streamed(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="smollm2", input="Hi", stream=True))
    assert [e.type for e in events[:2]] == ["response.created", "response.in_progress"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == "Hello from cortex."
    last = events[-1]
    assert last.type == "response.completed"
    assert last.response.output_text == deltas
    assert last.response.usage is not None and last.response.usage.input_tokens == 12


def test_stream_helper_accumulates_the_final_response(client: openai.OpenAI) -> None:
    with client.responses.stream(model="smollm2", input="Hi") as stream:
        snapshots = [e.snapshot for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert snapshots[-1] == "Hello from cortex." and snapshots[0] == "Hell"
    assert final.output_text == "Hello from cortex."
    assert final.id.startswith("resp_")


def test_parse_with_a_json_schema(client: openai.OpenAI, cortex: Cortex) -> None:
    parsed = client.responses.parse(model="smollm2", input="Who?", text_format=Person)
    assert parsed.output_parsed == Person(name="Ada", age=36)
    assert cortex.bodies[-1]["text"]["format"]["type"] == "json_schema"
    sent = cortex.chat_requests[-1].response_format
    assert sent is not None and sent.json_schema is not None
    assert sent.json_schema.name == "Person" and sent.json_schema.strict is True
    assert sent.json_schema.schema_ == Person.model_json_schema() | {"additionalProperties": False}
    with client.responses.stream(model="smollm2", input="Who?", text_format=Person) as stream:
        assert stream.get_final_response().output_parsed == Person(name="Ada", age=36)


@pytest.mark.parametrize("streamed", [False, True])
def test_function_call_round_trip(client: openai.OpenAI, cortex: Cortex, streamed: bool) -> None:
    history: list[Any] = [{"role": "user", "content": "Weather in Oslo?"}]
    if streamed:
        with client.responses.stream(
            model="smollm2", input=history, tools=[WEATHER_TOOL]
        ) as stream:
            arguments = "".join(
                e.delta for e in stream if e.type == "response.function_call_arguments.delta"
            )
            first = stream.get_final_response()
        assert arguments == '{"city": "Oslo"}'
    else:
        first = client.responses.create(model="smollm2", input=history, tools=[WEATHER_TOOL])
    calls = [item for item in first.output if item.type == "function_call"]
    assert [(c.name, json.loads(c.arguments), c.call_id) for c in calls] == [
        ("get_weather", {"city": "Oslo"}, "call_w1")
    ]
    history += [item.model_dump(exclude_none=True) for item in first.output]
    history.append({"type": "function_call_output", "call_id": calls[0].call_id, "output": "18°C"})
    second = client.responses.create(
        model="smollm2", input=history, tools=[WEATHER_TOOL], stream=False
    )
    assert second.output_text == "It is 18°C in Oslo."
    chat = cortex.chat_requests[-1].model_dump(mode="json")
    assert chat["messages"][1:] == [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_w1", "type": "function",
                                              "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_w1", "content": "18°C"},
    ]  # fmt: skip


def test_stateful_requests_are_refused_with_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="smollm2", input="Hi", previous_response_id="resp_1")
    assert "does not store responses" in caught.value.message
    assert caught.value.param == "previous_response_id"
