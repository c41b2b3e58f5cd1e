"""What a stream translator accepts: a dict, an envelope model, a decoded SSE event, DONE."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeAlias

from pydantic import BaseModel

from cortex.errors import UpstreamError
from cortex.translate.sse import DONE, SSEEvent

__all__ = ["StreamEvent", "StreamItem", "item_payload"]

StreamEvent: TypeAlias = dict[str, Any]
"""One emitted event: a JSON-ready dict (an Anthropic event or an OpenAI chunk)."""

StreamItem: TypeAlias = Mapping[str, Any] | BaseModel | SSEEvent | str
"""One upstream item: a parsed dict, an envelope model, an `SSEEvent`, or `DONE`."""


def item_payload(item: StreamItem) -> Mapping[str, Any] | None:
    """The JSON payload of `item`, or `None` for the `[DONE]` terminator.

    Raises:
        UpstreamError: when an SSE event's data is not JSON.
    """
    if isinstance(item, Mapping):
        return item
    if isinstance(item, SSEEvent):
        if item.is_done:
            return None
        try:
            payload = json.loads(item.data)
        except ValueError as exc:
            raise UpstreamError(f"upstream sent an event that is not JSON: {exc}") from exc
        if not isinstance(payload, dict):
            raise UpstreamError("upstream sent an event that is not a JSON object")
        if item.event and "type" not in payload and item.event != "message":
            payload["type"] = item.event
        return payload
    if isinstance(item, str):
        if item == DONE:
            return None
        raise TypeError(f"not a stream item: {item!r}")
    dumped: dict[str, Any] = item.model_dump(mode="json")
    return dumped
