"""Hypothesis properties: round trips keep meaning; any valid stream translates to a valid one
that adds up to the same message as translating the whole reply (judged by the SDK accumulators).
"""

from __future__ import annotations

import json
import os
from itertools import pairwise
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cortex.protocol import anthropic as A
from cortex.translate import (
    DONE,
    AnthropicStreamTranslator,
    OpenAIStreamTranslator,
    anthropic_request_to_openai,
    anthropic_response_to_openai,
    collect_chat_completion,
    collect_message,
    openai_request_to_anthropic,
    openai_response_to_anthropic,
)
from cortex.translate.mapping import parse_tool_arguments

from .helpers import (
    check_anthropic_stream,
    check_openai_stream,
    chunk,
    events_from_message,
    feed_all,
    ids,
    tool_inputs,
    usage_chunk,
)

# More examples for a deeper search: CORTEX_HYPOTHESIS_EXAMPLES=2000 pytest ...
EXAMPLES = int(os.environ.get("CORTEX_HYPOTHESIS_EXAMPLES", "120"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

text = st.text(alphabet="ab c\n{}\"'é🙂", min_size=1, max_size=10)
name = st.text(alphabet="abcdefgh_", min_size=1, max_size=8)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(alphabet="xy é", max_size=4),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(name, inner, max_size=2),
    max_leaves=5,
)
json_object = st.dictionaries(name, json_value, max_size=3)


def drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


# -- streams: OpenAI chunks -> Anthropic events ------------------------------------------------


@st.composite
def openai_streams(draw: st.DrawFn) -> tuple[list[Any], bool]:
    """A valid upstream chat stream: reasoning, then content, then tool calls (fragments of
    different calls interleaved, each call's first fragment in index order), grouped into
    chunks at random; finish and usage in any of the places servers put them."""

    def pieces(value: str) -> list[str]:
        cuts = draw(st.lists(st.integers(1, max(1, len(value) - 1)), max_size=3))
        bounds = [0, *sorted(set(c for c in cuts if c < len(value))), len(value)]
        return [value[a:b] for a, b in pairwise(bounds) if value[a:b]]

    fragments: list[dict[str, Any]] = []
    if draw(st.booleans()):
        fragments += [{"reasoning_content": p} for p in pieces(draw(text))]
    if draw(st.booleans()):
        fragments += [{"content": p} for p in pieces(draw(text))]
    tools = draw(st.lists(st.tuples(st.booleans(), name, json_object, st.booleans()), max_size=3))
    tool_parts: list[list[dict[str, Any]]] = []
    for index, (has_id, tool_name, arguments, broken) in enumerate(tools):
        raw = json.dumps(arguments)[:-1] if broken else json.dumps(arguments)
        parts = pieces(raw) if draw(st.booleans()) else ["", *pieces(raw)]
        first: dict[str, Any] = {
            "index": index,
            "type": "function",
            "function": {"name": tool_name, "arguments": parts[0]},
        }
        if has_id:
            first["id"] = f"call_{index}"
        rest = [{"index": index, "function": {"arguments": p}} for p in parts[1:]]
        tool_parts.append([first, *rest])
    started = 0
    while any(tool_parts):
        choices = [i for i in range(started) if tool_parts[i]]
        if started < len(tool_parts):
            choices.append(started)
        pick = draw(st.sampled_from(choices))
        started = max(started, pick + 1)
        fragments.append({"tool_calls": [tool_parts[pick].pop(0)]})
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    for fragment in fragments:
        last = deltas[-1]
        fits = not (fragment.keys() & last.keys() - {"tool_calls"}) and not (
            "tool_calls" in fragment
            and any(
                c["index"] == fragment["tool_calls"][0]["index"] for c in last.get("tool_calls", [])
            )
        )
        if fits and len(deltas) > 1 and draw(st.booleans()):
            if "tool_calls" in fragment and "tool_calls" in last:
                last["tool_calls"] = [*last["tool_calls"], *fragment["tool_calls"]]
            else:
                last.update(fragment)
        else:
            deltas.append(dict(fragment))
    finish = draw(st.sampled_from(["stop", "length", "tool_calls", "content_filter", None]))
    matched = draw(st.sampled_from([None, "###"])) if finish == "stop" else None
    prompt = draw(st.integers(0, 50))
    usage = draw(
        st.none()
        | st.builds(
            lambda c, k: {
                "prompt_tokens": prompt,
                "completion_tokens": c,
                "total_tokens": prompt + c,
                "prompt_tokens_details": {"cached_tokens": k},
            },
            st.integers(0, 50),
            st.integers(0, prompt),
        )
    )
    usage_place = draw(st.sampled_from(["finish", "separate"]))
    chunks: list[Any] = [chunk(d) for d in deltas]
    extra = {"stop_reason": matched} if matched else {}
    if finish is not None:
        if draw(st.booleans()):
            chunks[-1]["choices"][0].update(finish_reason=finish, **extra)
        else:
            chunks.append(chunk({}, finish, **extra))
    if usage is not None:
        if usage_place == "finish":
            chunks[-1]["usage"] = usage
        else:
            chunks.append(usage_chunk(usage))
    if draw(st.booleans()):
        chunks.append(DONE)
    return chunks, usage is not None


@SETTINGS
@given(openai_streams())
def test_any_openai_stream_gives_a_valid_anthropic_stream_and_the_same_message(
    stream: tuple[list[Any], bool],
) -> None:
    from anthropic.lib.streaming._messages import accumulate_event

    chunks, has_usage = stream
    request = {"model": "claude-x", "max_tokens": 64}
    events = feed_all(AnthropicStreamTranslator(request, ids=ids(), input_tokens=0), chunks)
    check_anthropic_stream(events)
    streamed = collect_message(events).model_dump(mode="json")
    whole = openai_response_to_anthropic(
        collect_chat_completion(chunks), request=request, ids=ids()
    )
    expected = whole.model_dump(mode="json")
    if not has_usage:  # streamed, output tokens are estimated from the deltas
        streamed["usage"]["output_tokens"] = expected["usage"]["output_tokens"]
    assert streamed == expected

    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for event in events:
        if event["type"] != "ping":
            snapshot = accumulate_event(
                event=event,  # type: ignore[arg-type]
                current_snapshot=snapshot,
                json_bufs=json_bufs,
            )
    assert snapshot is not None
    sdk = drop_nulls(snapshot.model_dump(mode="json"))
    ours = drop_nulls(collect_message(events).model_dump(mode="json"))
    for block in ours["content"]:  # the SDK parses tool input JSON in partial mode
        if "input" in block and "__raw_arguments__" in block["input"]:
            block.pop("input")
    for block in sdk["content"]:
        if block["type"] == "tool_use" and not any(
            b.get("id") == block["id"] and "input" in b for b in ours["content"]
        ):
            block.pop("input")
    assert sdk == ours


# -- streams: Anthropic events -> OpenAI chunks ------------------------------------------------


@st.composite
def anthropic_messages(draw: st.DrawFn) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if draw(st.booleans()):
        content.append({"type": "thinking", "thinking": draw(text), "signature": "sig"})
    count = 0
    for kind in draw(st.lists(st.sampled_from(["text", "tool_use"]), max_size=4)):
        if kind == "text":
            content.append({"type": "text", "text": draw(text)})
        else:
            block = {"type": "tool_use", "id": f"toolu_{count}", "name": draw(name)}
            content.append({**block, "input": draw(json_object)})
            count += 1
    stop_reason = draw(st.sampled_from(["end_turn", "max_tokens", "stop_sequence", "tool_use"]))
    usage = {
        "input_tokens": draw(st.integers(0, 99)),
        "output_tokens": draw(st.integers(0, 99)),
        "cache_read_input_tokens": draw(st.integers(0, 99)),
        "cache_creation_input_tokens": 0,
    }
    return {
        "id": "msg_up",
        "type": "message",
        "role": "assistant",
        "model": "up",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": "###" if stop_reason == "stop_sequence" else None,
        "usage": usage,
    }


@SETTINGS
@given(
    anthropic_messages(), st.integers(1, 5), st.lists(st.integers(1, 30), max_size=3), st.booleans()
)
def test_any_anthropic_stream_gives_a_valid_openai_stream_and_the_same_reply(
    message: dict[str, Any], pieces: int, pings: list[int], include_usage: bool
) -> None:
    from openai.lib.streaming.chat import ChatCompletionStreamState
    from openai.types.chat import ChatCompletionChunk

    events = events_from_message(message, pieces)
    for at in pings:
        events.insert(min(at, len(events) - 1), {"type": "ping"})
    request: dict[str, Any] = {"model": "gpt-local", "stream": True}
    if include_usage:
        request["stream_options"] = {"include_usage": True}
    chunks = feed_all(OpenAIStreamTranslator(request, ids=ids()), events)
    check_openai_stream(chunks, include_usage=include_usage)
    streamed = collect_chat_completion(chunks).model_dump(mode="json")
    expected = anthropic_response_to_openai(message, request=request, ids=ids()).model_dump(
        mode="json"
    )
    if not include_usage:
        expected.pop("usage")
    for reply in (streamed, expected):
        reply["choices"][0]["message"] = tool_inputs(reply["choices"][0]["message"])
    assert streamed == expected

    state: ChatCompletionStreamState[None] = ChatCompletionStreamState()
    for item in chunks[:-1]:
        state.handle_chunk(ChatCompletionChunk.model_validate(item))
    final = state.current_completion_snapshot  # get_final_completion() raises on `length`
    sdk_message = final.choices[0].message
    assert sdk_message.content == (expected["choices"][0]["message"]["content"] or None) or (
        sdk_message.content == "" and expected["choices"][0]["message"]["content"] in ("", None)
    )
    assert [
        (c.id, c.function.name, parse_tool_arguments(c.function.arguments))  # type: ignore[union-attr]
        for c in sdk_message.tool_calls or []
    ] == [
        (c["id"], c["function"]["name"], c["function"]["arguments"])
        for c in expected["choices"][0]["message"].get("tool_calls") or []
    ]
    assert final.choices[0].finish_reason == expected["choices"][0]["finish_reason"]


# -- requests: A -> O -> A and O -> A -> O keep their meaning ----------------------------------


@st.composite
def anthropic_requests(draw: st.DrawFn) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    pending: list[str] = []
    role = "user"
    for turn in range(draw(st.integers(1, 5))):
        if draw(st.booleans()) and turn and draw(st.booleans()):
            messages.append({"role": "system", "content": draw(text)})
        blocks: list[dict[str, Any]] = []
        if role == "user":
            for tool_id in pending:
                result: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_id}
                result["content"] = draw(
                    st.none()
                    | text
                    | st.lists(st.builds(lambda t: {"type": "text", "text": t}, text), max_size=2)
                )
                result["is_error"] = draw(st.sampled_from([None, False, True]))
                blocks.append(result)
            for kind in draw(st.lists(st.sampled_from(["text", "b64", "url"]), max_size=3)):
                if kind == "text":
                    blocks.append({"type": "text", "text": draw(text)})
                elif kind == "b64":
                    source = {"type": "base64", "media_type": "image/png", "data": "iVBORw"}
                    blocks.append({"type": "image", "source": source})
                else:
                    blocks.append(
                        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}}
                    )
            pending = []
        else:
            if draw(st.booleans()):
                blocks.append({"type": "thinking", "thinking": draw(text), "signature": "s"})
            if draw(st.booleans()):
                blocks.append({"type": "text", "text": draw(text)})
            for k in range(draw(st.integers(0, 2))):
                tool_id = f"toolu_{turn}_{k}"
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": tool_id,
                        "name": draw(name),
                        "input": draw(json_object),
                    }
                )
                pending.append(tool_id)
        if not blocks:
            blocks.append({"type": "text", "text": draw(text)})
        if len(blocks) == 1 and blocks[0]["type"] == "text" and draw(st.booleans()):
            messages.append({"role": role, "content": blocks[0]["text"]})
        elif len(blocks) > 1 and draw(st.booleans()):
            cut = draw(st.integers(1, len(blocks) - 1))
            messages += [
                {"role": role, "content": blocks[:cut]},
                {"role": role, "content": blocks[cut:]},
            ]
        else:
            messages.append({"role": role, "content": blocks})
        role = "assistant" if role == "user" else "user"
    request: dict[str, Any] = {
        "model": "claude-x",
        "max_tokens": draw(st.integers(1, 9999)),
        "messages": messages,
    }
    optional = {
        "system": st.one_of(
            text, st.lists(st.builds(lambda t: {"type": "text", "text": t}, text), max_size=2)
        ),
        "temperature": st.floats(0, 1),
        "top_p": st.floats(0, 1),
        "top_k": st.integers(1, 100),
        "stop_sequences": st.lists(text, max_size=2),
        "stream": st.booleans(),
        "metadata": st.builds(lambda u: {"user_id": u}, text),
        "tools": st.lists(
            st.builds(
                lambda n, d, s: {
                    "name": n,
                    "description": d,
                    "input_schema": {"type": "object", "properties": s},
                },
                name,
                st.none() | text,
                st.dictionaries(name, st.just({"type": "string"}), max_size=2),
            ),
            max_size=2,
        ),
        "tool_choice": st.builds(
            lambda kind, n, dpu: {
                "type": kind,
                **({"name": n} if kind == "tool" else {}),
                "disable_parallel_tool_use": dpu,
            },
            st.sampled_from(["auto", "any", "tool", "none"]),
            name,
            st.sampled_from([None, False, True]),
        ),
        "thinking": st.sampled_from(
            [{"type": "enabled", "budget_tokens": 1024}, {"type": "disabled"}, {"type": "adaptive"}]
        ),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            request[key] = draw(strategy)
    return request


def anthropic_meaning(body: Any) -> dict[str, Any]:
    """What a request means to a model: folded system, merged turns, tool results first."""
    req = A.MessagesRequest.model_validate(
        body if isinstance(body, dict) else body.model_dump(mode="json")
    )
    system = [req.system] if isinstance(req.system, str) else [b.text for b in req.system or []]
    turns: list[tuple[str, list[Any]]] = []
    for msg in req.messages:
        blocks = (
            [A.TextBlock(text=msg.content)] if isinstance(msg.content, str) else list(msg.content)
        )
        if turns and turns[-1][0] == msg.role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((msg.role, blocks))
    while turns and turns[0][0] == "system":
        system += [b.text for b in turns.pop(0)[1]]
    out_turns: list[Any] = []
    for role, blocks in turns:
        if role == "system":
            out_turns.append(("system", "\n\n".join(b.text for b in blocks)))
            continue
        results, rest = [], []
        for b in blocks:
            if isinstance(b, A.ToolResultBlock):
                content = b.content
                texts = (
                    content
                    if isinstance(content, str)
                    else "\n".join(t.text for t in content or [])
                )
                if b.is_error and not texts.startswith("Error:"):
                    texts = "Error: " + texts
                results.append((b.tool_use_id, texts))
            elif isinstance(b, A.ToolUseBlock):
                rest.append(("tool_use", b.id, b.name, b.input))
            elif isinstance(b, A.ThinkingBlock):
                rest.append(("thinking", b.thinking))
            elif isinstance(b, A.ImageBlock):
                rest.append(("image", b.source.model_dump(mode="json")))
            elif isinstance(b, A.TextBlock) and b.text:
                if rest and rest[-1][0] == "text":
                    rest[-1] = ("text", rest[-1][1] + "\n\n" + b.text)
                else:
                    rest.append(("text", b.text))
        if role == "assistant":
            thinking = "".join(r[1] for r in rest if r[0] == "thinking")
            texts_ = "\n\n".join(r[1] for r in rest if r[0] == "text")
            rest = [("thinking", thinking)] * bool(thinking) + [("text", texts_)] * bool(texts_)
            rest += [r for r in (b for b in blocks if isinstance(b, A.ToolUseBlock))]
            rest = [
                r if isinstance(r, tuple) else ("tool_use", r.id, r.name, r.input) for r in rest
            ]
        out_turns.append((role, results, rest))
    choice = req.tool_choice
    return {
        "system": "\n\n".join(s for s in system if s),
        "turns": out_turns,
        "params": (
            req.max_tokens,
            req.temperature,
            req.top_p,
            req.top_k,
            req.stop_sequences or None,
            bool(req.stream),
        ),
        "user": req.metadata.user_id if req.metadata else None,
        "tools": [(t.name, t.description, t.input_schema) for t in req.tools or []],
        "tool_choice": choice
        and (
            choice.type,
            choice.name,
            bool(choice.disable_parallel_tool_use) and choice.type != "none",
        ),
        "thinking": req.thinking and req.thinking.type
        if req.thinking and req.thinking.type != "adaptive"
        else None,
    }


@SETTINGS
@given(anthropic_requests())
def test_anthropic_request_round_trip_keeps_its_meaning(request: dict[str, Any]) -> None:
    there = anthropic_request_to_openai(request)
    back = openai_request_to_anthropic(there, ids=ids())
    assert anthropic_meaning(back) == anthropic_meaning(request)


@st.composite
def openai_requests(draw: st.DrawFn) -> dict[str, Any]:
    text_part = st.builds(lambda t: {"type": "text", "text": t}, text)
    messages: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(0, 2))):
        messages.append(
            {
                "role": draw(st.sampled_from(["system", "developer"])),
                "content": draw(text | st.lists(text_part, min_size=1, max_size=2)),
            }
        )
    for turn in range(draw(st.integers(1, 3))):
        parts = draw(
            st.lists(
                text_part
                | st.just(
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4A"}}
                )
                | st.just({"type": "image_url", "image_url": {"url": "https://x.test/b.jpg"}}),
                min_size=1,
                max_size=3,
            )
        )
        messages.append({"role": "user", "content": draw(text) if draw(st.booleans()) else parts})
        assistant: dict[str, Any] = {"role": "assistant", "content": draw(st.none() | text)}
        calls = [
            {
                "id": f"call_{turn}_{k}",
                "type": "function",
                "function": {"name": draw(name), "arguments": json.dumps(draw(json_object))},
            }
            for k in range(draw(st.integers(0, 2)))
        ]
        if calls:
            assistant["tool_calls"] = calls
        elif assistant["content"] is None:
            assistant["content"] = draw(text)
        if draw(st.booleans()):
            assistant["reasoning_content"] = draw(text)
        messages.append(assistant)
        for call in calls:
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": call["id"],
                    "content": draw(text | st.lists(text_part, min_size=1, max_size=2)),
                }
            )
    if messages[-1]["role"] == "tool" and draw(st.booleans()):
        messages.append({"role": "user", "content": draw(text)})
    request: dict[str, Any] = {"model": "gpt-local", "messages": messages}
    optional = {
        "max_tokens": st.integers(1, 9999),
        "max_completion_tokens": st.integers(1, 9999),
        "temperature": st.floats(0, 2),
        "top_p": st.floats(0, 1),
        "stop": text | st.lists(text, max_size=3),
        "user": text,
        "stream": st.booleans(),
        "tools": st.lists(
            st.builds(
                lambda n, p: {
                    "type": "function",
                    "function": {"name": n, **({"parameters": p} if p else {})},
                },
                name,
                st.none() | st.just({"type": "object", "properties": {"a": {"type": "integer"}}}),
            ),
            max_size=2,
        ),
        "tool_choice": st.sampled_from(
            ["auto", "required", "none", {"type": "function", "function": {"name": "f"}}]
        ),
        "parallel_tool_calls": st.booleans(),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            request[key] = draw(strategy)
    return request


def openai_meaning(body: Any) -> dict[str, Any]:
    req = body if isinstance(body, dict) else body.model_dump(mode="json")

    def parts(content: Any) -> list[Any]:
        if content is None:
            return []
        if isinstance(content, str):
            return [("text", content)] if content else []
        out: list[Any] = []
        for p in content:
            if p["type"] == "text":
                if out and out[-1][0] == "text":
                    out[-1] = ("text", out[-1][1] + "\n\n" + p["text"])
                elif p["text"]:
                    out.append(("text", p["text"]))
            else:
                out.append(("image", p["image_url"]["url"]))
        return out

    system, turns = [], []
    for msg in req["messages"]:
        role = msg["role"]
        if role in ("system", "developer") and not turns:
            system += [t for _, t in parts(msg["content"])]
        elif role == "user" and turns and turns[-1][0] == "user":
            merged = turns[-1][1] + parts(msg["content"])
            turns[-1] = (
                "user",
                parts(
                    [
                        {"type": k, "text": v}
                        if k == "text"
                        else {"type": "image_url", "image_url": {"url": v}}
                        for k, v in merged
                    ]
                ),
            )
        elif role == "user":
            turns.append(("user", parts(msg["content"])))
        elif role == "assistant":
            calls = [
                (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"] or "{}"))
                for c in msg.get("tool_calls") or []
            ]
            turns.append(
                (
                    "assistant",
                    "".join(t for _, t in parts(msg["content"])),
                    calls,
                    msg.get("reasoning_content"),
                )
            )
        else:
            content = msg["content"]
            content = content if isinstance(content, str) else "\n".join(p["text"] for p in content)
            turns.append(("tool", msg["tool_call_id"], content))
    stop = req.get("stop")
    choice = req.get("tool_choice")
    parallel = req.get("parallel_tool_calls")
    if parallel is False and choice is None:
        choice = "auto"
    if choice == "none" or parallel is not False:
        parallel = None
    return {
        "system": "\n\n".join(system),
        "turns": turns,
        "max_tokens": req.get("max_completion_tokens") or req.get("max_tokens") or 4096,
        "params": (
            req.get("temperature"),
            req.get("top_p"),
            req.get("user"),
            bool(req.get("stream")),
        ),
        "stop": ([stop] if isinstance(stop, str) else stop) or None,
        "tools": [
            (
                t["function"]["name"],
                t["function"].get("parameters") or {"type": "object", "properties": {}},
            )
            for t in req.get("tools") or []
        ],
        "tool_choice": (choice, parallel),
    }


@SETTINGS
@given(openai_requests())
def test_openai_request_round_trip_keeps_its_meaning(request: dict[str, Any]) -> None:
    there = openai_request_to_anthropic(request, ids=ids())
    back = anthropic_request_to_openai(there)
    assert openai_meaning(back) == openai_meaning(request)
