"""Request translation, OpenAI Chat -> Anthropic Messages (for Anthropic-native upstreams)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from cortex.errors import InvalidRequestError
from cortex.protocol import anthropic as A
from cortex.protocol import openai as O
from cortex.translate.coerce import as_model
from cortex.translate.ids import IdFactory
from cortex.translate.mapping import image_source_from_url, parse_tool_arguments

__all__ = ["DEFAULT_MAX_TOKENS", "openai_request_to_anthropic"]

DEFAULT_MAX_TOKENS: Final = 4096
"""`max_tokens` for an Anthropic request made from an OpenAI request that set none."""


def openai_request_to_anthropic(
    request: O.ChatCompletionRequest | Mapping[str, Any],
    *,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    ids: IdFactory | None = None,
) -> A.MessagesRequest:
    """Translate an OpenAI chat request into an Anthropic Messages request.

    Leading system and developer messages become the top-level `system`; later ones stay in
    place as `system` turns. Consecutive `tool` messages become one user turn of
    `tool_result` blocks, and a user message right after them joins that turn. Assistant
    `tool_calls` become `tool_use` blocks (arguments that are not a JSON object are kept
    under `RAW_ARGUMENTS_KEY`), `reasoning_content` a thinking block. `stop` becomes
    `stop_sequences`, `user` becomes `metadata.user_id`, `parallel_tool_calls: false`
    becomes `disable_parallel_tool_use`. Sampling knobs Anthropic lacks (seed, penalties,
    logprobs) are dropped.

    Args:
        request: the OpenAI request, as an envelope model or a dict.
        default_max_tokens: `max_tokens` when the request has neither `max_completion_tokens`
            nor `max_tokens` (Anthropic requires one).
        ids: makes the ids of legacy `function_call`s and thinking signatures.

    Raises:
        InvalidRequestError: for `n > 1`, audio input, or files that are not inline PDFs.
    """
    req = as_model(O.ChatCompletionRequest, request)
    ids = ids or IdFactory()
    if req.n is not None and req.n > 1:
        raise InvalidRequestError("n > 1 is not supported", param="n")
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    legacy_call_id = ""
    for msg in req.messages:
        if msg.role in ("system", "developer"):
            text = _openai_text(msg.content)
            if not turns:
                if text:
                    system.append({"type": "text", "text": text})
            else:
                _append_turn(turns, "system", [{"type": "text", "text": text}])
        elif msg.role == "user":
            _append_turn(turns, "user", _openai_user_blocks(msg.content))
        elif msg.role == "assistant":
            if msg.function_call is not None:
                legacy_call_id = ids.tool_use_id()
            _append_turn(turns, "assistant", _openai_assistant_blocks(msg, ids, legacy_call_id))
        else:
            call_id = msg.tool_call_id or legacy_call_id
            result = {
                "type": "tool_result",
                "tool_use_id": call_id,
                "content": _openai_tool_content(msg.content),
            }
            _append_turn(turns, "user", [result], tool_result=True)
    out: dict[str, Any] = {
        "model": req.model,
        "max_tokens": req.max_completion_tokens or req.max_tokens or default_max_tokens,
        "messages": [_turn_message(t) for t in turns],
    }
    if system:
        out["system"] = system[0]["text"] if len(system) == 1 else system
    for name in ("temperature", "top_p", "top_k", "stream"):
        if getattr(req, name) is not None:
            out[name] = getattr(req, name)
    if req.stop:
        out["stop_sequences"] = [req.stop] if isinstance(req.stop, str) else list(req.stop)
    functions = [t.function for t in req.tools or () if t.type == "function" and t.function]
    functions += req.functions or []
    if functions:
        out["tools"] = [_function_to_tool(f) for f in functions]
    choice = _tool_choice_to_anthropic(req.tool_choice or req.function_call)
    if req.parallel_tool_calls is False and (choice is None or choice["type"] != "none"):
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    if choice is not None:
        out["tool_choice"] = choice
    if req.user:
        out["metadata"] = {"user_id": req.user}
    out.update(_thinking_to_anthropic(req, out["max_tokens"]))
    return A.MessagesRequest.model_validate(out)


def _openai_text(content: str | list[Any] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n\n".join(t for p in content if (t := getattr(p, "text", None)))


def _append_turn(
    turns: list[dict[str, Any]], role: str, blocks: list[Any], *, tool_result: bool = False
) -> None:
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
        turns[-1]["single_text"] = False
    else:
        single = not tool_result and len(blocks) == 1 and blocks[0]["type"] == "text"
        turns.append({"role": role, "content": list(blocks), "single_text": single})


def _turn_message(turn: dict[str, Any]) -> dict[str, Any]:
    """A single-string turn stays a string; anything merged or multi-part is a block list."""
    if turn["single_text"]:
        return {"role": turn["role"], "content": turn["content"][0]["text"]}
    return {"role": turn["role"], "content": turn["content"]}


def _openai_user_blocks(content: str | list[Any] | None) -> list[dict[str, Any]]:
    if content is None:
        return [{"type": "text", "text": ""}]
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    blocks: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, O.ImagePart):
            blocks.append({"type": "image", "source": image_source_from_url(part.image_url.url)})
        elif isinstance(part, O.FilePart):
            blocks.append(_file_to_document(part))
        elif isinstance(part, O.InputAudioPart):
            raise InvalidRequestError("audio input is not supported", param="messages")
        elif text := getattr(part, "text", None):
            blocks.append({"type": "text", "text": text})
    return blocks


def _file_to_document(part: O.FilePart) -> dict[str, Any]:
    data = part.file.get("file_data")
    if isinstance(data, str) and data.startswith("data:"):
        source = image_source_from_url(data)
        document: dict[str, Any] = {"type": "document", "source": source}
        if part.file.get("filename"):
            document["title"] = part.file["filename"]
        return document
    raise InvalidRequestError("only inline (file_data) files are supported", param="messages")


def _openai_assistant_blocks(
    msg: O.ChatMessage, ids: IdFactory, legacy_call_id: str
) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    thinking = msg.reasoning_content or msg.reasoning
    if thinking:
        blocks.append({"type": "thinking", "thinking": thinking, "signature": ids.signature()})
    text = _openai_text(msg.content) or (msg.refusal or "")
    if text:
        blocks.append({"type": "text", "text": text})
    for call in msg.tool_calls or ():
        blocks.append(_tool_use(call.id, call.function))
    if msg.function_call is not None:
        blocks.append(_tool_use(legacy_call_id, msg.function_call))
    if not blocks:
        blocks.append({"type": "text", "text": ""})
    return blocks


def _tool_use(call_id: str, function: O.FunctionCall) -> dict[str, Any]:
    arguments = parse_tool_arguments(function.arguments)
    return {"type": "tool_use", "id": call_id, "name": function.name, "input": arguments}


def _openai_tool_content(content: str | list[Any] | None) -> str | list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return content or ""
    return [{"type": "text", "text": t} for p in content if (t := getattr(p, "text", None))]


def _function_to_tool(function: O.FunctionDefinition) -> dict[str, Any]:
    tool: dict[str, Any] = {
        "name": function.name,
        "input_schema": function.parameters or {"type": "object", "properties": {}},
    }
    if function.description:
        tool["description"] = function.description
    if function.strict is not None:
        tool["strict"] = function.strict
    return tool


def _tool_choice_to_anthropic(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if isinstance(choice, str):
        return {"type": {"auto": "auto", "required": "any", "none": "none"}.get(choice, "auto")}
    fields = choice if isinstance(choice, Mapping) else choice.model_dump(mode="json")
    function = fields.get("function") or {}
    name = function.get("name") or fields.get("name")
    if fields.get("type", "function") == "function" and name:
        return {"type": "tool", "name": name}
    mode = (fields.get("allowed_tools") or {}).get("mode")
    return {"type": "any" if mode == "required" else "auto"}


def _thinking_to_anthropic(req: O.ChatCompletionRequest, max_tokens: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    enable = (req.chat_template_kwargs or {}).get("enable_thinking")
    if req.reasoning_effort == "none":
        enable = False
    if enable is True:
        out["thinking"] = {"type": "enabled", "budget_tokens": max(1024, max_tokens // 2)}
    elif enable is False:
        out["thinking"] = {"type": "disabled"}
    config: dict[str, Any] = {}
    if req.reasoning_effort in ("low", "medium", "high", "xhigh", "max"):
        config["effort"] = req.reasoning_effort
    fmt = req.response_format
    if fmt is not None and fmt.type == "json_schema" and fmt.json_schema is not None:
        config["format"] = {"type": "json_schema", "schema": fmt.json_schema.schema_ or {}}
    if config:
        out["output_config"] = config
    return out
