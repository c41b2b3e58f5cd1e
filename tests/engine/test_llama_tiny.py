"""Tiny random Llama-family checkpoints, written by our safetensors writer, against transformers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from cortex.engine import load_model
from cortex.engine.models import LlamaConfig
from cortex.engine.models.kv_cache import ContiguousKVCache
from cortex.engine.safetensors import save_file
from cortex.errors import CortexError

transformers = pytest.importorskip("transformers")

_SHAPE = {
    "vocab_size": 96,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "rms_norm_eps": 1e-5,
    "hidden_act": "silu",
}

# config.json as each family publishes it (the classic keys: rope_theta and rope_scaling).
CONFIGS: dict[str, dict[str, Any]] = {
    "qwen2": {
        **_SHAPE,
        "model_type": "qwen2",
        "architectures": ["Qwen2ForCausalLM"],
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": False,
        "use_sliding_window": False,
        "sliding_window": 32,  # ignored: use_sliding_window is off
    },
    "mistral": {
        **_SHAPE,
        "model_type": "mistral",
        "architectures": ["MistralForCausalLM"],
        "num_key_value_heads": 1,
        "head_dim": 16,
        "max_position_embeddings": 512,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "sliding_window": 200,  # longer than the test sequences: full attention is exact
        "eos_token_id": 2,
    },
    "llama3": {
        **_SHAPE,
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "num_key_value_heads": 2,
        "head_dim": 24,  # heads * head_dim != hidden_size
        "max_position_embeddings": 1024,
        "rope_theta": 500000.0,
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
        "tie_word_embeddings": True,
        "attention_bias": True,
        "mlp_bias": True,
    },
    "llama2-linear": {
        **_SHAPE,
        "model_type": "llama",
        "num_key_value_heads": 4,
        "max_position_embeddings": 256,
        "rope_theta": 10000.0,
        "rope_scaling": {"type": "linear", "factor": 2.0},
        "tie_word_embeddings": False,
    },
}
LENGTH = 150  # past llama3's original 64 positions, so its scaling matters
IDS = torch.randint(3, 96, (LENGTH,), generator=torch.Generator().manual_seed(5)).tolist()


@pytest.fixture(scope="module", params=list(CONFIGS))
def checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A model folder with random weights (saved by our writer) and transformers' model of it."""
    name: str = request.param
    model_dir = tmp_path_factory.mktemp(name)
    (model_dir / "config.json").write_text(json.dumps(CONFIGS[name]))
    config = transformers.AutoConfig.from_pretrained(model_dir)
    torch.manual_seed(0)
    hf = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        for key, param in hf.named_parameters():
            if "norm" in key:
                param.normal_(1.0, 0.2)  # not all ones, so swapped norms would show
            elif key.endswith("bias"):
                param.normal_(0.0, 0.2)  # transformers initialises biases to zero
            else:
                param.normal_(0.0, 0.1)
    tensors = {k: v.contiguous() for k, v in hf.state_dict().items()}
    if config.tie_word_embeddings:
        del tensors["lm_head.weight"]
    save_file(tensors, model_dir / "model.safetensors", metadata={"format": "pt"})
    return name, model_dir, hf


def _hf_logits(hf: Any, ids: list[int], dtype: torch.dtype) -> torch.Tensor:
    model = hf.to(dtype)
    try:
        with torch.inference_mode():
            return model(torch.tensor([ids])).logits[0].float()
    finally:
        hf.to(torch.float32)


@pytest.mark.parametrize(
    ("dtype", "tolerance"),
    # Low precision: both implementations round differently; each lands ~1.5% of the logit
    # scale from float32 (measured), so they must agree to a few percent.
    [(torch.float32, 1e-5), (torch.bfloat16, 0.05), (torch.float16, 0.03)],
    ids=["float32", "bfloat16", "float16"],
)
def test_logits_match_transformers(checkpoint: Any, dtype: torch.dtype, tolerance: float) -> None:
    _, model_dir, hf = checkpoint
    ours = load_model(model_dir, dtype=dtype)
    assert ours.embed_tokens.dtype == dtype
    logits = ours.forward(IDS)
    expected = _hf_logits(hf, IDS, dtype)
    scale = expected.abs().max().item()
    assert logits.shape == (LENGTH, 96)
    assert (logits - expected).abs().max().item() < tolerance * max(scale, 1.0)


def test_greedy_generation_matches_transformers(checkpoint: Any) -> None:
    _, model_dir, hf = checkpoint
    ours = load_model(model_dir)
    prompt = IDS[:20]
    generated = ours.generate(prompt, 16, stop_token_ids=())
    with torch.inference_mode():
        out = hf.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=16,
            min_new_tokens=16,
            do_sample=False,
            pad_token_id=0,
        )
    assert generated == out[0, len(prompt) :].tolist()


def test_paged_steps_match_forward(checkpoint: Any, paged_logits: Any) -> None:
    _, model_dir, _ = checkpoint
    ours = load_model(model_dir)
    steps = [[(0, 33)], [(0, 40)], *[[(0, 1)]] * 5, [(0, 7)], *[[(0, 1)]] * 3]
    sequence = IDS[:88]
    (logits,) = paged_logits(ours, [sequence], steps, block_size=8)
    assert (logits - ours.forward(sequence)).abs().max().item() < 1e-4


def test_config_reading(checkpoint: Any) -> None:
    name, model_dir, _ = checkpoint
    config = LlamaConfig.from_dir(model_dir)
    if name == "qwen2":
        assert config.qkv_bias and not config.o_bias and config.sliding_window is None
    if name == "mistral":
        assert config.context_length == 512  # the sliding window is masked, not a bound
        assert config.window(0) == config.window(1) == 200
        assert config.eos_token_ids == (2,)
    if name == "llama3":
        assert config.qkv_bias and config.o_bias and config.mlp_bias
        assert config.rope_scaling is not None and config.rope_scaling["rope_type"] == "llama3"
    # transformers 5 writes rope settings as `rope_parameters`; both spellings read the same.
    saved = model_dir / "saved"
    transformers.AutoConfig.from_pretrained(model_dir).save_pretrained(saved)
    assert LlamaConfig.from_dir(saved).rope_scaling == config.rope_scaling
    assert LlamaConfig.from_dir(saved).rope_theta == config.rope_theta


def test_bad_checkpoints_are_reported(tmp_path: Path) -> None:
    config = {**CONFIGS["qwen2"], "tie_word_embeddings": True}
    (tmp_path / "config.json").write_text(json.dumps(config))
    save_file({"model.embed_tokens.weight": torch.zeros(96, 64)}, tmp_path / "model.safetensors")
    with pytest.raises(CortexError, match="lacks"):
        load_model(tmp_path)
    save_file({"model.embed_tokens.weight": torch.zeros(95, 64)}, tmp_path / "model.safetensors")
    with pytest.raises(CortexError, match="shape"):
        load_model(tmp_path)
    save_file({"model.extra.weight": torch.zeros(1)}, tmp_path / "model.safetensors")
    with pytest.raises(CortexError, match="does not belong"):
        load_model(tmp_path)
    for bad in ({"model_type": "gpt2"}, {"hidden_act": "gelu"}, {"rope_scaling": {"type": "yarn"}}):
        (tmp_path / "config.json").write_text(json.dumps({**config, **bad}))
        with pytest.raises(CortexError, match="not supported"):
            load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CortexError, match="dtype"):
        load_model(tmp_path, dtype="int8")


def test_contiguous_cache_runs_chunks(checkpoint: Any) -> None:
    # A chunk after a cached prefix needs the offset causal mask; decode steps need none.
    _, model_dir, _ = checkpoint
    model = load_model(model_dir)
    config = model.config
    cache = ContiguousKVCache(
        config.num_layers,
        config.num_kv_heads,
        config.head_dim,
        100,
        device="cpu",
        dtype=model.dtype,
    )
    chunks = []
    with torch.inference_mode():
        for size in (33, 40, 1, 1, 13):
            ids = torch.tensor(IDS[cache.start : cache.start + size])
            rope = model.rope_table[cache.start : cache.start + size]
            chunks.append(model.compute_logits(model.hidden_states(ids, rope, cache)))
            cache.start += size
    expected = model.forward(IDS[: cache.start])
    assert (torch.cat(chunks) - expected).abs().max().item() < 1e-4
    with pytest.raises(ValueError, match="holds 100 tokens"):
        model.hidden_states(torch.tensor(IDS[:13]), model.rope_table[88:101], cache)


def test_sampling_is_reproducible_with_a_seed(checkpoint: Any) -> None:
    _, model_dir, _ = checkpoint
    model = load_model(model_dir)
    prompt = IDS[:10]
    first = model.generate(prompt, 12, temperature=1.0, seed=7, stop_token_ids=())
    assert model.generate(prompt, 12, temperature=1.0, seed=7, stop_token_ids=()) == first
    others = [model.generate(prompt, 12, temperature=1.0, seed=s) for s in (8, 9)]
    assert any(other != first[: len(other)] for other in others)
    assert all(0 <= t < 96 for t in first)
    # A very low temperature is greedy in all but name.
    cold = model.generate(prompt, 12, temperature=1e-4, seed=1, stop_token_ids=())
    assert cold == model.generate(prompt, 12, stop_token_ids=())


def test_generation_stops_at_end_of_turn(checkpoint: Any) -> None:
    _, model_dir, _ = checkpoint
    model = load_model(model_dir)
    free = model.generate(IDS[:10], 12, stop_token_ids=())
    stop = free[5]
    streamed: list[int] = []
    stopped = model.generate(IDS[:10], 12, stop_token_ids={stop}, on_token=streamed.append)
    assert stopped == streamed == free[: free.index(stop) + 1]
