"""`POST /v1/responses` of the gateway app, in-process over an embedded fake neuron.

The official SDK talks to the app through `httpx.ASGITransport`; the fleet runs the fake
harness of `cortex.testing` (a user message saying `call tool NAME` makes it call NAME).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import openai
import pytest

from cortex.config import FakeModel, ModelProfile, ModelsConfig
from cortex.embedded import embedded_fleet
from cortex.gateway.app import create_gateway_app
from cortex.testing import FakeHarness

WARM, COLD, BROKEN = "warm-model", "cold-model", "broken-model"
MODELS = [FakeModel(id=name, memory_mb=100, context_length=512) for name in (WARM, COLD, BROKEN)]
TOOLS: Any = [
    {
        "type": "function",
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
    {"type": "web_search"},  # hosted: dropped, never an error
]


class Gateway:
    """The app, its SDK client and its metrics."""

    def __init__(self, app: Any, client: openai.AsyncOpenAI, http: httpx.AsyncClient) -> None:
        self.app = app
        self.client = client
        self.http = http

    def metric(self, name: str, **labels: str) -> float:
        value = self.app.state.metrics.registry.get_sample_value(name, labels)
        return float(value or 0.0)


GatewayFactory = Callable[..., AbstractAsyncContextManager[Gateway]]


@pytest.fixture
def make_gateway() -> GatewayFactory:
    """`async with make_gateway(load_s=..., commit_after_s=...) as gateway:`."""

    @asynccontextmanager
    async def factory(
        *, load_s: float = 0.0, commit_after_s: float = 5.0
    ) -> AsyncIterator[Gateway]:
        harness = FakeHarness(MODELS, node="n1", memory_mb=1000, load_s=load_s, fail_load=[BROKEN])
        profiles = ModelsConfig(models=[ModelProfile(id=WARM, pinned=True)])
        fleet = embedded_fleet(harness, name="n1", model=WARM, models=profiles)
        app = create_gateway_app(fleet, manage_fleet=True, commit_after_s=commit_after_s)
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=30) as http,
        ):
            client = openai.AsyncOpenAI(
                base_url="http://gateway/v1", api_key="k", http_client=http, max_retries=0
            )
            yield Gateway(app, client, http)

    return factory


async def test_create_whole_and_streamed(make_gateway: GatewayFactory) -> None:
    async with make_gateway() as gateway:
        whole = await gateway.client.responses.create(model=WARM, input="Hello there")
        assert whole.status == "completed"
        assert whole.output_text == "This is warm-model on n1. You said: Hello there"
        assert whole.usage is not None and whole.usage.output_tokens == 9
        stream = await gateway.client.responses.create(model=WARM, input="Hello there", stream=True)
        events = [event async for event in stream]
        assert [e.type for e in events[:2]] == ["response.created", "response.in_progress"]
        assert events[-1].type == "response.completed"
        assert events[-1].response.output_text == whole.output_text
        labels = {"model": WARM, "node": "n1", "dialect": "responses", "status": "200"}
        assert gateway.metric("cortex_requests_total", **labels) == 2
        assert gateway.metric("cortex_tokens_total", model=WARM, node="n1", kind="completion") == 18
        ttft = gateway.metric("cortex_time_to_first_token_seconds_count", model=WARM, node="n1")
        assert ttft == 1  # the streamed one


@pytest.mark.parametrize("streamed", [False, True])
async def test_function_call_round_trip(make_gateway: GatewayFactory, streamed: bool) -> None:
    async with make_gateway() as gateway:
        history: list[Any] = [{"role": "user", "content": "please call tool get_weather"}]
        if streamed:
            async with gateway.client.responses.stream(
                model=WARM, input=history, tools=TOOLS
            ) as stream:
                first = await stream.get_final_response()
        else:
            first = await gateway.client.responses.create(model=WARM, input=history, tools=TOOLS)
        [call] = [item for item in first.output if item.type == "function_call"]
        assert (call.name, call.arguments) == ("get_weather", '{"city": "x"}')
        history += [item.model_dump(exclude_none=True) for item in first.output]
        history.append({"type": "function_call_output", "call_id": call.call_id, "output": "sunny"})
        second = await gateway.client.responses.create(model=WARM, input=history, tools=TOOLS)
        assert second.output_text == "This is warm-model on n1. You said: sunny"


async def test_errors_before_the_stream_are_http_errors(make_gateway: GatewayFactory) -> None:
    async with make_gateway() as gateway:
        with pytest.raises(openai.NotFoundError):
            await gateway.client.responses.create(model="nope", input="x", stream=True)
        with pytest.raises(openai.InternalServerError) as failed_load:
            await gateway.client.responses.create(model=BROKEN, input="x", stream=True)
        assert failed_load.value.status_code == 503
        with pytest.raises(openai.BadRequestError) as caught:
            await gateway.client.responses.create(model=WARM, input="x", previous_response_id="r1")
        assert caught.value.param == "previous_response_id"
        with pytest.raises(openai.BadRequestError) as caught:
            await gateway.client.responses.create(model=WARM, input="x", max_output_tokens=600)
        assert caught.value.code == "context_length_exceeded"
        bad = await gateway.http.post("/v1/responses", json={"model": WARM, "input": [{"role": 1}]})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "input[0].role"

        def requests(model: str, node: str, status: str) -> float:
            return gateway.metric(
                "cortex_requests_total", model=model, node=node, dialect="responses", status=status
            )

        assert requests(WARM, "n1", "400") == 1  # too long for the context: refused by its node
        assert requests(WARM, "none", "400") == 2  # refused before any node
        assert requests("unknown", "none", "404") == 1


async def test_a_slow_cold_load_starts_the_stream_early(make_gateway: GatewayFactory) -> None:
    async with make_gateway(load_s=0.6, commit_after_s=0.4) as gateway:
        stream = await gateway.client.responses.create(model=COLD, input="Hi", stream=True)
        events = [event async for event in stream]
        assert [e.type for e in events[:2]] == ["response.created", "response.in_progress"]
        assert events[-1].type == "response.completed"
        assert events[-1].response.output_text == "This is cold-model on n1. You said: Hi"


async def test_a_failure_after_the_stream_started_is_response_failed(
    make_gateway: GatewayFactory,
) -> None:
    async with make_gateway(load_s=0.6, commit_after_s=0.4) as gateway:
        stream = await gateway.client.responses.create(model=BROKEN, input="Hi", stream=True)
        events = [event async for event in stream]
        assert [e.type for e in events] == [
            "response.created",
            "response.in_progress",
            "response.failed",
        ]
        failed = events[-1].response
        assert failed.status == "failed" and failed.error is not None
        assert failed.error.code == "server_is_overloaded"
