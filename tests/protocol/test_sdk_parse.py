"""The official SDKs parse our envelopes: model lists, count_tokens, embeddings, completions."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable
from typing import Any

import pytest

from cortex.protocol import anthropic as A
from cortex.protocol import openai as O

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
httpx2 = pytest.importorskip("httpx2")


def anthropic_client(handler: Callable[[Any], Any]) -> Any:
    return anthropic.Anthropic(
        api_key="k",
        base_url="http://cortex.test",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
        max_retries=0,
    )


def openai_client(handler: Callable[[Any], Any]) -> Any:
    return openai.OpenAI(
        api_key="k",
        base_url="http://cortex.test/v1",
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
        max_retries=0,
    )


def test_anthropic_models_list_and_count_tokens() -> None:
    models = A.ModelList(
        data=[
            A.ModelInfo(id="claude-local-a", display_name="A", max_input_tokens=8192),
            A.ModelInfo(id="claude-local-b", display_name="B"),
        ],
        first_id="claude-local-a",
        last_id="claude-local-b",
    )

    def handle(request: Any) -> Any:
        if request.url.path == "/v1/models":
            return httpx2.Response(200, json=models.model_dump(mode="json"))
        body = A.CountTokensRequest.model_validate(json.loads(request.content))
        assert body.messages[0].content == "hello"
        return httpx2.Response(
            200, json=A.CountTokensResponse(input_tokens=7).model_dump(mode="json")
        )

    client = anthropic_client(handle)
    page = client.models.list(limit=1000)
    assert [m.id for m in page.data] == ["claude-local-a", "claude-local-b"]
    assert page.data[0].max_input_tokens == 8192 and page.data[1].display_name == "B"
    count = client.messages.count_tokens(model="m", messages=[{"role": "user", "content": "hello"}])
    assert count.input_tokens == 7


def test_openai_models_embeddings_and_completions() -> None:
    vector = [0.25, -1.5, 3.0]
    packed = base64.b64encode(struct.pack("<3f", *vector)).decode()

    def handle(request: Any) -> Any:
        path = request.url.path
        if path == "/v1/models":
            body = O.ModelList(data=[O.Model(id="smollm2", created=1700000000)])
            return httpx.Response(200, json=body.model_dump(mode="json"))
        if path == "/v1/embeddings":
            req = O.EmbeddingRequest.model_validate(json.loads(request.content))
            embedding: list[float] | str = packed if req.encoding_format == "base64" else vector
            body = O.EmbeddingList(
                data=[O.Embedding(index=0, embedding=embedding)],
                model=req.model,
                usage=O.EmbeddingUsage(prompt_tokens=2, total_tokens=2),
            )
            return httpx.Response(200, json=body.model_dump(mode="json"))
        req = O.CompletionRequest.model_validate(json.loads(request.content))
        body = O.Completion(
            id="cmpl-1",
            created=1,
            model=req.model,
            choices=[O.CompletionChoice(text=" world", finish_reason="length")],
            usage=O.Usage(prompt_tokens=1, completion_tokens=1, total_tokens=2),
        )
        return httpx.Response(200, json=body.model_dump(mode="json"))

    client = openai_client(handle)
    assert [m.id for m in client.models.list()] == ["smollm2"]
    default = client.embeddings.create(model="e", input="hi")  # the SDK asks for base64
    assert default.data[0].embedding == vector
    floats = client.embeddings.create(model="e", input="hi", encoding_format="float")
    assert floats.data[0].embedding == vector and floats.usage.total_tokens == 2
    completion = client.completions.create(model="m", prompt="hello", max_tokens=1)
    assert (
        completion.choices[0].text == " world" and completion.choices[0].finish_reason == "length"
    )


def test_error_envelopes_reach_the_sdk_exceptions() -> None:
    def anthropic_handle(request: Any) -> Any:
        body = A.ErrorResponse(error=A.ErrorBody(type="overloaded_error", message="busy"))
        return httpx2.Response(529, json=body.model_dump(mode="json"))

    with pytest.raises(anthropic.OverloadedError) as caught:
        anthropic_client(anthropic_handle).messages.create(
            model="m", max_tokens=1, messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.body["error"]["message"] == "busy"

    def openai_handle(request: Any) -> Any:
        body = O.ErrorResponse(
            error=O.ErrorBody(
                message="no model", type="not_found_error", param="model", code="model_not_found"
            )
        )
        return httpx.Response(404, json=body.model_dump(mode="json"))

    with pytest.raises(openai.NotFoundError) as not_found:
        openai_client(openai_handle).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}]
        )
    assert not_found.value.code == "model_not_found" and not_found.value.param == "model"
