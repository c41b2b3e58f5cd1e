"""SIGTERM to the gateway or to a neuron: streams in flight finish (up to the drain timeout),
new requests get 503 (Anthropic: 529), `/health` says draining, and the process exits 0."""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx
import pytest

from cortex.testing import GatewayProcess, start_gateway_process

from ..helpers import chat, message, wait_until
from .servers import (
    ANTHROPIC,
    API,
    Event,
    fake_neuron,
    gateway_config,
    is_anthropic_error,
    is_openai_error,
    sse_events,
    start_neurons,
)

pytestmark = pytest.mark.e2e

WORDS = " ".join(f"w{i}" for i in range(40))  # ~45 tokens: about 1.1 s at 40 tokens/s


class Streams:
    """Streams started in threads; `started` once each has its first events."""

    def __init__(self, gateway_url: str, requests: list[tuple[str, str, dict[str, object]]]):
        self.results: dict[str, list[Event]] = {}
        self._started = threading.Barrier(len(requests) + 1)
        self._threads = [
            threading.Thread(target=self._run, args=(gateway_url, *r)) for r in requests
        ]
        for thread in self._threads:
            thread.start()
        self._started.wait(30)

    def _run(self, url: str, name: str, path: str, body: dict[str, object]) -> None:
        headers = ANTHROPIC if path == "/v1/messages" else API
        events: list[Event] = []
        with httpx.stream("POST", url + path, json=body, headers=headers, timeout=30) as response:
            for event in sse_events(response):
                events.append(event)
                if len(events) == 3:
                    self._started.wait(30)
        self.results[name] = events

    def join(self) -> dict[str, list[Event]]:
        for thread in self._threads:
            thread.join(60)
            assert not thread.is_alive(), "a stream hung"
        return self.results


def _refused(url: str) -> None:
    """New requests get 503 / 529 with Retry-After in their dialect, /health 503 draining."""
    refused = httpx.post(f"{url}/v1/chat/completions", json=chat("m1"), headers=API, timeout=10)
    assert refused.status_code == 503 and refused.headers["retry-after"]
    assert is_openai_error(refused.json()) and "shutting down" in refused.json()["error"]["message"]
    overloaded = httpx.post(f"{url}/v1/messages", json=message("m1"), headers=ANTHROPIC, timeout=10)
    assert overloaded.status_code == 529 and is_anthropic_error(overloaded.json())
    health = httpx.get(f"{url}/health", timeout=10)
    assert (health.status_code, health.json()) == (503, {"status": "draining"})


def _gateway(drain_timeout_s: float) -> tuple[GatewayProcess, Callable[[], None]]:
    nodes = start_neurons({"a": fake_neuron("a", ["m1"], tokens_per_s=40.0)})
    gateway = start_gateway_process(gateway_config(nodes, drain_timeout_s=drain_timeout_s))

    def close() -> None:
        gateway.stop()
        nodes["a"].stop()

    return gateway, close


def test_sigterm_to_the_gateway_lets_streams_finish_and_refuses_new_requests() -> None:
    gateway, close = _gateway(drain_timeout_s=30.0)
    try:
        streams = Streams(
            gateway.url,
            [
                ("openai", "/v1/chat/completions", chat("m1", WORDS, stream=True)),
                ("anthropic", "/v1/messages", message("m1", WORDS, stream=True)),
            ],
        )
        gateway.terminate()
        wait_until(lambda: httpx.get(f"{gateway.url}/health", timeout=5).status_code == 503)
        _refused(gateway.url)
        results = streams.join()
        assert results["openai"][-1].data == "[DONE]"
        assert results["openai"][-2].json()["choices"][0]["finish_reason"] == "stop"
        assert results["anthropic"][-1].event == "message_stop"
        assert gateway.process.wait(30) == 0
        assert "draining: 2 request(s) in flight" in gateway.logs()
    finally:
        close()


def test_a_stream_longer_than_the_drain_timeout_ends_with_an_error_event() -> None:
    gateway, close = _gateway(drain_timeout_s=0.5)
    long = " ".join(f"w{i}" for i in range(2000))
    try:
        streams = Streams(
            gateway.url,
            [
                ("openai", "/v1/chat/completions", chat("m1", long, stream=True)),
                ("anthropic", "/v1/messages", message("m1", long, stream=True)),
                ("responses", "/v1/responses", {"model": "m1", "input": long, "stream": True}),
            ],
        )
        gateway.terminate()
        results = streams.join()
        cut = results["responses"][-1]
        assert cut.event == "error" and "shutting down" in cut.json()["message"]
        assert results["openai"][-1].data == "[DONE]"
        error = results["openai"][-2].json()
        assert is_openai_error(error) and "shutting down" in error["error"]["message"]
        assert results["anthropic"][-1].event == "error"
        assert is_anthropic_error(results["anthropic"][-1].json())
        assert gateway.process.wait(30) == 0
    finally:
        close()


def test_sigterm_to_a_neuron_drains_it_and_the_gateway_moves_new_requests() -> None:
    nodes = start_neurons({n: fake_neuron(n, ["m1"], tokens_per_s=40.0) for n in ("a", "b")})
    gateway = start_gateway_process(gateway_config(nodes), [{"id": "m1", "nodes": ["a", "b"]}])
    try:
        streams = Streams(
            gateway.url, [("openai", "/v1/chat/completions", chat("m1", WORDS, stream=True))]
        )
        nodes["a"].process.terminate()
        wait_until(lambda: httpx.get(f"{nodes['a'].url}/health", timeout=5).status_code == 503)
        direct = httpx.post(f"{nodes['a'].url}/v1/chat/completions", json=chat("m1"), timeout=10)
        assert direct.status_code == 503 and direct.headers["retry-after"]
        assert "shutting down" in direct.json()["error"]["message"]
        moved = httpx.post(
            f"{gateway.url}/v1/chat/completions", json=chat("m1"), headers=API, timeout=30
        )
        assert moved.json()["choices"][0]["message"]["content"].startswith("This is m1 on b.")
        events = streams.join()["openai"]
        assert events[-1].data == "[DONE]"
        assert events[-2].json()["choices"][0]["finish_reason"] == "stop"
        assert "on a." in "".join(
            e.json()["choices"][0]["delta"].get("content") or ""
            for e in events[:-1]
            if e.json()["choices"]
        )
        assert nodes["a"].process.wait(30) == 0
    finally:
        gateway.stop()
        for node in nodes.values():
            node.stop()
