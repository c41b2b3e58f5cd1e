"""Whether an OpenAI stream delta carries a token: one answer for dispatch, relays and metrics;
and which tool call a delta's fragment belongs to.

A delta carries a token when it has text of the reply (`content`, a legacy completion's `text`),
reasoning (`reasoning_content`, `reasoning`), a refusal, or a tool call fragment. The role chunk
and the usage chunk carry none. `TOKEN_MARKS` is the same test on a chunk's raw JSON text, for
relays that count tokens without parsing every chunk.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["TOKEN_FIELDS", "TOKEN_MARKS", "carries_token", "chunk_carries_token", "tool_call_index"]

TOKEN_FIELDS = ("content", "text", "reasoning_content", "reasoning", "refusal", "tool_calls")
"""The fields of a delta (or of a legacy completion choice) that carry a token when not empty."""

TOKEN_MARKS = re.compile(
    r'"(?:content|text|reasoning_content|reasoning|refusal)":"[^"]|"tool_calls":\[\{'
)
"""`carries_token` on a chunk's compact JSON text (a non-empty string, or a non-empty list of
tool calls, under one of `TOKEN_FIELDS`)."""


def carries_token(delta: Mapping[str, Any]) -> bool:
    """Whether a chat delta, or a legacy completion choice, carries a token."""
    return any(delta.get(name) for name in TOKEN_FIELDS)


def chunk_carries_token(payload: Any) -> bool:
    """Whether a parsed OpenAI stream chunk carries a token (in its first choice)."""
    choices = payload.get("choices") if isinstance(payload, dict) else None
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        return False
    choice = choices[0]
    delta = choice.get("delta")
    return carries_token(delta if isinstance(delta, dict) and delta else choice)


def tool_call_index(fragment: Mapping[str, Any], ids: Mapping[int, str]) -> int:
    """The index of the call a `tool_calls` fragment belongs to, given the ids of the calls
    seen so far by index. A lax server may leave `index` out: then a known id names its call,
    a new id starts a new call, and a fragment without either continues the last call."""
    index = fragment.get("index")
    if isinstance(index, int):
        return index
    call_id = fragment.get("id")
    for known, seen_id in ids.items():
        if call_id and seen_id == call_id:
            return known
    if call_id or not ids:
        return len(ids)
    return max(ids)
