"""A node that stalls or sends broken bytes: the client gets 504 / 502 in its dialect, or, once
its stream has started, an error event that ends it; never a hang, never a 500."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from cortex.testing import GatewayProcess, start_gateway_process

from ..helpers import chat, message, wait_until
from .misbehaving import MODEL, MisbehavingNeuron, Mode
from .servers import (
    ANTHROPIC,
    API,
    gateway_config,
    is_anthropic_error,
    is_openai_error,
    node_up,
    sse_events,
)

pytestmark = pytest.mark.e2e

READ_TIMEOUT_S = 1.5  # the gateway's request_timeout_s here


@pytest.fixture(scope="module")
def wobbly() -> Iterator[tuple[MisbehavingNeuron, GatewayProcess]]:
    with MisbehavingNeuron() as node:
        config = gateway_config(
            {"w": node.url}, request_timeout_s=READ_TIMEOUT_S, poll_interval_s=0.5
        )
        gateway = start_gateway_process(config)
        try:
            yield node, gateway
        finally:
            gateway.stop()


def _ask(gateway: GatewayProcess, dialect: str, streamed: bool) -> tuple[int, Any, list[Any]]:
    """Send one request; the status, the JSON body (non-streamed or refused) and the events."""
    if dialect == "openai":
        path, headers, body = "/v1/chat/completions", API, chat(MODEL, stream=streamed)
    else:
        path, headers, body = "/v1/messages", ANTHROPIC, message(MODEL, stream=streamed)
    with httpx.stream(
        "POST", gateway.url + path, json=body, headers=headers, timeout=15.0
    ) as response:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return response.status_code, None, list(sse_events(response))
        response.read()
        return response.status_code, response.json(), []


def _ready(node: MisbehavingNeuron, gateway: GatewayProcess, mode: Mode) -> None:
    node.mode = mode
    wait_until(lambda: node_up(gateway, "w"))  # a reset or broken framing marks it down a while


def _well_formed_error(dialect: str, body: Any) -> bool:
    return is_openai_error(body) if dialect == "openai" else is_anthropic_error(body)


# mode, streamed -> (status, words in the message)
REFUSED: list[tuple[Mode, bool, int, str]] = [
    ("stall", False, 504, "in time"),
    ("stall", True, 504, "in time"),
    ("bad_json", False, 502, "invalid JSON"),
    ("not_json_sse", True, 502, "not JSON"),
    ("garbage_sse", True, 502, "without a reply"),
    ("wrong_shape", False, 502, "malformed"),
    ("wrong_shape", True, 502, "malformed"),
    ("broken_framing", False, 502, "unreachable"),
    ("reset", False, 502, "unreachable"),
    ("reset", True, 502, "unreachable"),
]


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
@pytest.mark.parametrize(("mode", "streamed", "status", "words"), REFUSED)
def test_a_broken_answer_before_the_first_token_is_a_plain_error(
    wobbly: tuple[MisbehavingNeuron, GatewayProcess],
    dialect: str,
    mode: Mode,
    streamed: bool,
    status: int,
    words: str,
) -> None:
    node, gateway = wobbly
    _ready(node, gateway, mode)
    got, body, events = _ask(gateway, dialect, streamed)
    assert (got, events) == (status, []), (got, body, events)
    assert _well_formed_error(dialect, body), body
    assert words in body["error"]["message"], body
    assert "wobbly" in body["error"]["message"] or "'w'" in body["error"]["message"], body


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
@pytest.mark.parametrize(
    ("mode", "words"),
    [("stall_after_first", "silent"), ("mid_stream_garbage", "not JSON")],
)
def test_a_broken_stream_after_the_first_token_ends_with_an_error_event(
    wobbly: tuple[MisbehavingNeuron, GatewayProcess], dialect: str, mode: Mode, words: str
) -> None:
    node, gateway = wobbly
    _ready(node, gateway, mode)
    status, _, events = _ask(gateway, dialect, streamed=True)
    assert status == 200
    if dialect == "openai":
        assert events[-1].data == "[DONE]"
        error = events[-2].json()
        assert is_openai_error(error) and words in error["error"]["message"], error
        text = "".join(
            e.json()["choices"][0]["delta"].get("content") or ""
            for e in events[:-2]
            if e.json().get("choices")
        )
    else:
        assert events[0].event == "message_start"
        assert events[-1].event == "error"
        error = events[-1].json()
        assert is_anthropic_error(error) and words in error["error"]["message"], error
        text = "".join(
            e.json()["delta"].get("text", "") for e in events if e.event == "content_block_delta"
        )
    assert text.startswith("Hello")  # what came before the fault reached the client
