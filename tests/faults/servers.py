"""Configs and fake neurons of the fault and bad-input tests, and reading a gateway's streams.

Gateway processes come from `cortex.testing.start_gateway_process`; request bodies and waits
from `tests.helpers`."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from cortex.testing import GatewayProcess, NeuronProcess, start_neuron_process
from cortex.translate.sse import SSEDecoder

KEY = "sk-faults-key"
ADMIN_KEY = "sk-faults-admin"
API = {"x-api-key": KEY}
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
ANTHROPIC = {**API, "anthropic-version": "2023-06-01"}


def gateway_config(
    neurons: Mapping[str, str | NeuronProcess], *, auth: bool = True, **gateway: Any
) -> dict[str, Any]:
    """A cortex.toml over `neurons` (name -> process or URL) with short test timings."""
    settings: dict[str, Any] = {
        "poll_interval_s": 1.0,  # polls time out at the interval: not too tight on a busy CI box
        "connect_timeout_s": 1.0,
        "request_timeout_s": 5.0,
        "load_timeout_s": 10.0,
        "drain_timeout_s": 10.0,
    }
    settings.update(gateway)
    config: dict[str, Any] = {
        "gateway": settings,
        "neurons": [
            {"name": name, "endpoint": node if isinstance(node, str) else node.url}
            for name, node in neurons.items()
        ],
    }
    if auth:
        config["auth"] = {"keys": [KEY], "admin_keys": [ADMIN_KEY]}
    return config


def fake_neuron(name: str, models: Sequence[str], **fake: Any) -> dict[str, Any]:
    """A fake neuron.toml: `models` of 400 MB and a 4096-token context, 2000 MB of memory."""
    fake.setdefault("tokens_per_s", 2000.0)
    fake.setdefault(
        "models", [{"id": m, "memory_mb": 400.0, "context_length": 4096} for m in models]
    )
    return {"name": name, "memory_mb": fake.pop("memory_mb", 2000.0), "fake": fake}


def start_neurons(configs: Mapping[str, Mapping[str, Any]]) -> dict[str, NeuronProcess]:
    """Start several fake neurons at once."""
    with ThreadPoolExecutor(len(configs)) as pool:
        futures = {n: pool.submit(start_neuron_process, dict(c)) for n, c in configs.items()}
        return {n: f.result() for n, f in futures.items()}


@dataclass
class Event:
    """One server-sent event as a client reads it."""

    event: str | None
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


def sse_events(response: httpx.Response) -> Iterator[Event]:
    """The events of a streamed response as they arrive."""
    decoder = SSEDecoder()
    for piece in response.iter_raw():
        for event in decoder.feed(piece):
            yield Event(event.event, event.data)
    for event in decoder.finish():
        yield Event(event.event, event.data)


def is_openai_error(body: Any) -> bool:
    """Whether `body` is OpenAI's error envelope, well-formed."""
    error = body.get("error") if isinstance(body, dict) else None
    return (
        isinstance(error, dict)
        and isinstance(error.get("message"), str)
        and bool(error["message"])
        and isinstance(error.get("type"), str)
        and "param" in error
        and "code" in error
    )


def is_anthropic_error(body: Any) -> bool:
    """Whether `body` is Anthropic's error envelope, well-formed."""
    error = body.get("error") if isinstance(body, dict) else None
    return (
        isinstance(body, dict)
        and body.get("type") == "error"
        and isinstance(error, dict)
        and isinstance(error.get("type"), str)
        and isinstance(error.get("message"), str)
        and bool(error["message"])
    )


def node_up(gateway: GatewayProcess, node: str) -> bool:
    """Whether the gateway sees `node` up (its admin status)."""
    status = httpx.get(f"{gateway.url}/admin/status", headers=ADMIN, timeout=5).json()
    return any(n["name"] == node and n["up"] for n in status["nodes"])
