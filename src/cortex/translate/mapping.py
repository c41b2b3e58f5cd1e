"""The small value maps every direction shares: stop reasons, usage, tool arguments, images."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

from cortex.errors import InvalidRequestError
from cortex.translate.tool_input import RAW_ARGUMENTS_KEY, parse_arguments_text

__all__ = [
    "RAW_ARGUMENTS_KEY",
    "anthropic_usage",
    "dump_tool_input",
    "finish_reason_for",
    "image_source_from_url",
    "image_url_from_source",
    "openai_usage",
    "parse_tool_arguments",
    "refuse_samples",
    "stop_reason_for",
]

_FINISH_TO_STOP: Final[dict[str, str]] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

_STOP_TO_FINISH: Final[dict[str, str]] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def stop_reason_for(
    finish_reason: str | None,
    *,
    matched_stop: Any = None,
    has_tool_use: bool = False,
) -> tuple[str, str | None]:
    """Anthropic `(stop_reason, stop_sequence)` for an OpenAI finish.

    Args:
        finish_reason: OpenAI's `finish_reason` (`None` when the upstream never said).
        matched_stop: vLLM's non-standard `choices[].stop_reason`: the stop string that fired
            (a token id or `None` otherwise).
        has_tool_use: whether the reply holds tool calls; small models often say `stop` with
            tool calls, and an agent loop only continues on `tool_use`.
    """
    reason = _FINISH_TO_STOP.get(finish_reason or "stop", "end_turn")
    sequence = None
    if reason == "end_turn" and isinstance(matched_stop, str) and matched_stop:
        reason, sequence = "stop_sequence", matched_stop
    if has_tool_use and reason in ("end_turn", "stop_sequence"):
        return "tool_use", None
    return reason, sequence


def finish_reason_for(stop_reason: str | None, *, has_tool_calls: bool = False) -> str:
    """OpenAI `finish_reason` for an Anthropic `stop_reason` (`tool_calls` if tools ran)."""
    finish = _STOP_TO_FINISH.get(stop_reason or "end_turn", "stop")
    if has_tool_calls and finish == "stop":
        return "tool_calls"
    return finish


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def anthropic_usage(usage: Mapping[str, Any] | None, *, input_tokens: int = 0) -> dict[str, int]:
    """Anthropic usage from OpenAI usage: cached prompt tokens move to `cache_read`.

    Args:
        usage: OpenAI `usage` (`prompt_tokens` includes cached tokens) or `None`.
        input_tokens: the prompt count to report when the upstream sent no usage.
    """
    if not usage:
        return {
            "input_tokens": input_tokens,
            "output_tokens": 0,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
    details = usage.get("prompt_tokens_details") or {}
    cached = _int(details.get("cached_tokens"))
    return {
        "input_tokens": max(0, _int(usage.get("prompt_tokens")) - cached),
        "output_tokens": _int(usage.get("completion_tokens")),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


def openai_usage(usage: Mapping[str, Any] | None) -> dict[str, Any]:
    """OpenAI usage from Anthropic usage: `prompt_tokens` counts every input token."""
    usage = usage or {}
    cached = _int(usage.get("cache_read_input_tokens"))
    prompt = (
        _int(usage.get("input_tokens")) + cached + _int(usage.get("cache_creation_input_tokens"))
    )
    completion = _int(usage.get("output_tokens"))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def parse_tool_arguments(arguments: Any) -> dict[str, Any]:
    """Tool-call arguments (a JSON string, or an object from a lax server) as an object.

    Empty text gives `{}`; text that is not a whole JSON object keeps what parses and adds the
    raw text under `RAW_ARGUMENTS_KEY`, instead of raising or silently losing it. The rules
    are those of `ToolInputStream`, so a streamed and a whole reply give the same input.
    """
    if isinstance(arguments, Mapping):
        return dict(arguments)
    if arguments is None:
        return {}
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return parse_arguments_text(text)


def dump_tool_input(tool_input: Mapping[str, Any] | None) -> str:
    """A `tool_use.input` object as OpenAI's `arguments` string (undoing the raw wrapper)."""
    if not tool_input:
        return "{}"
    raw = tool_input.get(RAW_ARGUMENTS_KEY)
    if isinstance(raw, str):
        return raw
    return json.dumps(tool_input, ensure_ascii=False)


_DATA_URI = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]*)*?);base64,", re.I)


def image_url_from_source(source: Mapping[str, Any]) -> str:
    """An OpenAI `image_url.url` for an Anthropic image source (base64 -> data URI)."""
    if source.get("type") == "base64":
        return f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    url = source.get("url")
    if isinstance(url, str) and url:
        return url
    raise InvalidRequestError(
        f"image source of type {source.get('type')!r} is not supported", param="messages"
    )


def image_source_from_url(url: str) -> dict[str, Any]:
    """An Anthropic image source for an OpenAI image URL (data URI -> base64)."""
    match = _DATA_URI.match(url)
    if match is not None:
        media_type = match.group("type") or "image/png"
        return {"type": "base64", "media_type": media_type, "data": url[match.end() :]}
    if url.startswith("data:"):
        raise InvalidRequestError("image data URIs must be base64-encoded", param="messages")
    return {"type": "url", "url": url}


def refuse_samples(extra: Mapping[str, Any] | None, api: str) -> None:
    """A dialect without `n` asked for several samples: a 400 that says where to ask instead.

    Args:
        extra: the request's fields outside its dialect (`model_extra`).
        api: the dialect's name, for the message.
    """
    n = (extra or {}).get("n")
    if n is not None and n != 1:
        raise InvalidRequestError(
            f"n: the {api} has no `n` (several samples of one request); "
            "ask POST /v1/chat/completions or /v1/completions for them",
            param="n",
        )
