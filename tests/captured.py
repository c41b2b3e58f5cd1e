"""Requests as real clients send them (Claude Code, the Codex CLI, the official SDKs), captured
from their traffic and SDK sources, for tests that replay or mutate them."""

from __future__ import annotations

from typing import Any

__all__ = [
    "ANTHROPIC_SDK_MESSAGE",
    "CLAUDE_CODE_BODY",
    "CODEX_RESPONSES_BODY",
    "OPENAI_SDK_CHAT",
    "OPENAI_SDK_COMPLETION",
]

CLAUDE_CODE_BODY: dict[str, Any] = {
    "model": "claude-sonnet-4-5-20250929",
    "max_tokens": 32000,
    "system": [
        {
            "type": "text",
            "text": "x-anthropic-billing-header: cc_version=2.1.181; cc_entrypoint=cli; cch=1;",
        },
        {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Env: linux", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
    ],
    "messages": [
        {
            "role": "user",
            "content": [{"type": "text", "text": "say hi", "cache_control": {"type": "ephemeral"}}],
        },
        {"role": "system", "content": "Mid-conversation reminder."},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hm", "signature": "sig"},
                {"type": "redacted_thinking", "data": "abc"},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "Bash",
                    "input": {"command": "ls"},
                    "caller": {"type": "direct"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": "a\nb",
                    "is_error": False,
                    "cache_control": {"type": "ephemeral"},
                },
                {"type": "tool_reference", "tool_name": "Bash"},
            ],
        },
    ],
    "tools": [
        {
            "name": "Bash",
            "description": "Run a command",
            "input_schema": {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "properties": {"command": {"type": "string"}},
                "required": ["command"],
                "additionalProperties": False,
            },
            "strict": True,
            "defer_loading": False,
            "eager_input_streaming": True,
            "input_examples": [{"command": "ls"}],
        },
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
    ],
    "metadata": {"user_id": '{"device_id":"d","account_uuid":"","session_id":"s"}'},
    "thinking": {"type": "adaptive"},
    "output_config": {"effort": "high"},
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "stream": True,
}
"""Claude Code's `POST /v1/messages?beta=true` on a turn after a tool call."""

CODEX_RESPONSES_BODY: dict[str, Any] = {
    "model": "gpt-5-codex",
    "instructions": "You are Codex, a coding agent.",
    "stream": True,
    "store": False,
    "include": ["reasoning.encrypted_content"],
    "reasoning": {"effort": "medium", "summary": "auto"},
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "prompt_cache_key": "thread-1",
    "input": [
        {
            "type": "message",
            "role": "developer",
            "content": [{"type": "input_text", "text": "Sandbox: read-only."}],
        },
        {
            "type": "message",
            "role": "user",
            "id": "msg_u1",
            "content": [{"type": "input_text", "text": "List files"}],
        },
        {
            "type": "reasoning",
            "id": "rs_1",
            "summary": [],
            "content": [{"type": "reasoning_text", "text": "Use ls."}],
            "encrypted_content": None,
        },
        {
            "type": "function_call",
            "id": "fc_1",
            "call_id": "call_1",
            "name": "shell",
            "arguments": '{"command":["ls"]}',
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "a.txt\nb.txt"},
        {"role": "user", "content": "Thanks"},
    ],
    "tools": [
        {
            "type": "function",
            "name": "shell",
            "description": "Run a command",
            "strict": False,
            "parameters": {
                "type": "object",
                "properties": {"command": {"type": "array", "items": {"type": "string"}}},
                "required": ["command"],
            },
        },
        {"type": "web_search"},
    ],
}
"""The Codex CLI's `POST /v1/responses` on its second turn."""

OPENAI_SDK_CHAT: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"},
    ],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "The weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ],
    "tool_choice": "auto",
    "temperature": 0.2,
    "top_p": 0.9,
    "max_tokens": 64,
    "stop": ["\n\n"],
    "seed": 7,
    "stream": True,
    "stream_options": {"include_usage": True},
}
"""`openai` SDK: `client.chat.completions.create(..., stream=True)` after a tool call."""

OPENAI_SDK_COMPLETION: dict[str, Any] = {
    "model": "gpt-3.5-turbo-instruct",
    "prompt": "Say this is a test",
    "max_tokens": 16,
    "temperature": 0,
    "echo": False,
    "logprobs": None,
    "stream": False,
}
"""`openai` SDK: `client.completions.create(...)`."""

ANTHROPIC_SDK_MESSAGE: dict[str, Any] = {
    "model": "claude-haiku-4-5",
    "max_tokens": 256,
    "system": "Be brief.",
    "messages": [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}]},
    ],
    "temperature": 0.5,
    "top_k": 40,
    "stop_sequences": ["END"],
    "tool_choice": {"type": "none"},
}
"""`anthropic` SDK: `client.messages.create(...)`, not streamed."""
