"""Helpers of the fleet tests: request bodies, asking neurons directly, waiting with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx

from cortex.testing import NeuronProcess


def chat(model: str, text: str = "hello", **extra: Any) -> dict[str, Any]:
    """An OpenAI chat request body."""
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def node_status(node: NeuronProcess) -> dict[str, Any]:
    """A neuron's `/status`."""
    result: dict[str, Any] = httpx.get(f"{node.url}/status", timeout=10).json()
    return result


def loaded(node: NeuronProcess) -> set[str]:
    """The models loaded on a neuron, asked of the neuron itself."""
    data = httpx.get(f"{node.url}/models", timeout=10).json()["data"]
    return {e["id"] for e in data if e["state"] == "loaded"}


async def until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Wait for `condition` (checked every 20 ms), failing after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
