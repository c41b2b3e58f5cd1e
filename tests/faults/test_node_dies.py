"""A neuron killed with SIGKILL mid-stream: each dialect's stream ends with its error event (never
a hang), the node is marked down, and the next request for the model goes to another node."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from cortex.testing import start_gateway_process

from ..helpers import chat, message, wait_until
from .servers import (
    ADMIN,
    ANTHROPIC,
    API,
    Event,
    fake_neuron,
    gateway_config,
    is_anthropic_error,
    is_openai_error,
    node_up,
    sse_events,
    start_neurons,
)

pytestmark = pytest.mark.e2e

LONG = " ".join(f"word{i}" for i in range(400))  # a reply of ~400 tokens at 40 tokens/s


def test_sigkill_mid_stream_ends_each_dialect_with_an_error_and_traffic_moves() -> None:
    nodes = start_neurons({n: fake_neuron(n, ["m1"], tokens_per_s=40.0) for n in ("a", "b")})
    gateway = start_gateway_process(
        gateway_config(nodes, poll_interval_s=5.0),  # only the broken stream can say it died
        [{"id": "m1", "nodes": ["a", "b"]}],
    )
    try:
        started = threading.Barrier(3)
        results: dict[str, list[Event]] = {}

        def stream(dialect: str) -> None:
            if dialect == "openai":
                path, headers, body = "/v1/chat/completions", API, chat("m1", LONG, stream=True)
            else:
                path, headers, body = "/v1/messages", ANTHROPIC, message("m1", LONG, stream=True)
            events: list[Event] = []
            # The read timeout bounds the wait: a hung stream fails the test.
            with httpx.stream(
                "POST", gateway.url + path, json=body, headers=headers, timeout=20
            ) as response:
                assert response.status_code == 200
                for event in sse_events(response):
                    events.append(event)
                    if len(events) == 4:
                        started.wait(20)
            results[dialect] = events

        threads = [threading.Thread(target=stream, args=(d,)) for d in ("openai", "anthropic")]
        for thread in threads:
            thread.start()
        started.wait(20)  # both streams are under way on node a
        nodes["a"].kill()
        for thread in threads:
            thread.join(30)
            assert not thread.is_alive(), "a stream hung after its node died"

        openai = results["openai"]
        assert openai[-1].data == "[DONE]"
        error = openai[-2].json()
        assert is_openai_error(error) and "'a'" in error["error"]["message"], error
        text, whole = _openai_text(openai[:-2]), f"This is m1 on a. You said: {LONG}"
        assert text and whole.startswith(text) and len(text) < len(whole)

        anthropic = results["anthropic"]
        assert anthropic[0].event == "message_start" and anthropic[-1].event == "error"
        error = anthropic[-1].json()
        assert is_anthropic_error(error) and error["error"]["type"] == "api_error", error
        assert not any(e.event == "message_stop" for e in anthropic)

        # Marked down by the failed stream itself (polls are 5 s apart here).
        wait_until(lambda: not node_up(gateway, "a"), timeout_s=4.0)
        reply = httpx.post(
            f"{gateway.url}/v1/chat/completions", json=chat("m1"), headers=API, timeout=20
        )
        assert reply.status_code == 200
        assert reply.json()["choices"][0]["message"]["content"].startswith("This is m1 on b.")
        answer = httpx.post(
            f"{gateway.url}/v1/messages", json=message("m1"), headers=ANTHROPIC, timeout=20
        )
        assert answer.json()["content"][0]["text"].startswith("This is m1 on b.")
        status = httpx.get(f"{gateway.url}/admin/status", headers=ADMIN, timeout=5).json()
        (m1,) = [m for m in status["models"] if m["id"] == "m1"]
        assert {p["node"]: p["state"] for p in m1["nodes"] if p["node_up"]} == {"b": "loaded"}
    finally:
        gateway.stop()
        for node in nodes.values():
            node.stop()


def _openai_text(events: list[Event]) -> str:
    parts: list[Any] = []
    for event in events:
        choices = event.json().get("choices") or []
        if choices:
            parts.append(choices[0]["delta"].get("content") or "")
    return "".join(parts)
