"""Builders and waits the tests share: request bodies of each dialect, and waiting on a
condition with a deadline (never a bare sleep)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

__all__ = ["chat", "message", "until", "wait_until"]


def chat(model: str = "m1", text: str = "hello", **extra: Any) -> dict[str, Any]:
    """An OpenAI chat request body: one user message, then `extra` fields."""
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def message(model: str = "m1", text: str = "hello", **extra: Any) -> dict[str, Any]:
    """An Anthropic messages request body: one user message, `max_tokens` 512 unless given."""
    extra.setdefault("max_tokens", 512)
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


async def until(condition: Callable[[], object], timeout_s: float = 30.0) -> None:
    """Wait for `condition()` to be truthy (checked every 10 ms), failing after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def wait_until(condition: Callable[[], object], timeout_s: float = 30.0) -> None:
    """As `until`, blocking (for tests without an event loop); checked every 20 ms."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)
