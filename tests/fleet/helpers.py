"""Helpers of the fleet tests: asking neurons directly (bodies and waits: `tests.helpers`)."""

from __future__ import annotations

from typing import Any

import httpx

from cortex.testing import NeuronProcess


def node_status(node: NeuronProcess) -> dict[str, Any]:
    """A neuron's `/status`."""
    result: dict[str, Any] = httpx.get(f"{node.url}/status", timeout=10).json()
    return result


def loaded(node: NeuronProcess) -> set[str]:
    """The models loaded on a neuron, asked of the neuron itself."""
    data = httpx.get(f"{node.url}/models", timeout=10).json()["data"]
    return {e["id"] for e in data if e["state"] == "loaded"}
