"""Fitting a request to its model's context window before it is dispatched.

A prompt that cannot fit is refused here, with the sentence Claude Code parses to retry
(``input length and `max_tokens` exceed context limit: X + Y > Z``); an Anthropic `max_tokens`
larger than what is left of the window is clamped instead. Counting exactly takes a round trip
to the node (its tokenizer and chat template), so it is skipped when a cheap upper bound on the
prompt's tokens already shows the request fits.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from cortex.errors import ContextLengthExceededError, Dialect
from cortex.fleet import Lease

__all__ = ["fit_to_context", "prompt_tokens_bound"]

_PER_MESSAGE = 16  # room for a chat template's role markers around each message
_TEMPLATE = 256  # room for the template's fixed text (default system prompt, tool preamble)


def prompt_tokens_bound(messages: Any, tools: Any = None) -> int:
    """An upper bound on a chat's prompt tokens without its tokenizer.

    Byte-level tokenizers never make more tokens than bytes, and the JSON (ASCII-escaped) of
    the messages has at least as many bytes as their text; tools are counted twice over, as
    templates may render them indented; each message and the template get fixed room.
    """
    size = len(json.dumps(messages, ensure_ascii=True, separators=(",", ":")))
    if tools:
        size += 2 * len(json.dumps(tools, ensure_ascii=True))
    count = len(messages) if isinstance(messages, list) else 1
    return size + _PER_MESSAGE * count + _TEMPLATE


async def fit_to_context(
    lease: Lease,
    body: Mapping[str, Any],
    context_length: int | None,
    dialect: Dialect,
    *,
    exact: bool = False,
) -> tuple[dict[str, Any], int | None]:
    """Refuse or clamp `body` (an OpenAI chat request) to fit `context_length`.

    Args:
        lease: the node and model that will serve it (its tokenizer counts).
        body: the OpenAI chat request, sampling defaults resolved.
        context_length: the model's window (None: unknown, nothing checked).
        dialect: the client's; Anthropic requests get `max_tokens` clamped, OpenAI ones refused.
        exact: count the prompt even when it surely fits (for Anthropic's `message_start`).

    Returns:
        The request (a copy, `max_tokens` possibly lowered) and the prompt's token count, or
        None when it was not counted.

    Raises:
        ContextLengthExceededError: the prompt leaves no room for the reply (OpenAI: for the
            `max_tokens` asked).
    """
    out = dict(body)
    messages = out.get("messages")
    if not isinstance(messages, list):  # none, or malformed: the node refuses it in its dialect
        return out, None
    tools = out.get("tools") if isinstance(out.get("tools"), list) else None
    max_tokens = out.get("max_tokens")
    wanted = max_tokens if isinstance(max_tokens, int) else 1
    if not exact and (
        context_length is None or prompt_tokens_bound(messages, tools) + wanted <= context_length
    ):
        return out, None
    count = await lease.client.count_tokens(lease.model, messages, tools)
    if context_length is None:
        return out, count
    if dialect == "anthropic":
        if count >= context_length:
            raise ContextLengthExceededError(count, wanted, context_length)
        if not isinstance(max_tokens, int) or count + max_tokens > context_length:
            out["max_tokens"] = context_length - count
        return out, count
    if count + wanted > context_length:
        raise ContextLengthExceededError(count, wanted, context_length)
    return out, count
