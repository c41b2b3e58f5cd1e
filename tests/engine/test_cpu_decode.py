"""The fused CPU decode step against the eager one it replaces, on tiny random checkpoints.

Each family the fused step covers (Llama with grouped heads and biases, Qwen3's q/k norms,
Mistral's sliding window shorter than the sequence) in float32, bfloat16, int8 and int4: the
paged engine step (ragged batches over a shuffled cache) and the contiguous `generate` loop
give the same logits and tokens with `CORTEX_CPU_FUSED` on as off.
"""

from __future__ import annotations

import gc
import json
import threading
import weakref
from pathlib import Path
from typing import Any

import pytest
import torch

from cortex.engine import load_model
from cortex.engine.kernels import cpu_decode
from cortex.engine.kernels.cpu_decode import build_library
from cortex.engine.models.kv_cache import ContiguousKVCache
from cortex.engine.safetensors import save_file

_SHAPE = {
    "vocab_size": 96,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "rms_norm_eps": 1e-5,
    "hidden_act": "silu",
    "max_position_embeddings": 256,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
}
FAMILIES: dict[str, dict[str, Any]] = {
    "llama-biases": {**_SHAPE, "model_type": "llama", "attention_bias": True, "mlp_bias": True},
    "qwen3": {**_SHAPE, "model_type": "qwen3", "tie_word_embeddings": True},
    "mistral-window": {**_SHAPE, "model_type": "mistral", "sliding_window": 24},
}


def _checkpoint(folder: Path, config: dict[str, Any]) -> Path:
    """A random checkpoint of `config` in Hugging Face's names, written by our writer."""
    gen = torch.Generator().manual_seed(0)
    hidden, width = config["hidden_size"], config["intermediate_size"]
    heads, kv_heads, dim = (
        config["num_attention_heads"],
        config["num_key_value_heads"],
        config["head_dim"],
    )

    def matrix(rows: int, cols: int) -> torch.Tensor:
        return torch.randn(rows, cols, generator=gen) * 0.1

    def gain(size: int) -> torch.Tensor:
        return 1.0 + 0.2 * torch.randn(size, generator=gen)

    tensors = {
        "model.embed_tokens.weight": matrix(config["vocab_size"], hidden),
        "model.norm.weight": gain(hidden),
    }
    if not config["tie_word_embeddings"]:
        tensors["lm_head.weight"] = matrix(config["vocab_size"], hidden)
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes = {
            "self_attn.q_proj": (heads * dim, hidden),
            "self_attn.k_proj": (kv_heads * dim, hidden),
            "self_attn.v_proj": (kv_heads * dim, hidden),
            "self_attn.o_proj": (hidden, heads * dim),
            "mlp.gate_proj": (width, hidden),
            "mlp.up_proj": (width, hidden),
            "mlp.down_proj": (hidden, width),
        }
        for name, (rows, cols) in shapes.items():
            tensors[f"{p}{name}.weight"] = matrix(rows, cols)
            biased = config.get("mlp_bias") if "mlp" in name else config.get("attention_bias")
            if biased:
                tensors[f"{p}{name}.bias"] = 0.2 * torch.randn(rows, generator=gen)
        tensors[f"{p}input_layernorm.weight"] = gain(hidden)
        tensors[f"{p}post_attention_layernorm.weight"] = gain(hidden)
        if config["model_type"] == "qwen3":
            tensors[f"{p}self_attn.q_norm.weight"] = gain(dim)
            tensors[f"{p}self_attn.k_norm.weight"] = gain(dim)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


@pytest.fixture(scope="module", params=list(FAMILIES))
def family_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    name: str = request.param
    return _checkpoint(tmp_path_factory.mktemp(name), FAMILIES[name])


# Logits agree to float32 rounding in float32; in bfloat16 the eager path rounds its attention
# (contiguous cache) or sums in another order, a few units in the last place of the logits.
HOLDINGS = [
    ("float32", torch.float32, None, 1e-4),
    ("bfloat16", torch.bfloat16, None, 0.06),
    ("int8", torch.bfloat16, "int8", 0.06),
    ("int4", torch.bfloat16, "int4", 0.06),
]

SEQUENCES = [
    torch.randint(3, 96, (n,), generator=torch.Generator().manual_seed(n)).tolist()
    for n in (40, 29, 36)
]
# Prefill the three in chunks, then decode them together, then two alone (ragged lengths).
STEPS = [
    [(0, 30), (1, 20), (2, 25)],
    *[[(0, 1), (1, 1), (2, 1)]] * 8,
    *[[(0, 1), (2, 1)]] * 2,
]


@pytest.mark.parametrize(("holding", "dtype", "quant", "tolerance"), HOLDINGS)
def test_fused_paged_steps_equal_the_eager_ones(
    family_dir: Path,
    holding: str,
    dtype: torch.dtype,
    quant: str | None,
    tolerance: float,
    paged_logits: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = load_model(family_dir, dtype=dtype, quant=quant)
    fused = paged_logits(model, SEQUENCES, STEPS, block_size=4)
    decoder = model.fused_decoder
    assert decoder is not None and decoder.steps == len(STEPS) - 1  # every decode step
    monkeypatch.setenv("CORTEX_CPU_FUSED", "0")
    eager = paged_logits(model, SEQUENCES, STEPS, block_size=4)
    assert decoder.steps == len(STEPS) - 1  # none ran fused
    for ours, theirs in zip(fused, eager, strict=True):
        assert ours.shape == theirs.shape
        scale = max(theirs.abs().max().item(), 1.0)
        assert (ours - theirs).abs().max().item() < tolerance * scale, holding
        # Greedy choices agree wherever the eager path's top two are apart.
        top2 = theirs.topk(2, dim=-1).values
        clear = (top2[:, 0] - top2[:, 1]) > 2 * tolerance * scale
        assert torch.equal(ours.argmax(-1)[clear], theirs.argmax(-1)[clear])


@pytest.mark.parametrize(("holding", "dtype", "quant", "tolerance"), HOLDINGS)
def test_fused_contiguous_steps_equal_the_eager_ones(
    family_dir: Path,
    holding: str,
    dtype: torch.dtype,
    quant: str | None,
    tolerance: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`generate`'s cache: 30 decode steps (past Mistral's 24-token window) on both paths."""
    model = load_model(family_dir, dtype=dtype, quant=quant)
    config = model.config
    prompt = torch.tensor(SEQUENCES[0][:12])
    caches = {
        path: ContiguousKVCache(
            config.num_layers, config.num_kv_heads, config.head_dim, 64, device="cpu", dtype=dtype
        )
        for path in ("fused", "eager")
    }
    with torch.inference_mode():
        hidden = {
            p: model.hidden_states(prompt, model.rope_table[:12], c) for p, c in caches.items()
        }
        token = int(model.compute_logits(hidden["eager"][-1:]).argmax())
        for position in range(12, 42):
            logits = {}
            for path, cache in caches.items():
                monkeypatch.setenv("CORTEX_CPU_FUSED", "1" if path == "fused" else "0")
                cache.start = position
                rope = model.rope_table[position : position + 1]
                out = model.hidden_states(torch.tensor([token]), rope, cache)
                logits[path] = model.compute_logits(out)
            scale = max(logits["eager"].abs().max().item(), 1.0)
            assert (logits["fused"] - logits["eager"]).abs().max().item() < tolerance * scale
            token = int(logits["eager"].argmax())  # both follow the eager path's tokens
    assert model.fused_decoder is not None and model.fused_decoder.steps == 30
    # Released, the fused step holds no cache; nor once a generation ends.
    decoder = model.fused_decoder
    decoder.release()
    ended = weakref.ref(caches.pop("fused"))
    assert ended() is None
    monkeypatch.setenv("CORTEX_CPU_FUSED", "1")
    model.generate(prompt.tolist(), 2, stop_token_ids=())
    assert decoder.steps == 31
    alive = [o for o in gc.get_objects() if isinstance(o, ContiguousKVCache)]
    assert all(o is caches["eager"] for o in alive)
    if dtype == torch.float32:
        monkeypatch.setenv("CORTEX_CPU_FUSED", "1")
        fused = model.generate(prompt.tolist(), 30, stop_token_ids=())
        monkeypatch.setenv("CORTEX_CPU_FUSED", "0")
        assert fused == model.generate(prompt.tolist(), 30, stop_token_ids=())


def test_threads_generating_with_one_model_take_turns(family_dir: Path) -> None:
    model = load_model(family_dir)  # float32: each thread's tokens are exactly its own run's
    prompts = [SEQUENCES[i][:10] for i in range(3)]
    alone = [model.generate(p, 24, stop_token_ids=()) for p in prompts]
    together: list[list[int]] = [[] for _ in prompts]

    def run(i: int) -> None:
        together[i] = model.generate(prompts[i], 24, stop_token_ids=())

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert together == alone


def test_the_switch_turns_the_fused_step_off(
    family_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = load_model(family_dir)
    model.generate(SEQUENCES[0][:4], 2, stop_token_ids=())  # one decode step builds it
    decoder = model.fused_decoder
    assert decoder is not None and decoder.applies(1)
    for off in ("0", "off", "false"):
        monkeypatch.setenv("CORTEX_CPU_FUSED", off)
        assert not decoder.applies(1)


def test_a_failed_build_names_the_compiler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORTEX_KERNEL_CACHE", str(tmp_path))
    with pytest.raises(RuntimeError, match="false failed"):
        build_library(compiler="false")
    assert not list(tmp_path.glob("*/cpu_decode.so"))
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler"):
        build_library(compiler="")
    # The real build lands where CORTEX_KERNEL_CACHE says, and a second call reuses it.
    built = build_library()
    assert built.is_file() and built.parent.parent == tmp_path
    assert build_library() == built
    assert cpu_decode.load_library() is None  # this process's library is loaded
