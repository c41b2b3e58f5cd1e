"""Real client traffic, mutated: requests captured from Claude Code, the Codex CLI and the SDKs
(`tests.captured`), each changed at random places (a field dropped, a value replaced by an odd
type or value: a lone surrogate, NaN, a huge number, an empty or nested container) and sent to
the real gateway and to the real neuron behind it. Every answer must be a success or a refusal in
the client's dialect: never a 5xx, never a reset connection, never a stream that stops without
its end or error event. Seeded, so a failure names a case that replays."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.captured import (
    ANTHROPIC_SDK_MESSAGE,
    CLAUDE_CODE_BODY,
    CODEX_RESPONSES_BODY,
    OPENAI_SDK_CHAT,
    OPENAI_SDK_COMPLETION,
)
from tests.faults.servers import ANTHROPIC, API, is_anthropic_error, is_openai_error

from .conftest import NODE_TOKEN, Stack

pytestmark = pytest.mark.e2e

SEED = 16
CASES = 50  # per target: 350 requests in all
ODD: list[Any] = [
    None,
    True,
    0,
    -1,
    2**64,
    1e308,
    float("nan"),
    float("-inf"),
    "",
    "\ud800",
    "x\udfffy",
    "\x00",
    [],
    {},
    [None],
    {"": None},
    [[[[]]]],
    "m1",
]


def _small(body: dict[str, Any], model: str, max_key: str | None = "max_tokens") -> dict[str, Any]:
    """The captured body on a served model, asking for few tokens (keeps the test fast)."""
    out = copy.deepcopy(body)
    out["model"] = model
    if max_key is not None:
        out[max_key] = 8
    return out


NODE = {"authorization": f"Bearer {NODE_TOKEN}"}  # the neuron guards inference with its token

# name: (server, path, headers, dialect, body)
TARGETS: dict[str, tuple[str, str, dict[str, str], str, dict[str, Any]]] = {
    "claude-code": ("gateway", "/v1/messages?beta=true", ANTHROPIC, "anthropic",
                    _small(CLAUDE_CODE_BODY, "claude-sonnet-4-5-20250929")),
    "claude-code-count": ("gateway", "/v1/messages/count_tokens?beta=true", ANTHROPIC, "anthropic",
                          {k: v for k, v in _small(CLAUDE_CODE_BODY, "m1").items()
                           if k not in ("stream", "max_tokens")}),
    "anthropic-sdk": ("gateway", "/v1/messages", ANTHROPIC, "anthropic",
                      _small(ANTHROPIC_SDK_MESSAGE, "m1")),
    "codex": ("gateway", "/v1/responses", API, "responses",
              _small(CODEX_RESPONSES_BODY, "m1", "max_output_tokens")),
    "openai-chat": ("gateway", "/v1/chat/completions", API, "openai",
                    _small(OPENAI_SDK_CHAT, "m1")),
    "openai-completion": ("gateway", "/v1/completions", API, "openai",
                          _small(OPENAI_SDK_COMPLETION, "m1")),
    "neuron-chat": ("neuron", "/v1/chat/completions", NODE, "openai",
                    _small(OPENAI_SDK_CHAT, "m1")),
    "neuron-completion": ("neuron", "/v1/completions", NODE, "openai",
                          _small(OPENAI_SDK_COMPLETION, "m1")),
}  # fmt: skip


def _paths(value: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a JSON value (the root excluded)."""
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return
    for key, child in items:
        yield (*at, key)
        yield from _paths(child, (*at, key))


def mutate(body: dict[str, Any], rng: random.Random) -> tuple[dict[str, Any], list[str]]:
    """`body` with 1 to 3 random changes, and what they were."""
    out = copy.deepcopy(body)
    done = []
    for _ in range(rng.randint(1, 3)):
        places = list(_paths(out))
        if not places:
            break
        path = rng.choice(places)
        parent = out
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        if rng.random() < 0.3:
            del parent[key]
            done.append(f"drop {list(path)}")
        else:
            value = copy.deepcopy(rng.choice(ODD))
            parent[key] = value
            done.append(f"{list(path)} = {value!r}")
    return out, done


def _stream_ended(text: str, dialect: str) -> bool:
    """Whether an SSE body ends the way its dialect ends a stream (well or with an error)."""
    datas = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    if not datas:
        return False
    if dialect == "openai":
        return datas[-1] == "[DONE]"
    last = json.loads(datas[-1]).get("type")
    if dialect == "anthropic":
        return last in ("message_stop", "error")
    return last in ("response.completed", "response.incomplete", "response.failed", "error")


def check(response: httpx.Response, dialect: str) -> str | None:
    """What is wrong with an answer (None: nothing)."""
    if response.status_code >= 500:
        return f"HTTP {response.status_code}: {response.text[:300]}"
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            return f"HTTP {response.status_code}, not JSON: {response.text[:300]}"
        envelope = is_anthropic_error if dialect == "anthropic" else is_openai_error
        return None if envelope(body) else f"HTTP {response.status_code}: {body}"
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        return None if _stream_ended(response.text, dialect) else f"cut: {response.text[-300:]}"
    return None if isinstance(response.json(), dict) else f"not an object: {response.text[:300]}"


@pytest.mark.parametrize("target", list(TARGETS))
def test_mutated_client_requests_get_an_answer_or_a_refusal_in_their_dialect(
    target: str, stack: Stack
) -> None:
    server, path, headers, dialect, body = TARGETS[target]
    base = stack.gateway.url if server == "gateway" else stack.neuron.url
    rng = random.Random(f"{SEED}-{target}")
    failures = []
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        for case in range(CASES):
            mutated, changes = mutate(body, rng)
            content = json.dumps(mutated).encode()  # ASCII: lone surrogates as `\ud800` escapes
            request = client.build_request(
                "POST", path, content=content, headers={"content-type": "application/json"}
            )
            try:
                response = client.send(request)
                problem = check(response, dialect)
            except httpx.TransportError as exc:
                problem = f"connection failed: {exc!r}"
            if problem is not None:
                failures.append(f"case {case} ({'; '.join(changes)}): {problem}")
    assert not failures, "\n".join(failures)
