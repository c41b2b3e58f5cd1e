"""Weight-only int8/int4: layouts, round trips, CPU kernels, and models and engines using them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from cortex.engine import Engine, SamplingParams, load_model
from cortex.engine.kernels.quant_reference import dequantize_int4, dequantize_int8, unpack_int4
from cortex.engine.quant import (
    GROUP_SIZES,
    QuantError,
    QuantizedTensor,
    QuantizedWeight,
    QuantSpec,
    describe_quant,
    gather_quantized,
    pack_int4,
    parse_quant,
    quant_specs,
    quantize_int4,
    quantize_int8,
)
from cortex.engine.safetensors import save_file

GEN = torch.Generator().manual_seed(0)


def _weight(rows: int, cols: int) -> torch.Tensor:
    return torch.randn(rows, cols, generator=GEN) * 0.05


def test_int4_nibbles_pack_two_per_byte_low_first() -> None:
    q = torch.tensor([[1, 2, 15, 0], [7, 8, 9, 10]])
    packed = pack_int4(q)
    assert packed.tolist() == [[0x21, 0x0F], [0x87, 0xA9]]
    assert torch.equal(unpack_int4(packed), q.to(torch.uint8))


def test_int8_round_trip_is_within_half_a_step_per_channel() -> None:
    w = _weight(48, 96)
    w[3] *= 40  # one loud channel must not coarsen the others
    qweight, scales = quantize_int8(w)
    assert qweight.dtype == torch.int8 and scales.shape == (48,)
    error = (dequantize_int8(qweight, scales) - w).abs()
    assert (error <= scales[:, None] / 2 + 1e-7).all()
    assert error[0].max() < w[0].abs().max() / 200


@pytest.mark.parametrize("group_size", GROUP_SIZES)
def test_int4_min_max_round_trip_is_within_half_a_step_per_group(group_size: int) -> None:
    w = _weight(40, 256)
    qweight, scales, mins = quantize_int4(w, group_size, search=False)
    assert qweight.shape == (40, 128) and qweight.dtype == torch.uint8
    assert scales.shape == mins.shape == (40, 256 // group_size)
    error = (dequantize_int4(qweight, scales, mins, group_size) - w).abs()
    step = scales.float().repeat_interleave(group_size, dim=1)
    assert (error <= step / 2 + 1e-3 * step).all()


@pytest.mark.parametrize("search", [True, False])
@pytest.mark.parametrize("group_size", GROUP_SIZES)
def test_int4_values_on_the_grid_come_back_exactly(group_size: int, search: bool) -> None:
    # What a GGUF Q4_1 block holds (its codes span 0..15), or a float checkpoint made from one
    # (SmolLM2's default model): the search keeps min/max rounding's exact answer.
    plain = quantize_int4(_weight(40, 256), group_size, search=False)
    exact = dequantize_int4(*plain, group_size)
    again = quantize_int4(exact, group_size, search=search)
    assert torch.equal(dequantize_int4(*again, group_size), exact)


def _real_looking(rows: int, cols: int) -> torch.Tensor:
    """Heavy-tailed rows of unequal scale with a few loud columns, as trained weights have."""
    t = torch.distributions.StudentT(torch.tensor(4.0)).sample((rows, cols))
    row_scale = torch.rand(rows, 1, generator=GEN) * 0.1 + 0.01
    loud = torch.ones(cols)
    loud[torch.randperm(cols, generator=GEN)[: cols // 50]] = 6.0
    return t * row_scale * loud


@pytest.mark.parametrize("group_size", GROUP_SIZES)
@pytest.mark.parametrize("kind", ["gaussian", "real-looking"])
def test_int4_search_is_no_worse_than_min_max_rounding(group_size: int, kind: str) -> None:
    torch.manual_seed(3)
    w = _weight(96, 512) if kind == "gaussian" else _real_looking(96, 512)
    searched = dequantize_int4(*quantize_int4(w, group_size), group_size)
    plain = dequantize_int4(*quantize_int4(w, group_size, search=False), group_size)

    def group_error(approx: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return ((approx - w).square() * weights).reshape(96, -1, group_size).sum(dim=2)

    # By the measure the search minimises (errors weighed by |w|), group by group...
    assert (group_error(searched, w.abs()) <= group_error(plain, w.abs()) * (1 + 1e-4)).all()
    # ...and in plain squared error over the matrix (measured: 4-9% less).
    ones = torch.ones_like(w)
    assert group_error(searched, ones).sum() < 0.99 * group_error(plain, ones).sum()
    # The search is deterministic: the same bytes twice.
    again = quantize_int4(w, group_size)
    assert all(torch.equal(a, b) for a, b in zip(quantize_int4(w, group_size), again, strict=True))


@pytest.mark.parametrize("spec", [QuantSpec(8), QuantSpec(4, 32), QuantSpec(4, 64)], ids=str)
@pytest.mark.parametrize("rows", [128, 96])  # 96: torch's CPU int4 blocks of 64 rows padded
def test_quantized_weight_cpu_kernels_match_the_reference(spec: QuantSpec, rows: int) -> None:
    w = _weight(rows, 128)
    weight = QuantizedWeight(rows, 128, spec, device="cpu", dtype=torch.float32)
    weight.copy_(w)
    exact = weight.dequantize()
    x = torch.randn(5, 128, generator=GEN)
    weight.prepare()  # torch's packed layouts, bfloat16 scales and activations
    for tokens in (1, 5):
        out = weight(x[:tokens])
        assert out.dtype == torch.float32 and out.shape == (tokens, rows)
        expected = x[:tokens] @ exact.T
        assert (out - expected).abs().max() < 0.02 * expected.abs().max()
    ids = torch.tensor([0, rows - 1, 37, 37])
    rows_back = weight.embedding(ids)
    assert (rows_back - exact[ids]).abs().max() <= 0.01 * exact.abs().max()


def test_rows_fill_a_fused_matrix_like_one_quantization() -> None:
    q, k = _weight(64, 64), _weight(32, 64)
    fused = QuantizedWeight(96, 64, QuantSpec(4, 32), device="cpu", dtype=torch.float32)
    fused[:64].copy_(q)
    fused[64:].copy_(QuantizedTensor.quantize(k, QuantSpec(4, 32)))  # a stored piece, as is
    whole = QuantizedTensor.quantize(torch.cat((q, k)), QuantSpec(4, 32))
    assert torch.equal(fused.dequantize(), whole.dequantize())


def test_checkpoint_pieces_are_gathered_into_quantized_tensors() -> None:
    w = _weight(32, 64)
    stored = QuantizedTensor.quantize(w, QuantSpec(4, 32)).named_pieces("a.weight")
    stored += QuantizedTensor.quantize(w, QuantSpec(8)).named_pieces("b.weight")
    entries = dict(gather_quantized([*stored, ("norm.weight", torch.ones(4))]))
    a, b = entries["a.weight"], entries["b.weight"]
    assert isinstance(a, QuantizedTensor) and a.spec == QuantSpec(4, 32) and a.shape == (32, 64)
    assert isinstance(b, QuantizedTensor) and b.spec == QuantSpec(8)
    assert isinstance(entries["norm.weight"], torch.Tensor)


def test_quant_values_are_parsed_and_bad_ones_name_the_key() -> None:
    assert parse_quant(None) == ("none", None)
    assert parse_quant("bf16") == ("bf16", None)
    assert parse_quant("int8") == ("int8", QuantSpec(8))
    assert parse_quant("int4") == ("int4", QuantSpec(4))  # group sizes by matrix
    assert parse_quant("int4-g32") == ("int4", QuantSpec(4, 32))
    assert parse_quant("int4-g128") == ("int4", QuantSpec(4, 128))
    for bad in ("int3", "int4-g48", "fp8"):
        with pytest.raises(QuantError, match=r"^quant: .* is not one of none, bf16, int8, int4"):
            parse_quant(bad)


# -- models and engines ----------------------------------------------------------------------

CONFIG: dict[str, Any] = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "vocab_size": 49152,  # the real tokenizer's, so the engine can detokenize
    "hidden_size": 64,
    "intermediate_size": 192,
    "num_hidden_layers": 3,  # the middle one takes int4's bulk group size
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": True,
    "eos_token_id": 2,
}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, default_model_dir: Path) -> Path:
    """A random three-layer model with SmolLM2's vocabulary and tokenizer files."""
    model_dir = tmp_path_factory.mktemp("tiny-quant")
    (model_dir / "config.json").write_text(json.dumps(CONFIG))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        source = default_model_dir / name
        if source.exists():
            (model_dir / name).write_bytes(source.read_bytes())
    gen = torch.Generator().manual_seed(1)
    hidden, ffn = CONFIG["hidden_size"], CONFIG["intermediate_size"]
    tensors = {
        "model.embed_tokens.weight": torch.randn(CONFIG["vocab_size"], hidden, generator=gen),
        "model.norm.weight": torch.ones(hidden),
    }
    for i in range(CONFIG["num_hidden_layers"]):
        p = f"model.layers.{i}."
        for name, shape in (
            ("self_attn.q_proj", (64, hidden)),
            ("self_attn.k_proj", (32, hidden)),
            ("self_attn.v_proj", (32, hidden)),
            ("self_attn.o_proj", (hidden, 64)),
            ("mlp.gate_proj", (ffn, hidden)),
            ("mlp.up_proj", (ffn, hidden)),
            ("mlp.down_proj", (hidden, ffn)),
        ):
            tensors[f"{p}{name}.weight"] = torch.randn(shape, generator=gen) * 0.05
        tensors[f"{p}input_layernorm.weight"] = torch.ones(hidden)
        tensors[f"{p}post_attention_layernorm.weight"] = torch.ones(hidden)
    save_file(tensors, model_dir / "model.safetensors", metadata={"format": "pt"})
    return model_dir


@pytest.mark.parametrize("quant", ["int8", "int4", "int4-g32", "int4-g64"])
def test_quantized_model_is_smaller_and_close_to_float(tiny_dir: Path, quant: str) -> None:
    ref = load_model(tiny_dir)
    model = load_model(tiny_dir, quant=quant)
    assert isinstance(model.embed_tokens, QuantizedWeight)
    assert model.lm_head is model.embed_tokens  # tied: quantized once
    ids = list(range(10, 40))
    logits, expected = model(ids), ref(ids)
    tolerance = 0.02 if quant == "int8" else 0.15
    assert (logits - expected).abs().max() < tolerance * expected.abs().max()
    params = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    resident = sum(t.nbytes for t in params.values()) - model.rope_table.nbytes
    bf16 = 2 * sum(t.numel() for t in ref.parameters())
    assert resident <= (0.55 if quant == "int8" else 0.32) * bf16


def test_int4_on_a_width_that_cannot_pack_names_the_key(tiny_dir: Path) -> None:
    # The embedding's 64 columns are not a multiple of 128.
    with pytest.raises(QuantError, match=r"quant='int4-g128': embed_tokens has 64 input"):
        load_model(tiny_dir, quant="int4-g128")
    with pytest.raises(QuantError, match=r"^quant: 'int5'"):
        load_model(tiny_dir, quant="int5")


@pytest.mark.parametrize("quant", ["int8", "int4", "int4-g32"])
async def test_quantized_engine_greedy_text_is_the_same_batched_and_alone(
    tiny_dir: Path, quant: str
) -> None:
    engine = Engine.from_pretrained(tiny_dir, quant=quant, kv_cache_mb=8, dtype="float32")
    prompts = [[5, 6, 7, 8, 9], [100, 200, 300], list(range(400, 437)), [1000, 77]]
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)

    async def run(prompt: list[int]) -> list[int]:
        return [
            e.token_id
            for e in [e async for e in engine.generate(prompt, params)]
            if e.token_id is not None
        ]

    try:
        alone = [await run(p) for p in prompts]
        import asyncio

        together = await asyncio.gather(*(run(p) for p in prompts))
    finally:
        engine.close()
    assert list(together) == alone
    assert all(len(tokens) == 12 for tokens in alone)


def test_int4_without_a_group_keeps_a_stored_int4_layout() -> None:
    stored = QuantizedTensor.quantize(_weight(32, 128), QuantSpec(4, 64))
    entries: list[tuple[str, Any]] = [("a.weight", stored), ("b.weight", _weight(32, 128))]
    mode, spec = parse_quant("int4")
    kept = quant_specs(entries, mode, spec, keep_group=True)
    assert kept == {"a.weight": QuantSpec(4, 64), "b.weight": QuantSpec(4, 32)}
    assert quant_specs(entries, mode, spec)["a.weight"] == QuantSpec(4, 32)  # requantized
    assert quant_specs(entries, None, None) == {"a.weight": QuantSpec(4, 64)}  # as stored


def test_int4_mixes_group_sizes_by_matrix() -> None:
    # q/k/v, down_proj, the embedding and LM head, and the first and last layers take group 32;
    # o_proj and gate/up of the middle layers 64; a layer's experts 64 all alike; a width 64
    # does not divide, 32.
    names = ["model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"]
    for i in range(4):
        for part in ("self_attn.q_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.up_proj"):
            names.append(f"model.layers.{i}.{part}.weight")
        names.append(f"model.layers.{i}.mlp.down_proj.weight")
    names += [
        "model.layers.1.mlp.experts.0.down_proj.weight",
        "model.layers.2.mlp.experts.3.up_proj.weight",
    ]
    entries: list[tuple[str, Any]] = [
        (name, torch.empty(8) if "norm" in name else torch.empty(8, 128)) for name in names
    ]
    entries.append(("model.layers.1.mlp.gate_proj.weight", torch.empty(8, 96)))
    # One expert of layer 3 too narrow for 64: all of that layer's experts take 32.
    entries.append(("model.layers.3.mlp.experts.0.up_proj.weight", torch.empty(8, 128)))
    entries.append(("model.layers.3.mlp.experts.1.down_proj.weight", torch.empty(8, 96)))
    mode, spec = parse_quant("int4")
    groups = {name: s.group_size for name, s in quant_specs(entries, mode, spec).items()}
    assert "model.norm.weight" not in groups
    bulk = {name for name, group in groups.items() if group == 64}
    assert bulk == {
        "model.layers.1.self_attn.o_proj.weight",
        "model.layers.1.mlp.up_proj.weight",
        "model.layers.2.self_attn.o_proj.weight",
        "model.layers.2.mlp.up_proj.weight",
        "model.layers.1.mlp.experts.0.down_proj.weight",
        "model.layers.2.mlp.experts.3.up_proj.weight",
    }
    assert groups["model.layers.3.mlp.experts.0.up_proj.weight"] == 32
    assert set(groups.values()) == {32, 64}
    assert str(spec) == "int4" and spec.bytes_per_weight == 0.6
    assert QuantSpec(4, 64).bytes_per_weight == 0.5625 and QuantSpec(8).bytes_per_weight == 1.0


def test_int4_model_holds_its_middle_layer_at_the_bulk_group_size(tiny_dir: Path) -> None:
    model = load_model(tiny_dir, quant="int4")
    assert describe_quant(model) == "int4-g32+int4-g64"
    first, middle, last = model.layers
    for block in (first, last):
        assert block.mlp.gate_up_weight.group_size == 32
    assert middle.attn.o_weight.group_size == middle.mlp.gate_up_weight.group_size == 64
    assert middle.attn.qkv_weight.group_size == middle.mlp.down_weight.group_size == 32
    assert model.embed_tokens.group_size == 32
