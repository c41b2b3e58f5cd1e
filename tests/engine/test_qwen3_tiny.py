"""Tiny random Qwen3, Qwen3-MoE and sliding-window Mistral checkpoints against transformers.

Each checkpoint is made by transformers itself (`save_pretrained`, so MoE experts are written
in the hub's per-expert layout), then loaded by our loader and compared: float32 logits,
greedy continuations, the paged engine step, and the parameter counts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from cortex.engine import load_model
from cortex.engine.kernels import moe_experts_reference
from cortex.engine.models import LlamaConfig, Qwen3, Qwen3Moe
from cortex.engine.models.moe import SparseMoE, route
from cortex.engine.quant import QuantizedWeight

transformers = pytest.importorskip("transformers")

VOCAB = 96
_SHAPE = {
    "vocab_size": VOCAB,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "max_position_embeddings": 512,
    "rope_theta": 1000000.0,
}

CONFIGS: dict[str, dict[str, Any]] = {
    "qwen3": {
        **_SHAPE,
        "model_type": "qwen3",
        "architectures": ["Qwen3ForCausalLM"],
        "num_hidden_layers": 2,
        "tie_word_embeddings": True,
    },
    "qwen3-untied": {
        **_SHAPE,
        "model_type": "qwen3",
        "architectures": ["Qwen3ForCausalLM"],
        "num_hidden_layers": 2,
        "head_dim": 24,  # heads * head_dim != hidden_size
        "tie_word_embeddings": False,
    },
    "qwen3_moe": {
        **_SHAPE,
        "model_type": "qwen3_moe",
        "architectures": ["Qwen3MoeForCausalLM"],
        "num_hidden_layers": 4,
        "num_experts": 8,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 32,
        "norm_topk_prob": True,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [2],  # a dense MLP among sparse ones
        "tie_word_embeddings": False,
    },
    "qwen3_moe-step2": {
        **_SHAPE,
        "model_type": "qwen3_moe",
        "architectures": ["Qwen3MoeForCausalLM"],
        "num_hidden_layers": 4,
        "num_experts": 6,
        "num_experts_per_tok": 3,
        "moe_intermediate_size": 24,
        "norm_topk_prob": False,
        "decoder_sparse_step": 2,  # layers 1 and 3 sparse
        "tie_word_embeddings": True,
    },
    "mistral-window": {
        **_SHAPE,
        "model_type": "mistral",
        "architectures": ["MistralForCausalLM"],
        "num_hidden_layers": 2,
        "num_key_value_heads": 1,
        "sliding_window": 24,  # far shorter than the test sequences
        "tie_word_embeddings": False,
    },
}
LENGTH = 100
IDS = torch.randint(3, VOCAB, (LENGTH,), generator=torch.Generator().manual_seed(11)).tolist()


def make_checkpoint(raw: dict[str, Any], model_dir: Path) -> Any:
    """Write the config `raw` with random weights through transformers' `save_pretrained`."""
    (model_dir / "config.json").write_text(json.dumps(raw))
    config = transformers.AutoConfig.from_pretrained(model_dir)
    torch.manual_seed(0)
    hf = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        for key, param in hf.named_parameters():
            if "norm" in key:
                param.normal_(1.0, 0.2)  # not all ones, so swapped q/k norms would show
            elif "mlp.gate" in key:
                param.normal_(0.0, 0.5)  # a decisive router, so ties never decide the test
            else:
                param.normal_(0.0, 0.1)
    hf.save_pretrained(model_dir)
    return hf


@pytest.fixture(scope="module", params=list(CONFIGS))
def checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(name, model folder, transformers' model) for each config."""
    name: str = request.param
    model_dir = tmp_path_factory.mktemp(name)
    return name, model_dir, make_checkpoint(CONFIGS[name], model_dir)


def test_loads_the_right_family(checkpoint: Any) -> None:
    name, model_dir, _ = checkpoint
    model = load_model(model_dir)
    expected = {"qwen3": Qwen3, "qwen3_moe": Qwen3Moe}.get(name.split("-")[0])
    if expected is not None:
        assert type(model) is expected


def test_logits_match_transformers(checkpoint: Any) -> None:
    _, model_dir, hf = checkpoint
    ours = load_model(model_dir)
    logits = ours.forward(IDS)
    with torch.inference_mode():
        expected = hf(torch.tensor([IDS])).logits[0].float()
    assert logits.shape == (LENGTH, VOCAB)
    assert (logits - expected).abs().max().item() < 1e-3


def test_greedy_generation_matches_transformers(checkpoint: Any) -> None:
    _, model_dir, hf = checkpoint
    ours = load_model(model_dir)
    prompt = IDS[:20]
    generated = ours.generate(prompt, 32, stop_token_ids=())
    with torch.inference_mode():
        out = hf.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=32,
            min_new_tokens=32,
            do_sample=False,
            pad_token_id=0,
        )
    assert generated == out[0, len(prompt) :].tolist()


def test_paged_steps_match_forward(checkpoint: Any, paged_logits: Any) -> None:
    _, model_dir, _ = checkpoint
    ours = load_model(model_dir)
    # Two sequences batched together: chunked prefill, decode steps, then a chunk after them.
    steps = [[(0, 33)], [(0, 30), (1, 20)], *[[(0, 1), (1, 1)]] * 5, [(0, 7), (1, 1)]]
    sequences = [IDS[:75], IDS[10:37]]
    logits = paged_logits(ours, sequences, steps, block_size=8)
    for sequence, got in zip(sequences, logits, strict=True):
        assert (got - ours.forward(sequence[: got.shape[0]])).abs().max().item() < 1e-4


def test_parameter_counts(checkpoint: Any) -> None:
    name, model_dir, hf = checkpoint
    config = LlamaConfig.from_dir(model_dir)
    assert config.parameters == sum(p.numel() for p in hf.parameters())
    if name.startswith("qwen3_moe"):
        raw = CONFIGS[name]
        hidden, width = raw["hidden_size"], raw["moe_intermediate_size"]
        sparse = sum(config.is_sparse(i) for i in range(config.num_layers))
        idle = raw["num_experts"] - raw["num_experts_per_tok"]
        assert config.active_parameters == config.parameters - sparse * idle * 3 * hidden * width
    else:
        assert config.active_parameters == config.parameters


def test_sliding_window_changes_the_answer(tmp_path: Path) -> None:
    # Guard against a window that does nothing: full attention gives other logits past it.
    model_dir = tmp_path / "windowed"
    model_dir.mkdir()
    make_checkpoint(CONFIGS["mistral-window"], model_dir)
    windowed = load_model(model_dir)
    raw = json.loads((model_dir / "config.json").read_text())
    full_dir = tmp_path / "full"
    full_dir.mkdir()
    (full_dir / "config.json").write_text(json.dumps({**raw, "sliding_window": None}))
    (full_dir / "model.safetensors").symlink_to(model_dir / "model.safetensors")
    full = load_model(full_dir)
    assert windowed.config.context_length == 512  # masked, no longer clipped to the window
    diff = (windowed.forward(IDS) - full.forward(IDS)).abs().amax(dim=-1)
    assert diff[:24].max().item() < 1e-5  # inside the window the two agree
    assert diff[24:].min().item() > 1e-3


def test_qwen_windows_follow_layer_types(tmp_path: Path) -> None:
    raw = {**CONFIGS["qwen3"], "num_hidden_layers": 4, "use_sliding_window": True}
    raw |= {"sliding_window": 16, "max_window_layers": 2}
    config = LlamaConfig.from_dict(raw)
    assert [config.window(i) for i in range(4)] == [None, None, 16, 16]
    raw["layer_types"] = ["sliding_attention", "full_attention"] * 2
    assert [LlamaConfig.from_dict(raw).window(i) for i in range(4)] == [16, None, 16, None]
    assert LlamaConfig.from_dict({**raw, "use_sliding_window": False}).window(0) is None


def test_moe_model_runs_the_triton_experts_kernel(
    checkpoint: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, model_dir, _ = checkpoint
    if not name.startswith("qwen3_moe"):
        pytest.skip("dense model: no experts")
    model = load_model(model_dir)
    expected = model.forward(IDS[:40])
    # The experts through the Triton kernel (interpreted on CPU: tests set TRITON_INTERPRET).
    monkeypatch.setenv("CORTEX_KERNELS", "triton")
    assert (model.forward(IDS[:40]) - expected).abs().max().item() < 1e-4


@pytest.mark.parametrize("quant", ["int8", "int4-g32"])
def test_quantized_experts_match_their_dequantized_weights(tmp_path: Path, quant: str) -> None:
    # Weight-only quantization holds every expert as a QuantizedWeight; routed tokens through
    # them equal the float experts of the dequantized weights (up to bfloat16 activations, in
    # which torch's packed CPU kernels compute).
    make_checkpoint(CONFIGS["qwen3_moe"], tmp_path)
    model = load_model(tmp_path, quant=quant)
    mlp = model.layers[0].mlp
    assert isinstance(mlp, SparseMoE) and mlp.gate_up_weight is None
    assert mlp.quantized_gate_up is not None and mlp.quantized_down is not None
    gate_up = torch.stack([w.dequantize() for w in mlp.quantized_gate_up])
    down = torch.stack([w.dequantize() for w in mlp.quantized_down])
    assert all(isinstance(w, QuantizedWeight) for w in mlp.quantized_down)
    assert isinstance(mlp.router_weight, torch.nn.Parameter)  # the router stays float
    # Each expert's rows landed in its own weights (gate, up and down in their places).
    exact = load_model(tmp_path).layers[0].mlp
    assert isinstance(exact, SparseMoE) and exact.gate_up_weight is not None
    for ours, theirs in ((gate_up, exact.gate_up_weight), (down, exact.down_weight)):
        assert (ours - theirs).abs().max().item() < 0.1 * theirs.abs().max().item()
    g = torch.Generator().manual_seed(4)
    x = torch.randn(23, 64, generator=g)
    weights, ids = route(torch.randn(23, 8, generator=g), 2, normalize=True)
    expected = moe_experts_reference(x, gate_up, down, ids, weights)
    got = mlp.run_experts(x, ids, weights)
    assert (got - expected).abs().max().item() < 0.02 * expected.abs().max().item()
    # The whole model runs on them.
    assert model.generate(IDS[:20], 4, stop_token_ids=())[0] in range(VOCAB)
