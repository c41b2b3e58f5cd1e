"""SmolLM2-135M-Instruct from its GGUF: our forward pass against transformers' on the same GGUF."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from cortex.engine import Tokenizer, load_model
from cortex.engine.models import Llama
from cortex.errors import ContextLengthExceededError, InvalidRequestError

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "Write a haiku about the sea."},
    ],
    [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Write a short story about a dragon who learns to bake bread."},
    ],
]


@pytest.fixture(scope="module")
def prompts(default_model_dir: Path) -> list[list[int]]:
    tokenizer = Tokenizer.from_dir(default_model_dir)
    return [tokenizer.apply_chat_template(chat) for chat in CHATS]


@pytest.fixture(scope="module")
def logits(smollm2: Llama, prompts: list[list[int]]) -> list[torch.Tensor]:
    """Our float32 logits at every position of the three chats."""
    return [smollm2.forward(ids) for ids in prompts]


@pytest.fixture(scope="module")
def greedy(smollm2: Llama, prompts: list[list[int]]) -> list[list[int]]:
    """Our greedy continuations (at most 32 tokens) of the three chats."""
    return [smollm2.generate(ids, 32) for ids in prompts]


def _hf_logits(hf_model: Any, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return hf_model(torch.tensor([ids])).logits[0].float()


def test_config_is_read(smollm2: Llama) -> None:
    config = smollm2.config
    assert (config.num_layers, config.num_heads, config.num_kv_heads) == (30, 9, 3)
    assert (config.hidden_size, config.head_dim, config.vocab_size) == (576, 64, 49152)
    assert config.tie_word_embeddings and smollm2.lm_head is smollm2.embed_tokens
    assert config.eos_token_ids == (2,)
    assert config.context_length == 8192
    assert config.architecture == "LlamaForCausalLM"


def test_logits_match_transformers(
    hf_model: Any, prompts: list[list[int]], logits: list[torch.Tensor]
) -> None:
    for ids, ours in zip(prompts, logits, strict=True):
        expected = _hf_logits(hf_model, ids)
        assert ours.shape == (len(ids), 49152) and ours.dtype == torch.float32
        assert (ours[-1] - expected[-1]).abs().max().item() < 1e-3
        assert (ours - expected).abs().max().item() < 1e-3  # every position, not just the last


def test_greedy_continuation_matches_transformers(
    hf_model: Any, prompts: list[list[int]], greedy: list[list[int]]
) -> None:
    ids, ours = prompts[2], greedy[2]  # a story: runs the full 32 tokens
    with torch.inference_mode():
        out = hf_model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=32,
            do_sample=False,
            pad_token_id=2,
        )
    assert len(ours) == 32
    assert ours == out[0, len(ids) :].tolist()


def test_greedy_stops_where_transformers_would(
    hf_model: Any, prompts: list[list[int]], greedy: list[list[int]]
) -> None:
    # Teacher-forced: transformers' argmax after every prefix of our continuation is our next
    # token, so its greedy decoding makes the same tokens and stops at the same end-of-turn.
    lengths = []
    for ids, ours in zip(prompts, greedy, strict=True):
        logits = _hf_logits(hf_model, ids + ours[:-1])[len(ids) - 1 :]
        assert logits.argmax(dim=-1).tolist() == ours
        assert len(ours) == 32 or ours[-1] == 2  # stops early only at the end-of-turn token
        lengths.append(len(ours))
    assert min(lengths) < 32  # an early stop was among them


def test_paged_chunks_and_batches_equal_forward(smollm2: Llama, paged_logits: Any) -> None:
    # Two sequences share steps: chunked prefill of one while the other decodes, then both decode.
    first = list(range(1000, 1045))
    second = list(range(2000, 2024))
    steps = [
        [(0, 20)],
        [(0, 17), (1, 19)],
        [(0, 5), (1, 1)],
        [(0, 1), (1, 1)],
        [(0, 1), (1, 1)],
        [(0, 1), (1, 1)],
        [(1, 1)],
    ]
    for sequence, logits in zip(
        (first, second), paged_logits(smollm2, [first, second], steps), strict=True
    ):
        expected = smollm2.forward(sequence)
        assert (logits - expected).abs().max().item() < 1e-3


def test_limits_are_enforced(smollm2: Llama) -> None:
    with pytest.raises(ContextLengthExceededError) as info:
        smollm2.generate([1, 2, 3], 8190)
    assert (info.value.input_tokens, info.value.max_tokens, info.value.context_length) == (
        3,
        8190,
        8192,
    )
    with pytest.raises(InvalidRequestError):
        smollm2.forward([])
    assert smollm2.generate([1, 2, 3], 0) == []


def test_bfloat16_is_close_to_float32(
    default_model_dir: Path,
    prompts: list[list[int]],
    logits: list[torch.Tensor],
    greedy: list[list[int]],
) -> None:
    model = load_model(default_model_dir, dtype="bfloat16")
    assert model.embed_tokens.dtype == torch.bfloat16
    for ids, reference in zip(prompts, logits, strict=True):
        ours = model.forward(ids)
        assert ours.dtype == torch.float32
        assert ours[-1].argmax() == reference[-1].argmax()
        # bf16 keeps 8 bits of mantissa: logits of magnitude ~25 move by well under 1.
        assert (ours[-1] - reference[-1]).abs().max().item() < 1.0
    assert model.generate(prompts[0], 32) == greedy[0]  # "The capital of France is Paris."
