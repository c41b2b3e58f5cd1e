"""`fold_layout`: a chat rearranged for a template that refuses its layout.

Claude Code sends a `system` message in the middle of the conversation (its list of agent
types, after the first user turn); clients also send several system messages, or two user
turns in a row. Many chat templates raise for these ("System message must be at the
beginning", "Conversation roles must alternate user/assistant/user/assistant"). Folding
keeps every word and changes only where it sits: the system turns join the leading system
message, in order (or, for a template with no system role at all, the first user turn), and
consecutive plain user or assistant turns join into one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["SYSTEM_ROLES", "fold_layout"]

SYSTEM_ROLES = frozenset({"system", "developer"})
"""The roles folded into the system prompt (OpenAI's `developer` is a system message)."""


def _text(content: Any) -> str | None:
    """The text of a message's content (a string or text parts); None for anything else."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, Mapping) and p.get("type") == "text" for p in content
    ):
        return "".join(str(p.get("text", "")) for p in content)
    return None


def _plain(message: Mapping[str, Any]) -> bool:
    """A user or assistant turn of text only (no tool calls), which may merge with its like."""
    return (
        message.get("role") in ("user", "assistant")
        and not message.get("tool_calls")
        and _text(message.get("content")) is not None
    )


def _join(*texts: str) -> str:
    return "\n\n".join(t for t in texts if t)


def fold_layout(
    messages: Sequence[Mapping[str, Any]], *, system_role: bool = True
) -> list[dict[str, Any]]:
    """The chat with its system turns folded and same-role runs merged.

    Args:
        messages: OpenAI-style chat messages.
        system_role: the template has a system role: system turns become one leading system
            message; otherwise they open the first user turn.

    Returns:
        New message dicts; the chat unchanged (but copied) when there is nothing to fold.
    """
    systems = [_text(m.get("content")) or "" for m in messages if m.get("role") in SYSTEM_ROLES]
    merged: list[dict[str, Any]] = []
    for message in messages:
        if message.get("role") in SYSTEM_ROLES:
            continue
        last = merged[-1] if merged else None
        if (
            last is not None
            and last["role"] == message.get("role")
            and _plain(last)
            and _plain(message)
        ):
            last["content"] = _join(_text(last["content"]) or "", _text(message["content"]) or "")
        else:
            merged.append(dict(message))
    system = _join(*systems)
    if not system:
        return merged
    if system_role:
        return [{"role": "system", "content": system}, *merged]
    for message in merged:
        if message.get("role") == "user" and _text(message.get("content")) is not None:
            message["content"] = _join(system, _text(message.get("content")) or "")
            return merged
    return [{"role": "user", "content": system}, *merged]
