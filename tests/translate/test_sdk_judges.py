"""The official SDKs as judges: our bodies and SSE bytes, served through a mock transport, parse
to the expected objects in `anthropic` 2.x (built on `httpx2`) and `openai` 3.x (on `httpx`).

Each handler plays the gateway: it translates the request the SDK sent, answers it with the
golden upstream reply translated back, and the SDK's parse must equal the golden expectation.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from cortex.translate import (
    AnthropicStreamTranslator,
    OpenAIStreamTranslator,
    anthropic_error_to_openai,
    anthropic_request_to_openai,
    anthropic_response_to_openai,
    encode_sse,
    openai_error_to_anthropic,
    openai_request_to_anthropic,
    openai_response_to_anthropic,
)
from cortex.translate.mapping import parse_tool_arguments

from .golden import FORWARD, REVERSE, fill_forward, fill_reverse
from .helpers import chunks_from_completion, events_from_message, feed_all, ids, tool_inputs
from .test_errors import TABLE

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
httpx2 = pytest.importorskip("httpx2")

SSE = {"content-type": "text/event-stream"}


def drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def anthropic_client(handler: Callable[[Any], Any]) -> Any:
    transport = httpx2.MockTransport(handler)
    return anthropic.Anthropic(
        api_key="sk-test",
        base_url="http://cortex.test",
        http_client=httpx2.Client(transport=transport),
        max_retries=0,
    )


def openai_client(handler: Callable[[Any], Any]) -> Any:
    transport = httpx.MockTransport(handler)
    return openai.OpenAI(
        api_key="sk-test",
        base_url="http://cortex.test/v1",
        http_client=httpx.Client(transport=transport),
        max_retries=0,
    )


def forward_handler(case: dict[str, Any]) -> Callable[[Any], Any]:
    """An Anthropic front door over a fake OpenAI upstream that answers with the golden reply."""

    def handle(request: Any) -> Any:
        body = json.loads(request.content)
        assert request.url.path == "/v1/messages"
        upstream_request = anthropic_request_to_openai(body)  # what the SDK sent must translate
        assert upstream_request.model == case["request"]["model"]
        if body.get("stream"):
            assert upstream_request.stream_options is not None
            translator = AnthropicStreamTranslator(body, ids=ids(), input_tokens=0)
            events = feed_all(translator, chunks_from_completion(case["completion"]))
            return httpx2.Response(200, content=b"".join(map(encode_sse, events)), headers=SSE)
        reply = openai_response_to_anthropic(case["completion"], request=body, ids=ids())
        return httpx2.Response(200, json=reply.model_dump(mode="json"))

    return handle


def create_kwargs(case: dict[str, Any]) -> dict[str, Any]:
    request = case["request"]
    kwargs = {k: request[k] for k in ("model", "max_tokens", "messages")}
    if "stop_sequences" in request:
        kwargs["stop_sequences"] = request["stop_sequences"]
    return kwargs


FORWARD_IDS = [c["name"] for c in FORWARD]
REVERSE_IDS = [c["name"] for c in REVERSE]


@pytest.mark.parametrize("case", FORWARD, ids=FORWARD_IDS)
def test_anthropic_sdk_messages_create(case: dict[str, Any]) -> None:
    client = anthropic_client(forward_handler(case))
    message = client.messages.create(**create_kwargs(case))
    assert isinstance(message, anthropic.types.Message)
    assert drop_nulls(message.model_dump(mode="json")) == drop_nulls(fill_forward(case["expected"]))


@pytest.mark.parametrize("case", FORWARD, ids=FORWARD_IDS)
def test_anthropic_sdk_messages_stream_final_message(case: dict[str, Any]) -> None:
    client = anthropic_client(forward_handler(case))
    with client.messages.stream(**create_kwargs(case)) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    expected = fill_forward(case["expected"])
    expected["usage"] = case.get("stream_usage", expected["usage"])
    got = drop_nulls(final.model_dump(mode="json"))
    for block in got["content"]:
        block.pop("parsed_output", None)
    assert got == drop_nulls(expected)
    assert "".join(texts) == "".join(b.get("text", "") for b in expected["content"])


@pytest.mark.parametrize("case", FORWARD[:5], ids=FORWARD_IDS[:5])
def test_anthropic_sdk_raw_stream_events(case: dict[str, Any]) -> None:
    client = anthropic_client(forward_handler(case))
    events = list(client.messages.create(**create_kwargs(case), stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert events[-2].delta.stop_reason == case["expected"]["stop_reason"]


def reverse_handler(case: dict[str, Any]) -> Callable[[Any], Any]:
    """An OpenAI front door over a fake Anthropic upstream that answers with the golden message."""

    def handle(request: Any) -> Any:
        body = json.loads(request.content)
        assert request.url.path == "/v1/chat/completions"
        openai_request_to_anthropic(body, ids=ids())  # what the SDK sent must translate
        if body.get("stream"):
            translator = OpenAIStreamTranslator(body, ids=ids())
            chunks = feed_all(translator, events_from_message(case["message"]))
            return httpx.Response(200, content=b"".join(map(encode_sse, chunks)), headers=SSE)
        reply = anthropic_response_to_openai(case["message"], request=body, ids=ids())
        return httpx.Response(200, json=reply.model_dump(mode="json"))

    return handle


@pytest.mark.parametrize("case", REVERSE, ids=REVERSE_IDS)
def test_openai_sdk_chat_completions_create(case: dict[str, Any]) -> None:
    client = openai_client(reverse_handler(case))
    completion = client.chat.completions.create(**case["request"])
    got = drop_nulls(completion.model_dump(mode="json"))
    assert got == drop_nulls(fill_reverse(case["expected"]))


@pytest.mark.parametrize("case", REVERSE, ids=REVERSE_IDS)
def test_openai_sdk_streamed_chunks_accumulate(case: dict[str, Any]) -> None:
    from openai.lib.streaming.chat import ChatCompletionStreamState

    client = openai_client(reverse_handler(case))
    stream = client.chat.completions.create(
        **case["request"], stream=True, stream_options={"include_usage": True}
    )
    state: Any = ChatCompletionStreamState()
    usage = None
    for item in stream:
        state.handle_chunk(item)
        usage = item.usage or usage
    snapshot = state.current_completion_snapshot
    expected = fill_reverse(case["expected"])
    message = expected["choices"][0]["message"]
    got = snapshot.choices[0].message
    assert (got.content or None) == message["content"]
    calls = [(c.id, c.function.name, c.function.arguments) for c in got.tool_calls or []]
    expected_calls = tool_inputs({"tool_calls": message.get("tool_calls") or []})["tool_calls"]
    assert [(i, n, parse_tool_arguments(a)) for i, n, a in calls] == [
        (c["id"], c["function"]["name"], c["function"]["arguments"]) for c in expected_calls
    ]
    assert snapshot.choices[0].finish_reason == expected["choices"][0]["finish_reason"]
    assert usage is not None
    assert drop_nulls(usage.model_dump(mode="json")) == drop_nulls(expected["usage"])


def test_openai_sdk_stream_helper_text_events() -> None:
    case = REVERSE[0]
    client = openai_client(reverse_handler(case))
    with client.chat.completions.stream(**case["request"]) as stream:
        deltas = [e.delta for e in stream if e.type == "content.delta"]
        final = stream.get_final_completion()
    assert "".join(deltas) == final.choices[0].message.content == "Hello there! How can I help?"


@pytest.mark.parametrize(("a_status", "a_type", "o_status", "o_type"), TABLE)
def test_anthropic_sdk_raises_the_matching_error(
    a_status: int, a_type: str, o_status: int, o_type: str
) -> None:
    upstream = {"error": {"message": "upstream says no", "type": o_type}}

    def handle(request: Any) -> Any:
        status, body = openai_error_to_anthropic(o_status, upstream)
        return httpx2.Response(status, json=body)

    client = anthropic_client(handle)
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == a_status
    assert caught.value.body == {
        "type": "error",
        "error": {"type": a_type, "message": "upstream says no"},
    }
    if a_status == 529:
        assert isinstance(caught.value, anthropic.OverloadedError)


@pytest.mark.parametrize(("a_status", "a_type", "o_status", "o_type"), TABLE)
def test_openai_sdk_raises_the_matching_error(
    a_status: int, a_type: str, o_status: int, o_type: str
) -> None:
    upstream = {"type": "error", "error": {"type": a_type, "message": "upstream says no"}}

    def handle(request: Any) -> Any:
        status, body = anthropic_error_to_openai(a_status, upstream)
        return httpx.Response(status, json=body)

    client = openai_client(handle)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == o_status
    assert caught.value.message.endswith("upstream says no")
    assert caught.value.type == o_type


def test_mid_stream_errors_raise_in_both_sdks() -> None:
    def anthropic_handle(request: Any) -> Any:
        translator = AnthropicStreamTranslator(json.loads(request.content), ids=ids())
        events = translator.feed({"choices": [{"delta": {"content": "par"}}]})
        events += translator.feed({"error": {"message": "engine died", "type": "server_error"}})
        return httpx2.Response(200, content=b"".join(map(encode_sse, events)), headers=SSE)

    client = anthropic_client(anthropic_handle)
    with (
        pytest.raises(anthropic.APIStatusError, match="engine died"),
        client.messages.stream(
            model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        ) as stream,
    ):
        stream.get_final_message()

    def openai_handle(request: Any) -> Any:
        translator = OpenAIStreamTranslator(json.loads(request.content), ids=ids())
        chunks = translator.feed(
            {"type": "message_start", "message": {"usage": {"input_tokens": 1}}}
        )
        chunks += translator.feed(
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        )
        return httpx.Response(200, content=b"".join(map(encode_sse, chunks)), headers=SSE)

    oclient = openai_client(openai_handle)
    with pytest.raises(openai.APIError, match="Overloaded"):
        list(
            oclient.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "x"}], stream=True
            )
        )
